package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/storage"
)

func runKV(t *testing.T, run func(*testing.T, string, func(*testing.T, storage.Store))) {
	t.Run("KV", func(t *testing.T) {
		run(t, "CreateReadVersions", testKVCreateRead)
		run(t, "CompareAndSwap", testKVCompareAndSwap)
		run(t, "DestroyAndForget", testKVDestroyForget)
		run(t, "DeleteAll", testKVDelete)
		run(t, "ListPrefixOrder", testKVList)
		run(t, "ConcurrentWritersOneWins", testKVConcurrent)
	})
	t.Run("Policies", func(t *testing.T) {
		run(t, "PutGetListDelete", testPolicies)
	})
}

func testPolicies(t *testing.T, s storage.Store) {
	ctx := context.Background()
	rev := func() int64 {
		t.Helper()
		n, err := s.PoliciesRevision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if rev() != 0 {
		t.Fatalf("revision before any policy = %d", rev())
	}
	if _, err := s.GetPolicy(ctx, "web"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("GetPolicy before any = %v", err)
	}
	for _, p := range []storage.Policy{
		{Name: "web", Document: "rules: []\n", UpdatedAt: t0},
		{Name: "db", Document: "rules: [1]\n", UpdatedAt: t0},
		{Name: "web", Document: "rules: [2]\n", UpdatedAt: t0.Add(time.Second)},
	} {
		if err := s.PutPolicy(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if rev() != 3 {
		t.Errorf("revision after three puts = %d", rev())
	}
	got, err := s.GetPolicy(ctx, "web")
	if err != nil || got.Document != "rules: [2]\n" || got.Revision != 2 || !got.UpdatedAt.Equal(t0.Add(time.Second)) {
		t.Errorf("web = %+v, %v", got, err)
	}
	all, err := s.ListPolicies(ctx)
	if err != nil || len(all) != 2 || all[0].Name != "db" || all[1].Name != "web" {
		t.Errorf("list = %+v, %v", all, err)
	}
	if err := s.DeletePolicy(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePolicy(ctx, "db"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("second delete = %v", err)
	}
	if rev() != 4 {
		t.Errorf("revision after delete = %d, want 4 (a failed delete changes nothing)", rev())
	}
	if err := s.PutPolicy(ctx, storage.Policy{Name: "x", Document: "d"}); err == nil {
		t.Error("PutPolicy without a time succeeded")
	}
}

func mustWriteKV(t *testing.T, s storage.Store, mount, path string, c storage.KVChange) {
	t.Helper()
	if err := s.WriteKV(context.Background(), mount, path, c); err != nil {
		t.Fatalf("WriteKV %s/%s: %v", mount, path, err)
	}
}

func testKVCreateRead(t *testing.T, s storage.Store) {
	ctx := context.Background()
	if _, err := s.GetKVHead(ctx, "secret", "a"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("GetKVHead before any write = %v, want ErrNotFound", err)
	}
	mustWriteKV(t, s, "secret", "a", storage.KVChange{Meta: []byte("m1"), Version: 1, Value: []byte("v1")})
	mustWriteKV(t, s, "secret", "a", storage.KVChange{ExpectRevision: 1, Meta: []byte("m2"), Version: 2, Value: []byte("v2")})
	h, err := s.GetKVHead(ctx, "secret", "a")
	if err != nil || string(h.Meta) != "m2" || h.Revision != 2 {
		t.Fatalf("head = %q rev %d, %v; want m2 rev 2", h.Meta, h.Revision, err)
	}
	for v, want := range map[int64]string{1: "v1", 2: "v2"} {
		got, err := s.GetKVVersion(ctx, "secret", "a", v)
		if err != nil || string(got) != want {
			t.Errorf("version %d = %q, %v; want %q", v, got, err, want)
		}
	}
	if _, err := s.GetKVVersion(ctx, "secret", "a", 3); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("missing version = %v, want ErrNotFound", err)
	}
	// Mounts are separate namespaces.
	if _, err := s.GetKVHead(ctx, "other", "a"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("same path in another mount = %v, want ErrNotFound", err)
	}
}

func testKVCompareAndSwap(t *testing.T, s storage.Store) {
	ctx := context.Background()
	mustWriteKV(t, s, "secret", "cas", storage.KVChange{Meta: []byte("m1"), Version: 1, Value: []byte("v1")})
	for _, c := range []struct {
		name string
		c    storage.KVChange
	}{
		{"create over existing", storage.KVChange{Meta: []byte("x"), Version: 9, Value: []byte("x")}},
		{"stale revision", storage.KVChange{ExpectRevision: 7, Meta: []byte("x"), Version: 9, Value: []byte("x")}},
		{"existing version", storage.KVChange{ExpectRevision: 1, Meta: []byte("x"), Version: 1, Value: []byte("x")}},
	} {
		if err := s.WriteKV(ctx, "secret", "cas", c.c); !errors.Is(err, storage.ErrConflict) {
			t.Errorf("%s: %v, want ErrConflict", c.name, err)
		}
	}
	h, _ := s.GetKVHead(ctx, "secret", "cas")
	v1, _ := s.GetKVVersion(ctx, "secret", "cas", 1)
	if string(h.Meta) != "m1" || h.Revision != 1 || string(v1) != "v1" {
		t.Errorf("after refused writes: head %q rev %d, v1 %q; want nothing changed", h.Meta, h.Revision, v1)
	}
	if _, err := s.GetKVVersion(ctx, "secret", "cas", 9); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("a refused write left version 9: %v", err)
	}
}

func testKVDestroyForget(t *testing.T, s storage.Store) {
	ctx := context.Background()
	mustWriteKV(t, s, "secret", "d", storage.KVChange{Meta: []byte("m"), Version: 1, Value: []byte("v1")})
	mustWriteKV(t, s, "secret", "d", storage.KVChange{ExpectRevision: 1, Meta: []byte("m"), Version: 2, Value: []byte("v2")})
	mustWriteKV(t, s, "secret", "d", storage.KVChange{ExpectRevision: 2, Meta: []byte("m"), Destroy: []int64{2}, Forget: []int64{1}})
	for _, v := range []int64{1, 2} {
		if _, err := s.GetKVVersion(ctx, "secret", "d", v); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("version %d after destroy/forget = %v, want ErrNotFound", v, err)
		}
	}
	// A forgotten version number can be written again; a destroyed one
	// still occupies its number.
	if err := s.WriteKV(ctx, "secret", "d", storage.KVChange{ExpectRevision: 3, Meta: []byte("m"), Version: 2, Value: []byte("again")}); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("rewriting destroyed version 2 = %v, want ErrConflict", err)
	}
}

