package barrier_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/barrier"
	"github.com/sigil-pki/sigil/shamir"
	"github.com/sigil-pki/sigil/storage"
)

// lockedBuffer collects log output from concurrent goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

var fixedTime = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newBarrier(t testing.TB, store barrier.Store, logs *lockedBuffer) *barrier.Barrier {
	t.Helper()
	var logger *slog.Logger
	if logs != nil {
		logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return barrier.New(barrier.Config{
		Store:  store,
		Rand:   rand.Reader,
		Clock:  func() time.Time { return fixedTime },
		Logger: logger,
	})
}

// initShamir returns an unsealed barrier over a fresh store and its shares.
func initShamir(t *testing.T, n, k int) (*barrier.Barrier, *memStore, [][]byte) {
	t.Helper()
	store := newMemStore()
	b := newBarrier(t, store, nil)
	shares, err := b.InitShamir(t.Context(), n, k)
	if err != nil {
		t.Fatalf("InitShamir(%d, %d): %v", n, k, err)
	}
	if len(shares) != n {
		t.Fatalf("InitShamir returned %d shares, want %d", len(shares), n)
	}
	return b, store, shares
}

// unseal submits shares to b and fails unless the last one unseals it.
func unseal(t *testing.T, b *barrier.Barrier, shares ...[]byte) {
	t.Helper()
	for i, s := range shares {
		st, err := b.SubmitShare(t.Context(), s)
		if err != nil {
			t.Fatalf("SubmitShare #%d: %v", i, err)
		}
		if last := i == len(shares)-1; st.Sealed == last {
			t.Fatalf("after share #%d of %d: Sealed = %v", i, len(shares), st.Sealed)
		}
	}
}

func subsets(n, k int, f func([]int)) {
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		if len(cur) == k {
			f(cur)
			return
		}
		for i := start; i < n; i++ {
			rec(i+1, append(cur, i))
		}
	}
	rec(0, nil)
}

func TestInitShamirEveryThresholdSubsetUnseals(t *testing.T) {
	b, store, shares := initShamir(t, 5, 3)
	if b.Sealed() {
		t.Fatal("barrier is sealed after InitShamir")
	}
	st, err := b.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := barrier.Status{Initialized: true, Sealed: false, Type: "shamir", Shares: 5, Threshold: 3, KeyTerm: 1}
	if st != want {
		t.Fatalf("Status after init = %+v, want %+v", st, want)
	}
	if err := b.Put(t.Context(), "ca/intermediate-key", []byte("private key bytes")); err != nil {
		t.Fatal(err)
	}

	subsets(5, 3, func(idx []int) {
		nb := newBarrier(t, store, nil)
		st, err := nb.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if want := (barrier.Status{Initialized: true, Sealed: true, Type: "shamir", Shares: 5, Threshold: 3}); st != want {
			t.Fatalf("Status of a fresh barrier = %+v, want %+v", st, want)
		}
		for i, j := range idx {
			st, err := nb.SubmitShare(t.Context(), shares[j])
			if err != nil {
				t.Fatalf("subset %v, share %d: %v", idx, j, err)
			}
			if i < 2 && (st.Progress != i+1 || !st.Sealed) {
				t.Fatalf("subset %v after %d shares: %+v", idx, i+1, st)
			}
			if i == 2 && (st.Progress != 0 || st.Sealed || st.KeyTerm != 1) {
				t.Fatalf("subset %v after threshold: %+v", idx, st)
			}
		}
		got, err := nb.Get(t.Context(), "ca/intermediate-key")
		if err != nil || string(got) != "private key bytes" {
			t.Fatalf("subset %v: Get = %q, %v", idx, got, err)
		}
		// A further share on an unsealed barrier changes nothing.
		if st, err := nb.SubmitShare(t.Context(), shares[idx[0]]); err != nil || st.Sealed {
			t.Fatalf("SubmitShare after unseal = %+v, %v", st, err)
		}
	})
}

