package barrier_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sigil-pki/sigil/barrier"
)

func TestDevKeyWrapperCreatesAndReloads(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "seal.key")
	w1, err := barrier.DevKeyWrapper(path, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("key file mode %#o size %d, want 0600 and 32", fi.Mode().Perm(), fi.Size())
	}
	keyFile, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	secret := []byte("0123456789abcdef0123456789abcdef")
	blob, err := w1.Wrap(ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, secret) || bytes.Contains(blob, keyFile) {
		t.Fatal("wrapped blob contains the key or the key file")
	}

	w2, err := barrier.DevKeyWrapper(path, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	got, err := w2.Unwrap(ctx, blob)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unwrap with the reloaded key file = %x, %v", got, err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, keyFile) {
		t.Fatal("reloading rewrote the key file")
	}

	for i := range blob {
		bad := bytes.Clone(blob)
		bad[i] ^= 1
		if _, err := w2.Unwrap(ctx, bad); !errors.Is(err, barrier.ErrDecrypt) {
			t.Fatalf("Unwrap with byte %d changed = %v, want ErrDecrypt", i, err)
		}
	}
}

func TestDevKeyWrapperRefusesUnsafeFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, size int, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, size), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		path string
	}{
		{"world readable", write("a.key", 32, 0o644)},
		{"group readable", write("b.key", 32, 0o640)},
		{"read only owner", write("c.key", 32, 0o400)},
		{"too short", write("d.key", 31, 0o600)},
		{"too long", write("e.key", 33, 0o600)},
		{"directory", dir},
		{"missing parent directory", filepath.Join(dir, "nope", "f.key")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if w, err := barrier.DevKeyWrapper(tc.path, rand.Reader); err == nil || w != nil {
				t.Fatalf("DevKeyWrapper(%s) = %v, %v; want refusal", tc.path, w, err)
			}
		})
	}
	if fi, err := os.Stat(filepath.Join(dir, "a.key")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatal("a refused key file was modified")
	}
}