func testKVDelete(t *testing.T, s storage.Store) {
	ctx := context.Background()
	mustWriteKV(t, s, "secret", "gone", storage.KVChange{Meta: []byte("m"), Version: 1, Value: []byte("v1")})
	if err := s.DeleteKV(ctx, "secret", "gone", 5); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("DeleteKV with a stale revision = %v, want ErrConflict", err)
	}
	if err := s.DeleteKV(ctx, "secret", "gone", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetKVHead(ctx, "secret", "gone"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("head after DeleteKV = %v", err)
	}
	if _, err := s.GetKVVersion(ctx, "secret", "gone", 1); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("version after DeleteKV = %v", err)
	}
	if err := s.DeleteKV(ctx, "secret", "gone", 1); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("second DeleteKV = %v, want ErrNotFound", err)
	}
	// The path is free again.
	mustWriteKV(t, s, "secret", "gone", storage.KVChange{Meta: []byte("m"), Version: 1, Value: []byte("new")})
}

func testKVList(t *testing.T, s storage.Store) {
	ctx := context.Background()
	paths := []string{"a", "a/b", "a/b/c", "a/bc", "a0", "b/x", "a/\u00e9t\u00e9", "a/Z"}
	for _, p := range paths {
		mustWriteKV(t, s, "secret", p, storage.KVChange{Meta: []byte("m"), Version: 1, Value: []byte("v")})
	}
	mustWriteKV(t, s, "other", "a/b", storage.KVChange{Meta: []byte("m"), Version: 1, Value: []byte("v")})
	got, err := s.ListKVPaths(ctx, "secret", "a/", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a/Z", "a/b", "a/b/c", "a/bc", "a/\u00e9t\u00e9"} // byte order
	if !slices.Equal(got, want) {
		t.Errorf("ListKVPaths(a/) = %q, want %q", got, want)
	}
	page, err := s.ListKVPaths(ctx, "secret", "a/", "a/b", 2)
	if err != nil || !slices.Equal(page, []string{"a/b/c", "a/bc"}) {
		t.Errorf("page after a/b = %q, %v", page, err)
	}
	all, err := s.ListKVPaths(ctx, "secret", "", "", 1000)
	if err != nil || len(all) != len(paths) {
		t.Errorf("all paths = %q, %v", all, err)
	}
}

func testKVConcurrent(t *testing.T, s storage.Store) {
	ctx := context.Background()
	mustWriteKV(t, s, "secret", "race", storage.KVChange{Meta: []byte("m1"), Version: 1, Value: []byte("v1")})
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			errs[i] = s.WriteKV(ctx, "secret", "race", storage.KVChange{
				ExpectRevision: 1, Meta: []byte(fmt.Sprintf("m-%d", i)), Version: 2, Value: []byte(fmt.Sprintf("v-%d", i)),
			})
		})
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won >= 0:
			t.Fatalf("writers %d and %d both won", won, i)
		case err == nil:
			won = i
		case !errors.Is(err, storage.ErrConflict):
			t.Errorf("writer %d: %v, want nil or ErrConflict", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no writer won")
	}
	h, _ := s.GetKVHead(ctx, "secret", "race")
	v, _ := s.GetKVVersion(ctx, "secret", "race", 2)
	if !bytes.Equal(h.Meta, []byte(fmt.Sprintf("m-%d", won))) || !bytes.Equal(v, []byte(fmt.Sprintf("v-%d", won))) {
		t.Errorf("stored %q / %q, want the winner %d's", h.Meta, v, won)
	}
}