func TestThresholdOneShareIsMasterKey(t *testing.T) {
	b, store, shares := initShamir(t, 1, 1)
	master := barrier.MasterKeyRef(b)
	if want := append(bytes.Clone(master), 1); !bytes.Equal(shares[0], want) {
		t.Fatal("the single share is not the master key followed by x = 1")
	}
	nb := newBarrier(t, store, nil)
	unseal(t, nb, shares[0])
	if !bytes.Equal(barrier.MasterKeyRef(nb), master) {
		t.Fatal("unsealed with a different master key")
	}
}

func TestInitShamirRejectsBadParameters(t *testing.T) {
	tests := []struct {
		name              string
		shares, threshold int
	}{
		{"threshold 1 of 3", 3, 1},
		{"threshold above shares", 3, 4},
		{"no shares", 0, 0},
		{"too many shares", 256, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := newMemStore()
			b := newBarrier(t, store, nil)
			if _, err := b.InitShamir(t.Context(), tc.shares, tc.threshold); !errors.Is(err, shamir.ErrInvalidParameters) {
				t.Fatalf("InitShamir = %v, want ErrInvalidParameters", err)
			}
			if st, err := b.Status(t.Context()); err != nil || st.Initialized {
				t.Fatalf("Status after a refused init = %+v, %v", st, err)
			}
		})
	}
}

func TestSubmitShareInvalidKeepsProgress(t *testing.T) {
	_, store, shares := initShamir(t, 5, 3)
	_, _, foreign := initShamir(t, 5, 3)
	nb := newBarrier(t, store, nil)
	if _, err := nb.SubmitShare(t.Context(), shares[4]); err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 33)
	rand.Read(random)
	flipped := bytes.Clone(shares[0])
	flipped[3] ^= 0x80
	bad := []struct {
		name  string
		share []byte
	}{
		{"another barrier's share", foreign[0]},
		{"random bytes", random},
		{"one bit changed", flipped},
		{"truncated", shares[0][:32]},
		{"empty", nil},
	}
	for _, tc := range bad {
		st, err := nb.SubmitShare(t.Context(), tc.share)
		if !errors.Is(err, barrier.ErrInvalidShare) {
			t.Errorf("%s: SubmitShare = %v, want ErrInvalidShare", tc.name, err)
		}
		if st.Progress != 1 || !st.Sealed {
			t.Errorf("%s: status after refusal = %+v, want progress 1, sealed", tc.name, st)
		}
	}
	unseal(t, nb, shares[0], shares[2])
}

