package storagetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/storage"
)

func runDatabase(t *testing.T, run func(*testing.T, string, func(*testing.T, storage.Store))) {
	t.Run("Database", func(t *testing.T) {
		run(t, "Connections", testDBConnections)
		run(t, "Roles", testDBRoles)
		run(t, "StaticStateCompareAndSwap", testStaticState)
		run(t, "Leases", testLeases)
		run(t, "DueLeasesInOrder", testDueLeases)
	})
}

func testDBConnections(t *testing.T, s storage.Store) {
	ctx := context.Background()
	if _, err := s.GetDBConnection(ctx, "pg"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("missing connection: %v", err)
	}
	for _, c := range []struct{ name, cfg string }{{"pg", "v1"}, {"my", "m"}, {"pg", "v2"}} {
		if err := s.PutDBConnection(ctx, c.name, []byte(c.cfg), t0); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := s.GetDBConnection(ctx, "pg"); err != nil || string(b) != "v2" {
		t.Errorf("pg = %q, %v", b, err)
	}
	if names, err := s.ListDBConnections(ctx); err != nil || !slices.Equal(names, []string{"my", "pg"}) {
		t.Errorf("names = %v, %v", names, err)
	}
	if err := s.DeleteDBConnection(ctx, "pg"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDBConnection(ctx, "pg"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
}

func testDBRoles(t *testing.T, s storage.Store) {
	ctx := context.Background()
	for _, r := range []storage.DBRole{
		{Name: "ro", Kind: "dynamic", Config: `{"a":1}`, UpdatedAt: t0},
		{Name: "app", Kind: "static", Config: `{"b":2}`, UpdatedAt: t0},
		{Name: "rw", Kind: "dynamic", Config: `{"c":3}`, UpdatedAt: t0},
	} {
		if err := s.PutDBRole(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	dyn, err := s.ListDBRoles(ctx, "dynamic")
	if err != nil || len(dyn) != 2 || dyn[0].Name != "ro" || dyn[1].Name != "rw" {
		t.Errorf("dynamic roles = %+v, %v", dyn, err)
	}
	got, err := s.GetDBRole(ctx, "app")
	if err != nil || got.Kind != "static" || got.Config != `{"b":2}` || !got.UpdatedAt.Equal(t0) {
		t.Errorf("app = %+v, %v", got, err)
	}
	if err := s.PutStaticState(ctx, storage.StaticState{Role: "app", Password: []byte("p")}, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDBRole(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetStaticState(ctx, "app"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("static state outlived its role: %v", err)
	}
	if err := s.DeleteDBRole(ctx, "app"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
}

func testStaticState(t *testing.T, s storage.Store) {
	ctx := context.Background()
	st := storage.StaticState{Role: "app", Password: []byte("p1"), LastRotated: t0, NextRotation: t0.Add(time.Hour)}
	if err := s.PutStaticState(ctx, st, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.PutStaticState(ctx, st, 0); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("second create: %v", err)
	}
	st.Pending = []byte("p2")
	if err := s.PutStaticState(ctx, st, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.PutStaticState(ctx, st, 1); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("stale revision: %v", err)
	}
	got, err := s.GetStaticState(ctx, "app")
	if err != nil || string(got.Password) != "p1" || string(got.Pending) != "p2" || got.Revision != 2 ||
		!got.LastRotated.Equal(t0) || !got.NextRotation.Equal(t0.Add(time.Hour)) {
		t.Errorf("state = %+v, %v", got, err)
	}
	got.Password, got.Pending = got.Pending, nil
	if err := s.PutStaticState(ctx, got, 2); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetStaticState(ctx, "app"); string(got.Password) != "p2" || got.Pending != nil {
		t.Errorf("after finishing the rotation: %+v", got)
	}
}

func lease(id string, exp time.Time) storage.Lease {
	return storage.Lease{ID: id, Owner: "spiffe://example.org/app", IssuedAt: t0, ExpiresAt: exp, MaxExpiresAt: exp.Add(time.Hour), Data: []byte("sealed:" + id)}
}

func testLeases(t *testing.T, s storage.Store) {
	ctx := context.Background()
	for i := range 5 {
		if err := s.CreateLease(ctx, lease(fmt.Sprintf("database/creds/ro/%d", i), t0.Add(time.Duration(i)*time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateLease(ctx, lease("database/creds/rw/0", t0)); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateLease(ctx, lease("database/creds/rw/0", t0)); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("duplicate lease: %v", err)
	}
	got, err := s.GetLease(ctx, "database/creds/ro/2")
	if err != nil || got.Owner != "spiffe://example.org/app" || string(got.Data) != "sealed:database/creds/ro/2" ||
		!got.ExpiresAt.Equal(t0.Add(2*time.Minute)) || !got.NextAttempt.Equal(got.ExpiresAt) || got.Attempts != 0 {
		t.Errorf("lease = %+v, %v", got, err)
	}
	ro, err := s.ListLeases(ctx, "database/creds/ro/", "", 0)
	if err != nil || len(ro) != 5 {
		t.Errorf("ro leases = %d, %v", len(ro), err)
	}
	if err := s.ExtendLease(ctx, "database/creds/ro/2", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordLeaseFailure(ctx, "database/creds/ro/3", t0.Add(2*time.Hour), "connection refused"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetLease(ctx, "database/creds/ro/3"); got.Attempts != 1 || got.LastError != "connection refused" || !got.NextAttempt.Equal(t0.Add(2*time.Hour)) {
		t.Errorf("after a failure: %+v", got)
	}
	if err := s.DeleteLease(ctx, "database/creds/ro/0"); err != nil {
		t.Fatal(err)
	}
	for _, fn := range []func() error{
		func() error { return s.DeleteLease(ctx, "database/creds/ro/0") },
		func() error { return s.ExtendLease(ctx, "nope", t0) },
		func() error { return s.RecordLeaseFailure(ctx, "nope", t0, "x") },
		func() error { _, err := s.GetLease(ctx, "nope"); return err },
	} {
		if err := fn(); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("unknown lease: %v", err)
		}
	}
	if n, err := s.CountLeases(ctx); err != nil || n != 5 {
		t.Errorf("count = %d, %v", n, err)
	}
}

func testDueLeases(t *testing.T, s storage.Store) {
	ctx := context.Background()
	for i, off := range []time.Duration{3, 1, 2, 10} {
		if err := s.CreateLease(ctx, lease(fmt.Sprintf("l/%d", i), t0.Add(off*time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	due, err := s.DueLeases(ctx, t0.Add(3*time.Minute), 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, l := range due {
		ids = append(ids, l.ID)
	}
	if !slices.Equal(ids, []string{"l/1", "l/2", "l/0"}) {
		t.Errorf("due = %v, want l/1 l/2 l/0", ids)
	}
	if due, _ := s.DueLeases(ctx, t0.Add(3*time.Minute), 2); len(due) != 2 {
		t.Errorf("limit 2 gave %d", len(due))
	}
}
