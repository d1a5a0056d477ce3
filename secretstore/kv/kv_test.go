package kv_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/barrier"
	"github.com/sigil-pki/sigil/secretstore/kv"
	"github.com/sigil-pki/sigil/storage"
)

type env struct {
	db   *storage.DB
	path string
	kv   *kv.Engine
	now  time.Time
}

// newEnv is the engine over a real SQLite file and an unsealed barrier.
func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "sigil.db")
	db, err := storage.Open(ctx, storage.Options{Backend: "sqlite", Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b := barrier.New(barrier.Config{Store: db})
	w, err := barrier.DevKeyWrapper(filepath.Join(dir, "dev.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.InitWrapped(ctx, "dev", w); err != nil {
		t.Fatal(err)
	}
	e := &env{db: db, path: path, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	e.kv = kv.New(kv.Config{Store: db, Sealer: b, Clock: func() time.Time { return e.now }})
	return e
}

func data(kv ...string) json.RawMessage {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	b, _ := json.Marshal(m)
	return b
}

func (e *env) put(t *testing.T, path string, d json.RawMessage) kv.VersionMeta {
	t.Helper()
	v, err := e.kv.Put(context.Background(), "secret", path, d, kv.PutOptions{})
	if err != nil {
		t.Fatalf("Put %s: %v", path, err)
	}
	return v
}

func cas(n int64) *int64 { return &n }

func TestVersionsReadBack(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.kv.Get(ctx, "secret", "db", 0); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Get before any write = %v, want ErrNotFound", err)
	}
	v1 := e.put(t, "db", json.RawMessage(`{"user":"app","password":"s3cr3t-one"}`))
	e.now = e.now.Add(time.Minute)
	v2 := e.put(t, "db", data("user", "app", "password", "s3cr3t-two"))
	if v1.Version != 1 || v2.Version != 2 || !v2.CreatedTime.Equal(e.now) {
		t.Fatalf("versions %+v %+v", v1, v2)
	}
	cur, err := e.kv.Get(ctx, "secret", "db", 0)
	if err != nil || cur.Version.Version != 2 || !bytes.Contains(cur.Data, []byte("s3cr3t-two")) {
		t.Fatalf("current = %+v %s, %v", cur.Version, cur.Data, err)
	}
	old, err := e.kv.Get(ctx, "secret", "db", 1)
	if err != nil || string(old.Data) != `{"user":"app","password":"s3cr3t-one"}` {
		t.Fatalf("version 1 = %s, %v; want the bytes written", old.Data, err)
	}
	if _, err := e.kv.Get(ctx, "secret", "db", 3); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("version 3 = %v, want ErrNotFound", err)
	}
	m, err := e.kv.Metadata(ctx, "secret", "db")
	if err != nil || m.CurrentVersion != 2 || m.OldestVersion != 1 || !m.UpdatedTime.Equal(e.now) || len(m.Versions) != 2 {
		t.Errorf("metadata %+v, %v", m, err)
	}
	for _, bad := range []json.RawMessage{json.RawMessage(`[1,2]`), json.RawMessage(`"x"`), json.RawMessage(`null`), json.RawMessage(`{`)} {
		if _, err := e.kv.Put(ctx, "secret", "db", bad, kv.PutOptions{}); !errors.Is(err, kv.ErrInvalid) {
			t.Errorf("Put %s = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestCheckAndSet(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tests := []struct {
		name string
		opts kv.PutOptions
		want error
	}{
		{"cas 0 creates", kv.PutOptions{CAS: cas(0)}, nil},
		{"cas 0 on existing", kv.PutOptions{CAS: cas(0)}, kv.ErrCASMismatch},
		{"stale cas", kv.PutOptions{CAS: cas(7)}, kv.ErrCASMismatch},
		{"current cas", kv.PutOptions{CAS: cas(1)}, nil},
		{"mount requires cas", kv.PutOptions{MountCASRequired: true}, kv.ErrCASRequired},
		{"mount requires cas, given", kv.PutOptions{MountCASRequired: true, CAS: cas(2)}, nil},
	}
	for _, tc := range tests {
		_, err := e.kv.Put(ctx, "secret", "c", data("k", tc.name), tc.opts)
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	yes := true
	if err := e.kv.PutMetadata(ctx, "secret", "c", kv.MetadataUpdate{CASRequired: &yes}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.kv.Put(ctx, "secret", "c", data("k", "v"), kv.PutOptions{}); !errors.Is(err, kv.ErrCASRequired) {
		t.Errorf("secret requires cas: %v", err)
	}
	if m, _ := e.kv.Metadata(ctx, "secret", "c"); m.CurrentVersion != 3 {
		t.Errorf("refused writes made versions: current %d, want 3", m.CurrentVersion)
	}
}

func TestDeleteUndeleteDestroy(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := range 3 {
		e.put(t, "app", data("n", fmt.Sprint(i+1)))
	}
	if err := e.kv.Delete(ctx, "secret", "app", nil); err != nil {
		t.Fatal(err)
	}
	s, err := e.kv.Get(ctx, "secret", "app", 0)
	if !errors.Is(err, kv.ErrDeleted) || s.Data != nil || s.Version.DeletionTime.IsZero() {
		t.Fatalf("latest after delete: %+v %v, want ErrDeleted with its metadata and no data", s.Version, err)
	}
	if _, err := e.kv.Get(ctx, "secret", "app", 2); err != nil {
		t.Fatalf("version 2 should still read: %v", err)
	}
	if err := e.kv.Undelete(ctx, "secret", "app", []int64{3}); err != nil {
		t.Fatal(err)
	}
	if s, err := e.kv.Get(ctx, "secret", "app", 3); err != nil || string(s.Data) != `{"n":"3"}` {
		t.Fatalf("after undelete: %s %v", s.Data, err)
	}
	if err := e.kv.Destroy(ctx, "secret", "app", []int64{1, 3, 99}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []int64{1, 3} {
		if _, err := e.kv.Get(ctx, "secret", "app", v); !errors.Is(err, kv.ErrDestroyed) {
			t.Errorf("version %d after destroy: %v", v, err)
		}
		if _, err := e.db.GetKVVersion(ctx, "secret", "app", v); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("version %d's ciphertext is still stored: %v", v, err)
		}
	}
	if err := e.kv.Undelete(ctx, "secret", "app", []int64{3}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.kv.Get(ctx, "secret", "app", 3); !errors.Is(err, kv.ErrDestroyed) {
		t.Errorf("undelete brought back a destroyed version: %v", err)
	}
	if err := e.kv.Delete(ctx, "secret", "nothing", nil); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("delete of a missing secret: %v", err)
	}
	if err := e.kv.DeleteAll(ctx, "secret", "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.kv.Metadata(ctx, "secret", "app"); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("metadata after DeleteAll: %v", err)
	}
}

func TestMaxVersionsAndDeleteAfter(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	three, ttl := 3, time.Hour
	if err := e.kv.PutMetadata(ctx, "secret", "rot", kv.MetadataUpdate{MaxVersions: &three, DeleteVersionAfter: &ttl,
		CustomMetadata: map[string]string{"owner": "team-a"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		e.put(t, "rot", data("n", fmt.Sprint(i+1)))
	}
	m, err := e.kv.Metadata(ctx, "secret", "rot")
	if err != nil || m.CurrentVersion != 5 || m.OldestVersion != 3 || !slices.Equal(m.VersionNumbers(), []int64{3, 4, 5}) || m.CustomMetadata["owner"] != "team-a" {
		t.Fatalf("metadata %+v, %v", m, err)
	}
	for _, v := range []int64{1, 2} {
		if _, err := e.kv.Get(ctx, "secret", "rot", v); !errors.Is(err, kv.ErrNotFound) {
			t.Errorf("trimmed version %d: %v", v, err)
		}
		if _, err := e.db.GetKVVersion(ctx, "secret", "rot", v); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("trimmed version %d still stored: %v", v, err)
		}
	}
	e.now = e.now.Add(ttl)
	if _, err := e.kv.Get(ctx, "secret", "rot", 0); !errors.Is(err, kv.ErrDeleted) {
		t.Errorf("past delete_version_after: %v, want ErrDeleted", err)
	}
	two := 2
	if err := e.kv.PutMetadata(ctx, "secret", "rot", kv.MetadataUpdate{MaxVersions: &two}); err != nil {
		t.Fatal(err)
	}
	if m, _ := e.kv.Metadata(ctx, "secret", "rot"); !slices.Equal(m.VersionNumbers(), []int64{4, 5}) {
		t.Errorf("lowering max_versions kept %v", m.VersionNumbers())
	}
}

func TestList(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, p := range []string{"team-a/db", "team-a/api/key", "team-a/api/cert", "team-b/db", "top"} {
		e.put(t, p, data("k", "v"))
	}
	for _, tc := range []struct {
		dir  string
		want []string
	}{
		{"", []string{"team-a/", "team-b/", "top"}},
		{"team-a", []string{"api/", "db"}},
		{"team-a/", []string{"api/", "db"}},
		{"team-a/api", []string{"cert", "key"}},
	} {
		got, err := e.kv.List(ctx, "secret", tc.dir)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("List(%q) = %q, %v; want %q", tc.dir, got, err, tc.want)
		}
	}
	if _, err := e.kv.List(ctx, "secret", "team-c"); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("empty directory: %v", err)
	}
}

// TestRowsBoundToTheirPlace: sealed rows moved, through storage, to
// another secret or version do not open there.
func TestRowsBoundToTheirPlace(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.put(t, "a", data("k", "for a"))
	e.put(t, "b", data("k", "for b"))
	e.put(t, "b", data("k", "for b, v2"))
	aValue, err := e.db.GetKVVersion(ctx, "secret", "a", 1)
	if err != nil {
		t.Fatal(err)
	}
	aHead, _ := e.db.GetKVHead(ctx, "secret", "a")
	bHead, _ := e.db.GetKVHead(ctx, "secret", "b")
	bValue2, _ := e.db.GetKVVersion(ctx, "secret", "b", 2)
	rev := bHead.Revision
	write := func(c storage.KVChange) {
		t.Helper()
		c.ExpectRevision = rev
		if err := e.db.WriteKV(ctx, "secret", "b", c); err != nil {
			t.Fatal(err)
		}
		rev++
	}
	// a's version 1 in b's version 1; b's own version 2 in its version 1.
	write(storage.KVChange{Meta: bHead.Meta, Forget: []int64{1}})
	write(storage.KVChange{Meta: bHead.Meta, Version: 1, Value: aValue})
	if s, err := e.kv.Get(ctx, "secret", "b", 1); err == nil {
		t.Errorf("a's version 1 opened as b's: %s", s.Data)
	}
	write(storage.KVChange{Meta: bHead.Meta, Forget: []int64{1}})
	write(storage.KVChange{Meta: bHead.Meta, Version: 1, Value: bValue2})
	if s, err := e.kv.Get(ctx, "secret", "b", 1); err == nil {
		t.Errorf("b's version 2 opened as its version 1: %s", s.Data)
	}
	// a's metadata as b's.
	write(storage.KVChange{Meta: aHead.Meta})
	if _, err := e.kv.Metadata(ctx, "secret", "b"); err == nil {
		t.Error("a's metadata opened as b's")
	}
}

// TestNoPlaintextOnDisk: after writes, neither the SQLite file nor its WAL
// holds a value, a key of the data or custom metadata.
func TestNoPlaintextOnDisk(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	markers := []string{"MARKER-VALUE-5e1f", "MARKER-KEY-77aa", "MARKER-CUSTOM-0c3d"}
	for range 3 {
		e.put(t, "scan/me", data(markers[1], markers[0]))
	}
	if err := e.kv.PutMetadata(ctx, "secret", "scan/me", kv.MetadataUpdate{CustomMetadata: map[string]string{"note": markers[2]}}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{e.path, e.path + "-wal"} {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range markers {
			if bytes.Contains(b, []byte(m)) {
				t.Errorf("%s holds %s in the clear", filepath.Base(f), m)
			}
		}
	}
}

func TestConcurrentWrites(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	hundred := 100
	if err := e.kv.PutMetadata(ctx, "secret", "busy", kv.MetadataUpdate{MaxVersions: &hundred}); err != nil {
		t.Fatal(err)
	}
	const writers = 16
	var wg sync.WaitGroup
	versions := make([]int64, writers)
	for i := range writers {
		wg.Go(func() {
			v, err := e.kv.Put(ctx, "secret", "busy", data("writer", fmt.Sprint(i)), kv.PutOptions{})
			if err != nil {
				t.Errorf("writer %d: %v", i, err)
			}
			versions[i] = v.Version
		})
	}
	wg.Wait()
	slices.Sort(versions)
	for i, v := range versions {
		if v != int64(i+1) {
			t.Fatalf("versions %v, want 1..%d each once", versions, writers)
		}
	}
	for i := range writers {
		s, err := e.kv.Get(ctx, "secret", "busy", int64(i+1))
		if err != nil || !bytes.Contains(s.Data, []byte(`"writer"`)) {
			t.Errorf("version %d: %s %v", i+1, s.Data, err)
		}
	}
}