func TestSubmitShareDuplicateKeepsProgress(t *testing.T) {
	_, store, shares := initShamir(t, 3, 3)
	nb := newBarrier(t, store, nil)
	unsealPart := func(s []byte) barrier.Status {
		st, err := nb.SubmitShare(t.Context(), s)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	unsealPart(shares[1])
	unsealPart(shares[0])
	st, err := nb.SubmitShare(t.Context(), shares[1])
	if !errors.Is(err, barrier.ErrDuplicateShare) {
		t.Fatalf("resubmitting a share = %v, want ErrDuplicateShare", err)
	}
	if st.Progress != 2 || !st.Sealed {
		t.Fatalf("status after duplicate = %+v, want progress 2, sealed", st)
	}
	if st := unsealPart(shares[2]); st.Sealed {
		t.Fatalf("not unsealed by the third distinct share: %+v", st)
	}
}

func TestUnopenableKeyringResetsProgress(t *testing.T) {
	_, store, shares := initShamir(t, 3, 2)
	store.corruptKeyring()
	nb := newBarrier(t, store, nil)
	if _, err := nb.SubmitShare(t.Context(), shares[0]); err != nil {
		t.Fatal(err)
	}
	st, err := nb.SubmitShare(t.Context(), shares[1])
	if !errors.Is(err, barrier.ErrInvalidShare) {
		t.Fatalf("SubmitShare over a corrupt keyring = %v, want ErrInvalidShare", err)
	}
	if !st.Sealed || st.Progress != 0 {
		t.Fatalf("status = %+v, want sealed with progress reset", st)
	}
	if len(barrier.PendingShareRefs(nb)) != 0 || barrier.MasterKeyRef(nb) != nil {
		t.Fatal("barrier kept shares or a master key after failing to unseal")
	}
}

func TestSealedBarrierRefusesEverything(t *testing.T) {
	ctx := t.Context()
	store := newMemStore()
	b := newBarrier(t, store, nil)

	st, err := b.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (barrier.Status{Sealed: true}); st != want {
		t.Fatalf("Status before init = %+v, want %+v", st, want)
	}
	if _, err := b.SubmitShare(ctx, make([]byte, 33)); !errors.Is(err, barrier.ErrNotInitialized) {
		t.Fatalf("SubmitShare before init = %v, want ErrNotInitialized", err)
	}
	if err := b.UnsealWrapped(ctx, nil); !errors.Is(err, barrier.ErrNotInitialized) {
		t.Fatalf("UnsealWrapped before init = %v, want ErrNotInitialized", err)
	}
	if _, err := b.Encrypt("a", []byte("x")); !errors.Is(err, barrier.ErrSealed) {
		t.Fatalf("Encrypt before init = %v, want ErrSealed", err)
	}

	if _, err := b.InitShamir(ctx, 3, 2); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	ct, err := b.Encrypt("a", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	b.Seal()
	if !b.Sealed() {
		t.Fatal("Sealed() = false after Seal")
	}
	checks := []struct {
		name string
		call func() error
	}{
		{"Encrypt", func() error { _, err := b.Encrypt("a", []byte("x")); return err }},
		{"Decrypt", func() error { _, err := b.Decrypt("a", ct); return err }},
		{"Get", func() error { _, err := b.Get(ctx, "k"); return err }},
		{"Put", func() error { return b.Put(ctx, "k", []byte("w")) }},
		{"Rotate", func() error { _, err := b.Rotate(ctx); return err }},
	}
	for _, c := range checks {
		if err := c.call(); !errors.Is(err, barrier.ErrSealed) {
			t.Errorf("%s while sealed = %v, want ErrSealed", c.name, err)
		}
	}
	if err := b.Reload(ctx); err != nil {
		t.Errorf("Reload while sealed = %v, want nil (no-op)", err)
	}
	st, err = b.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (barrier.Status{Initialized: true, Sealed: true, Type: "shamir", Shares: 3, Threshold: 2}); st != want {
		t.Fatalf("Status after Seal = %+v, want %+v", st, want)
	}
}

func TestSealZeroisesKeys(t *testing.T) {
	b, _, shares := initShamir(t, 3, 2)
	if _, err := b.Rotate(t.Context()); err != nil {
		t.Fatal(err)
	}
	master := barrier.MasterKeyRef(b)
	dataKeys := barrier.DataKeyRefs(b)
	if len(master) != 32 || len(dataKeys) != 2 {
		t.Fatalf("master key %d bytes, %d data keys; want 32 and 2", len(master), len(dataKeys))
	}
	all := append([][]byte{master}, dataKeys...)
	for i, k := range all {
		if bytes.Equal(k, make([]byte, len(k))) {
			t.Fatalf("key %d is all zeros before Seal", i)
		}
	}
	b.Seal()
	for i, k := range all {
		if !bytes.Equal(k, make([]byte, 32)) {
			t.Errorf("key %d not zeroised by Seal: %d bytes, non-zero", i, len(k))
		}
	}
	if barrier.MasterKeyRef(b) != nil || barrier.DataKeyRefs(b) != nil {
		t.Error("Seal kept references to the keys")
	}

	// Pending shares are zeroised and dropped too.
	if _, err := b.SubmitShare(t.Context(), shares[0]); err != nil {
		t.Fatal(err)
	}
	pending := barrier.PendingShareRefs(b)
	if len(pending) != 1 || !bytes.Equal(pending[0], shares[0]) {
		t.Fatalf("pending shares = %d, want the one submitted", len(pending))
	}
	b.Seal()
	if !bytes.Equal(pending[0], make([]byte, len(pending[0]))) {
		t.Error("pending share not zeroised by Seal")
	}
	if st, err := b.Status(t.Context()); err != nil || st.Progress != 0 {
		t.Errorf("Status after Seal = %+v, %v; want progress 0", st, err)
	}
	// And the barrier can be unsealed again from scratch.
	unseal(t, b, shares[2], shares[1])
}

func termOf(t *testing.T, ct []byte) uint32 {
	t.Helper()
	if len(ct) < 5 || ct[0] != 1 {
		t.Fatalf("ciphertext header %x, want version 1", ct[:min(len(ct), 5)])
	}
	return binary.BigEndian.Uint32(ct[1:5])
}

func TestRotate(t *testing.T) {
	ctx := t.Context()
	b, store, shares := initShamir(t, 3, 2)
	old, err := b.Encrypt("kv/a/1", []byte("before"))
	if err != nil {
		t.Fatal(err)
	}
	if got := termOf(t, old); got != 1 {
		t.Fatalf("first ciphertext has term %d, want 1", got)
	}
	if err := b.Put(ctx, "old", []byte("old value")); err != nil {
		t.Fatal(err)
	}

	term, err := b.Rotate(ctx)
	if err != nil || term != 2 {
		t.Fatalf("Rotate = %d, %v; want 2", term, err)
	}
	if st, _ := b.Status(ctx); st.KeyTerm != 2 {
		t.Fatalf("Status.KeyTerm = %d after rotation, want 2", st.KeyTerm)
	}
	fresh, err := b.Encrypt("kv/a/2", []byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	if got := termOf(t, fresh); got != 2 {
		t.Fatalf("new ciphertext has term %d, want 2", got)
	}
	if pt, err := b.Decrypt("kv/a/1", old); err != nil || string(pt) != "before" {
		t.Fatalf("old ciphertext after rotation: %q, %v", pt, err)
	}
	if err := b.Put(ctx, "new", []byte("new value")); err != nil {
		t.Fatal(err)
	}

	// A new barrier over the same store sees the rotated keyring.
	nb := newBarrier(t, store, nil)
	unseal(t, nb, shares[0], shares[1])
	if st, _ := nb.Status(ctx); st.KeyTerm != 2 {
		t.Fatalf("reopened barrier has KeyTerm %d, want 2", st.KeyTerm)
	}
	for name, want := range map[string]string{"old": "old value", "new": "new value"} {
		if got, err := nb.Get(ctx, name); err != nil || string(got) != want {
			t.Errorf("reopened Get(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	if pt, err := nb.Decrypt("kv/a/2", fresh); err != nil || string(pt) != "after" {
		t.Errorf("reopened Decrypt(term 2) = %q, %v", pt, err)
	}
	ct, err := nb.Encrypt("x", nil)
	if err != nil || termOf(t, ct) != 2 {
		t.Errorf("reopened barrier encrypts with term %d, want 2 (err %v)", termOf(t, ct), err)
	}
}

// unsealedPair returns two unsealed barriers over one store, as two HA
// nodes would be.
func unsealedPair(t *testing.T) (*barrier.Barrier, *barrier.Barrier) {
	t.Helper()
	b1, store, shares := initShamir(t, 3, 2)
	b2 := newBarrier(t, store, nil)
	unseal(t, b2, shares[0], shares[1])
	return b1, b2
}

func TestRotateRetriesAfterAnotherNodeRotated(t *testing.T) {
	ctx := t.Context()
	b1, b2 := unsealedPair(t)
	if term, err := b2.Rotate(ctx); err != nil || term != 2 {
		t.Fatalf("node 2 Rotate = %d, %v; want 2", term, err)
	}
	if err := b2.Put(ctx, "from-2", []byte("two")); err != nil {
		t.Fatal(err)
	}
	// Node 1 still holds generation 1: its write conflicts, it reloads
	// and makes term 3 on top of node 2's term 2.
	if term, err := b1.Rotate(ctx); err != nil || term != 3 {
		t.Fatalf("node 1 Rotate = %d, %v; want 3", term, err)
	}
	if got, err := b1.Get(ctx, "from-2"); err != nil || string(got) != "two" {
		t.Fatalf("node 1 Get of a term-2 value = %q, %v", got, err)
	}
	if err := b2.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := b2.Status(ctx); st.KeyTerm != 3 {
		t.Fatalf("node 2 KeyTerm after Reload = %d, want 3", st.KeyTerm)
	}
	if err := b2.Reload(ctx); err != nil {
		t.Fatalf("second Reload with nothing new: %v", err)
	}
}

func TestGetReloadsForNewerTerm(t *testing.T) {
	ctx := t.Context()
	b1, b2 := unsealedPair(t)
	if _, err := b2.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b2.Put(ctx, "k", []byte("written under term 2")); err != nil {
		t.Fatal(err)
	}
	got, err := b1.Get(ctx, "k")
	if err != nil || string(got) != "written under term 2" {
		t.Fatalf("Get of a value under a term this node has not loaded = %q, %v", got, err)
	}
	if st, _ := b1.Status(ctx); st.KeyTerm != 2 {
		t.Fatalf("KeyTerm after Get reloaded = %d, want 2", st.KeyTerm)
	}
}

func TestDecryptRejectsTampering(t *testing.T) {
	b, _, _ := initShamir(t, 2, 2)
	const aad = "sealed/ca/intermediate-key"
	ct, err := b.Encrypt(aad, []byte("the plaintext"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := b.Decrypt(aad, ct); err != nil || string(pt) != "the plaintext" {
		t.Fatalf("Decrypt = %q, %v", pt, err)
	}
	for i := range ct {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(ct)
			bad[i] ^= mask
			if pt, err := b.Decrypt(aad, bad); !errors.Is(err, barrier.ErrDecrypt) || pt != nil {
				t.Fatalf("byte %d ^ %#x: Decrypt = %q, %v; want ErrDecrypt", i, mask, pt, err)
			}
		}
	}
	for n := range len(ct) {
		if _, err := b.Decrypt(aad, ct[:n]); !errors.Is(err, barrier.ErrDecrypt) {
			t.Fatalf("truncated to %d bytes: %v, want ErrDecrypt", n, err)
		}
	}
	if _, err := b.Decrypt(aad, append(bytes.Clone(ct), 0)); !errors.Is(err, barrier.ErrDecrypt) {
		t.Fatalf("extended by one byte: %v, want ErrDecrypt", err)
	}
	for _, wrong := range []string{"", "sealed/ca/intermediate-key/2", "sealed/ca/intermediate-ke", "kv/ca/intermediate-key"} {
		if _, err := b.Decrypt(wrong, ct); !errors.Is(err, barrier.ErrDecrypt) {
			t.Errorf("Decrypt with aad %q = %v, want ErrDecrypt", wrong, err)
		}
	}
}

func TestSwappedRowsDoNotDecrypt(t *testing.T) {
	ctx := t.Context()
	b, store, _ := initShamir(t, 2, 2)
	if err := b.Put(ctx, "alice/password", []byte("alice's")); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "bob/password", []byte("bob's")); err != nil {
		t.Fatal(err)
	}
	store.swap("alice/password", "bob/password")
	for _, name := range []string{"alice/password", "bob/password"} {
		if got, err := b.Get(ctx, name); !errors.Is(err, barrier.ErrDecrypt) {
			t.Errorf("Get(%q) after swap = %q, %v; want ErrDecrypt", name, got, err)
		}
	}
	if _, err := b.Get(ctx, "carol/password"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Get of a missing name = %v, want storage.ErrNotFound", err)
	}
}

func TestInitTwice(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	w, err := barrier.DevKeyWrapper(dir+"/dev.key", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, store, _ := initShamir(t, 3, 2)
	master := bytes.Clone(barrier.MasterKeyRef(b))
	before := store.dump()

	sealedOther := newBarrier(t, store, nil)
	attempts := []struct {
		name string
		call func() error
	}{
		{"InitShamir on the same barrier", func() error { _, err := b.InitShamir(ctx, 3, 2); return err }},
		{"InitWrapped on the same barrier", func() error { return b.InitWrapped(ctx, "dev", w) }},
		{"InitShamir on a sealed barrier over the store", func() error { _, err := sealedOther.InitShamir(ctx, 5, 3); return err }},
		{"InitWrapped on a sealed barrier over the store", func() error { return sealedOther.InitWrapped(ctx, "dev", w) }},
	}
	for _, a := range attempts {
		if err := a.call(); !errors.Is(err, barrier.ErrAlreadyInitialized) {
			t.Errorf("%s = %v, want ErrAlreadyInitialized", a.name, err)
		}
	}
	if !bytes.Equal(store.dump(), before) {
		t.Error("a refused init changed the store")
	}
	if !bytes.Equal(barrier.MasterKeyRef(b), master) {
		t.Error("a refused init changed the master key in memory")
	}
	if !sealedOther.Sealed() {
		t.Error("a refused init unsealed the barrier")
	}
}

func TestNothingReadableInStoreOrLogs(t *testing.T) {
	ctx := t.Context()
	store := newMemStore()
	logs := &lockedBuffer{}
	b := newBarrier(t, store, logs)
	shares, err := b.InitShamir(ctx, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	plaintext := []byte("s3cr3t-database-password-that-must-not-leak")
	if err := b.Put(ctx, "db/password", plaintext); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "db/password2", plaintext); err != nil {
		t.Fatal(err)
	}
	secrets := [][]byte{plaintext, bytes.Clone(barrier.MasterKeyRef(b))}
	for _, k := range barrier.DataKeyRefs(b) {
		secrets = append(secrets, bytes.Clone(k))
	}
	secrets = append(secrets, shares...)
	b.Seal()
	nb := newBarrier(t, store, logs)
	unseal(t, nb, shares[2], shares[0])
	if _, err := nb.SubmitShare(ctx, make([]byte, 33)); err != nil {
		t.Fatal(err) // unsealed: ignored
	}
	nb.Seal()
	if _, err := nb.SubmitShare(ctx, shares[1][:20]); !errors.Is(err, barrier.ErrInvalidShare) {
		t.Fatal(err)
	}

	haystacks := map[string][]byte{"store": store.dump(), "logs": logs.Bytes()}
	if len(haystacks["logs"]) == 0 {
		t.Fatal("no log output to scan")
	}
	for where, hay := range haystacks {
		for i, s := range secrets {
			forms := [][]byte{s, []byte(hex.EncodeToString(s)), []byte(base64.StdEncoding.EncodeToString(s)), []byte(base64.RawURLEncoding.EncodeToString(s))}
			for _, f := range forms {
				if bytes.Contains(hay, f) {
					t.Errorf("secret %d found in %s", i, where)
				}
			}
		}
	}
}

func TestWrappedSeal(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	w, err := barrier.DevKeyWrapper(dir+"/dev.key", nil)
	if err != nil {
		t.Fatal(err)
	}
	store := newMemStore()
	b := newBarrier(t, store, nil)
	if err := b.InitWrapped(ctx, "hsm", w); err == nil {
		t.Fatal("InitWrapped accepted an unknown seal type")
	}
	if err := b.InitWrapped(ctx, "dev", w); err != nil {
		t.Fatal(err)
	}
	if b.Sealed() {
		t.Fatal("sealed after InitWrapped")
	}
	if err := b.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(store.dump(), barrier.MasterKeyRef(b)) {
		t.Fatal("master key stored in the clear")
	}

	nb := newBarrier(t, store, nil)
	st, err := nb.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (barrier.Status{Initialized: true, Sealed: true, Type: "dev"}); st != want {
		t.Fatalf("Status = %+v, want %+v", st, want)
	}
	if _, err := nb.SubmitShare(ctx, make([]byte, 33)); !errors.Is(err, barrier.ErrInvalidShare) {
		t.Fatalf("SubmitShare on a dev seal = %v, want ErrInvalidShare", err)
	}
	other, err := barrier.DevKeyWrapper(dir+"/other.key", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := nb.UnsealWrapped(ctx, other); !errors.Is(err, barrier.ErrDecrypt) || !nb.Sealed() {
		t.Fatalf("UnsealWrapped with another key file = %v (sealed %v), want ErrDecrypt and sealed", err, nb.Sealed())
	}
	if err := nb.UnsealWrapped(ctx, w); err != nil {
		t.Fatal(err)
	}
	if got, err := nb.Get(ctx, "k"); err != nil || string(got) != "v" {
		t.Fatalf("Get after UnsealWrapped = %q, %v", got, err)
	}
	if err := nb.UnsealWrapped(ctx, other); err != nil {
		t.Fatalf("UnsealWrapped on an unsealed barrier = %v, want nil", err)
	}

	// A shamir barrier does not take a key wrapper.
	_, sstore, _ := initShamir(t, 2, 2)
	if err := newBarrier(t, sstore, nil).UnsealWrapped(ctx, w); err == nil {
		t.Fatal("UnsealWrapped unsealed a shamir barrier")
	}
}

func TestConcurrentUse(t *testing.T) {
	ctx := t.Context()
	b1, b2 := unsealedPair(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				aad := string(rune('a'+g)) + "/" + string(rune('0'+i%10))
				ct, err := b1.Encrypt(aad, []byte(aad))
				if err != nil {
					errs <- err
					return
				}
				pt, err := b1.Decrypt(aad, ct)
				if err != nil || string(pt) != aad {
					errs <- errors.Join(errors.New("round trip failed"), err)
					return
				}
			}
		})
	}
	for _, b := range []*barrier.Barrier{b1, b2} {
		wg.Go(func() {
			for range 3 {
				if _, err := b.Rotate(ctx); err != nil {
					errs <- err
					return
				}
				if err := b.Reload(ctx); err != nil {
					errs <- err
					return
				}
				if _, err := b.Status(ctx); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Six rotations in all, whichever node made them.
	for _, b := range []*barrier.Barrier{b1, b2} {
		if err := b.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		if st, _ := b.Status(ctx); st.KeyTerm != 7 {
			t.Errorf("KeyTerm after 6 rotations = %d, want 7", st.KeyTerm)
		}
	}
}

func TestNewPanicsWithoutStore(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New with a nil Store did not panic")
		}
	}()
	barrier.New(barrier.Config{})
}

func FuzzDecrypt(f *testing.F) {
	store := newMemStore()
	b := newBarrier(f, store, nil)
	if _, err := b.InitShamir(context.Background(), 1, 1); err != nil {
		f.Fatal(err)
	}
	const aad = "sealed/fuzz"
	valid := map[string]string{}
	for _, pt := range []string{"", "x", "a longer plaintext of several blocks, to cover more of GCM"} {
		ct, err := b.Encrypt(aad, []byte(pt))
		if err != nil {
			f.Fatal(err)
		}
		valid[string(ct)] = pt
		f.Add(ct)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 1})
	f.Add(make([]byte, 40))
	f.Fuzz(func(t *testing.T, ct []byte) {
		pt, err := b.Decrypt(aad, ct)
		want, ok := valid[string(ct)]
		if ok {
			if err != nil || string(pt) != want {
				t.Fatalf("valid ciphertext: Decrypt = %q, %v; want %q", pt, err, want)
			}
			return
		}
		if !errors.Is(err, barrier.ErrDecrypt) || pt != nil {
			t.Fatalf("Decrypt of a ciphertext Encrypt never made = %q, %v; want ErrDecrypt", pt, err)
		}
	})
}

func BenchmarkEncrypt1KiB(b *testing.B) {
	br, _, _ := initShamirB(b)
	pt := make([]byte, 1024)
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		if _, err := br.Encrypt("sealed/bench/1", pt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecrypt1KiB(b *testing.B) {
	br, _, _ := initShamirB(b)
	ct, err := br.Encrypt("sealed/bench/1", make([]byte, 1024))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(1024)
	for b.Loop() {
		if _, err := br.Decrypt("sealed/bench/1", ct); err != nil {
			b.Fatal(err)
		}
	}
}

func initShamirB(b *testing.B) (*barrier.Barrier, *memStore, [][]byte) {
	store := newMemStore()
	br := newBarrier(b, store, nil)
	shares, err := br.InitShamir(b.Context(), 3, 2)
	if err != nil {
		b.Fatal(err)
	}
	return br, store, shares
}
