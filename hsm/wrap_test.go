package hsm_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/sigil-pki/sigil/hsm"
	"github.com/sigil-pki/sigil/hsm/hsmtest"
)

// newWrapper opens a fresh token with an AES key labelled "seal".
func newWrapper(t testing.TB) *hsm.Wrapper {
	t.Helper()
	tok := openToken(t, hsmtest.NewToken(t))
	if err := tok.GenerateAESKey(t.Context(), "seal"); err != nil {
		t.Fatalf("GenerateAESKey: %v", err)
	}
	w, err := tok.Wrapper(t.Context(), "seal")
	if err != nil {
		t.Fatalf("Wrapper: %v", err)
	}
	return w
}

func TestWrapRoundTrip(t *testing.T) {
	w := newWrapper(t)
	for _, size := range []int{1, 16, 32, 64, 1000} {
		key := make([]byte, size)
		rand.Read(key)
		blob, err := w.Wrap(t.Context(), key)
		if err != nil {
			t.Fatalf("Wrap(%d bytes): %v", size, err)
		}
		if want := 1 + 12 + size + 16; len(blob) != want || blob[0] != 1 {
			t.Fatalf("blob of %d bytes with version %d, want %d bytes with version 1", len(blob), blob[0], want)
		}
		if bytes.Contains(blob, key) && size >= 16 {
			t.Fatal("blob contains the plaintext key")
		}
		got, err := w.Unwrap(t.Context(), blob)
		if err != nil {
			t.Fatalf("Unwrap(%d bytes): %v", size, err)
		}
		if !bytes.Equal(got, key) {
			t.Fatalf("Unwrap returned another key")
		}
	}
	if _, err := w.Wrap(t.Context(), nil); err == nil {
		t.Error("Wrap of an empty key succeeded")
	}
}

func TestWrapFreshIV(t *testing.T) {
	w := newWrapper(t)
	key := bytes.Repeat([]byte{7}, 32)
	a, err := w.Wrap(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := w.Wrap(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a[1:13], b[1:13]) {
		t.Error("two wraps used the same IV")
	}
	if bytes.Equal(a, b) {
		t.Error("two wraps of the same key are identical")
	}
}

// checkUnwrapErr asserts that err is ErrUnwrap and does not reveal key.
func checkUnwrapErr(t *testing.T, err error, key []byte) {
	t.Helper()
	if !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("got %v, want ErrUnwrap", err)
	}
	msg := err.Error()
	if strings.Contains(msg, string(key)) || strings.Contains(msg, hex.EncodeToString(key)) {
		t.Fatalf("error %q reveals the key", msg)
	}
}

func TestUnwrapTampered(t *testing.T) {
	w := newWrapper(t)
	key := []byte("0123456789abcdef0123456789abcdef")
	blob, err := w.Wrap(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	for i := range blob {
		for _, mask := range []byte{0x01, 0x80} {
			bad := bytes.Clone(blob)
			bad[i] ^= mask
			_, err := w.Unwrap(t.Context(), bad)
			checkUnwrapErr(t, err, key)
		}
	}
	for _, n := range []int{0, 1, 13, 28, 29, len(blob) - 1} {
		_, err := w.Unwrap(t.Context(), blob[:n])
		checkUnwrapErr(t, err, key)
	}
	_, err = w.Unwrap(t.Context(), append(bytes.Clone(blob), 0))
	checkUnwrapErr(t, err, key)

	// Failures leave the pool's sessions usable.
	if got, err := w.Unwrap(t.Context(), blob); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("Unwrap of the intact blob after failures: %v", err)
	}
}

func TestUnwrapForeignBlob(t *testing.T) {
	mine := newWrapper(t)
	theirs := newWrapper(t)
	key := bytes.Repeat([]byte{0x42}, 32)
	blob, err := theirs.Wrap(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	_, err = mine.Unwrap(t.Context(), blob)
	checkUnwrapErr(t, err, key)
}

// FuzzUnwrap checks, against a real token, that Unwrap returns the wrapped
// key for the blob Wrap produced and ErrUnwrap for every other input.
func FuzzUnwrap(f *testing.F) {
	w := newWrapper(f)
	key := []byte("fuzzing key material 0123456789")
	blob, err := w.Wrap(f.Context(), key)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(blob)
	f.Add(blob[:29])
	f.Add([]byte{})
	f.Add(append([]byte{2}, blob[1:]...))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := w.Unwrap(t.Context(), in)
		if bytes.Equal(in, blob) {
			if err != nil || !bytes.Equal(got, key) {
				t.Fatalf("Unwrap of the genuine blob: %v", err)
			}
			return
		}
		if got != nil {
			t.Fatalf("Unwrap of a forged blob returned %d bytes", len(got))
		}
		checkUnwrapErr(t, err, key)
	})
}
