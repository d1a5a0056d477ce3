package database_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/barrier"
	"github.com/sigil-pki/sigil/secretstore/database"
	"github.com/sigil-pki/sigil/secretstore/database/plugin"
	"github.com/sigil-pki/sigil/storage"
)

// fakeDB is a database that remembers users and passwords, and fails when
// told to. Tests of the engine's crash and failure paths use it; the real
// PostgreSQL and MariaDB are exercised in the server's tests.
type fakeDB struct {
	mu        sync.Mutex
	users     map[string]string // name -> password
	adminPW   string
	failNext  map[string]error // operation -> error, once
	setCalls  []string
	revokeErr error // every RevokeUser fails while set
}

func newFakeDB(adminPW string) *fakeDB {
	return &fakeDB{users: map[string]string{}, adminPW: adminPW, failNext: map[string]error{}}
}

func (f *fakeDB) take(op string) error {
	err := f.failNext[op]
	delete(f.failNext, op)
	return err
}

func (f *fakeDB) CreateUser(_ context.Context, _ plugin.Statements, u, p string, _ time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.take("create"); err != nil {
		return err
	}
	f.users[u] = p
	return nil
}

func (f *fakeDB) RenewUser(context.Context, plugin.Statements, string, time.Time) error { return nil }

func (f *fakeDB) RevokeUser(_ context.Context, _ plugin.Statements, u string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.revokeErr != nil {
		return f.revokeErr
	}
	delete(f.users, u)
	return nil
}

func (f *fakeDB) SetPassword(_ context.Context, _ plugin.Statements, u, p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.take("set"); err != nil {
		return err
	}
	f.setCalls = append(f.setCalls, u)
	if u == "admin" {
		f.adminPW = p
	} else {
		f.users[u] = p
	}
	return nil
}

func (f *fakeDB) Close() error { return nil }

func (f *fakeDB) user(u string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.users[u]
	return p, ok
}

// flakyStore fails chosen store calls once.
type flakyStore struct {
	*storage.DB
	mu   sync.Mutex
	fail map[string]int // method -> fail the Nth call from now (1 = next)
}

func (s *flakyStore) should(method string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.fail[method]
	if !ok {
		return false
	}
	if n <= 1 {
		delete(s.fail, method)
		return true
	}
	s.fail[method] = n - 1
	return false
}

var errCrash = errors.New("simulated crash")

func (s *flakyStore) PutStaticState(ctx context.Context, st storage.StaticState, rev int64) error {
	if s.should("PutStaticState") {
		return errCrash
	}
	return s.DB.PutStaticState(ctx, st, rev)
}

func (s *flakyStore) PutDBConnection(ctx context.Context, name string, b []byte, at time.Time) error {
	if s.should("PutDBConnection") {
		return errCrash
	}
	return s.DB.PutDBConnection(ctx, name, b, at)
}

type recorder struct {
	mu     sync.Mutex
	events []database.Event
}

func (r *recorder) Record(_ context.Context, e database.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return nil
}

type env struct {
	eng   *database.Engine
	store *flakyStore
	db    *fakeDB
	rec   *recorder
	now   time.Time
	mu    sync.Mutex
}

func (e *env) clock() time.Time { e.mu.Lock(); defer e.mu.Unlock(); return e.now }
func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(d)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := storage.Open(ctx, storage.Options{Backend: "sqlite", Path: filepath.Join(dir, "sigil.db")})
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
	e := &env{store: &flakyStore{DB: db, fail: map[string]int{}}, db: newFakeDB("initial"), rec: &recorder{}, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	e.eng = database.New(database.Config{
		Store: e.store, Sealer: b, Recorder: e.rec, Clock: e.clock,
		Open: func(_ context.Context, c plugin.Config) (database.DB, error) {
			// The fake accepts the admin password it currently has.
			e.db.mu.Lock()
			defer e.db.mu.Unlock()
			if want := "fake://admin:" + e.db.adminPW + "@db"; c.DSN != want {
				return nil, errors.New("password authentication failed")
			}
			return e.db, nil
		},
	})
	if err := e.eng.WriteConnection(ctx, "db", database.Connection{Plugin: "postgres", URL: "fake://{{username}}:{{password}}@db",
		Username: "admin", Password: "initial", AllowedRoles: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestStaticRotationSurvivesCrashAfterDatabaseChange(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.db.users["app"] = "original"
	// The crash: the database took the new password, the store never
	// recorded it as current.
	e.store.fail["PutStaticState"] = 2
	err := e.eng.WriteStaticRole(ctx, "op", "app", database.StaticRole{Connection: "db", Username: "app", RotationPeriod: database.Duration(time.Hour)})
	if !errors.Is(err, errCrash) {
		t.Fatalf("WriteStaticRole = %v, want the simulated crash", err)
	}
	inDB, _ := e.db.user("app")
	if inDB == "original" {
		t.Fatal("setup: the database was not changed before the crash")
	}
	// The next reader finishes the rotation and gets what the database has.
	c, err := e.eng.StaticCreds(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if now, _ := e.db.user("app"); c.Password != now {
		t.Fatalf("store says %q, database has %q", c.Password, now)
	}
}

func TestStaticRotationSurvivesCrashBeforeDatabaseChange(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.db.users["app"] = "original"
	e.db.failNext["set"] = errCrash
	err := e.eng.WriteStaticRole(ctx, "op", "app", database.StaticRole{Connection: "db", Username: "app", RotationPeriod: database.Duration(time.Hour)})
	if err == nil {
		t.Fatal("the interrupted rotation reported success")
	}
	if p, _ := e.db.user("app"); p != "original" {
		t.Fatal("setup: the database changed")
	}
	n, err := e.eng.RotateDue(ctx)
	if err != nil || n != 1 {
		t.Fatalf("RotateDue = %d, %v", n, err)
	}
	c, err := e.eng.StaticCreds(ctx, "app")
	if p, _ := e.db.user("app"); err != nil || c.Password != p || p == "original" {
		t.Fatalf("after recovery: store %q (%v), database %q", c.Password, err, p)
	}
}

func TestRootRotationSurvivesCrash(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// Crash after the database took the new admin password, before the
	// store made it current.
	e.store.fail["PutDBConnection"] = 2
	if err := e.eng.RotateRoot(ctx, "op", "db"); err == nil {
		t.Fatal("interrupted rotate-root reported success")
	}
	if e.db.adminPW == "initial" {
		t.Fatal("setup: the admin password did not change")
	}
	// The engine reconnects with the pending password and keeps working.
	if err := e.eng.WriteRole(ctx, "ro", database.Role{Connection: "db", Creation: []string{`CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}'`}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.eng.Creds(ctx, "spiffe://example.org/app", "ro"); err != nil {
		t.Fatalf("creds after recovering the admin password: %v", err)
	}
	c, _ := e.eng.Connection(ctx, "db")
	if c.Pending != "" || c.Password != e.db.adminPW {
		t.Fatal("the stored admin password does not match the database's")
	}
}

func TestFailedCreateLeavesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.eng.WriteRole(ctx, "ro", database.Role{Connection: "db", Creation: []string{`CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}'`}}); err != nil {
		t.Fatal(err)
	}
	e.db.failNext["create"] = errors.New("permission denied to create role")
	if _, err := e.eng.Creds(ctx, "spiffe://example.org/app", "ro"); err == nil {
		t.Fatal("Creds succeeded")
	}
	if ls, _ := e.eng.Leases(ctx, ""); len(ls) != 0 {
		t.Errorf("a failed creation left leases: %+v", ls)
	}
}

func TestRevocationRetriedNeverForgotten(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.eng.WriteRole(ctx, "ro", database.Role{Connection: "db", DefaultTTL: database.Duration(time.Minute),
		Creation: []string{`CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}'`}}); err != nil {
		t.Fatal(err)
	}
	c, err := e.eng.Creds(ctx, "spiffe://example.org/app", "ro")
	if err != nil {
		t.Fatal(err)
	}
	e.db.revokeErr = errors.New("connection refused")
	e.advance(time.Minute)
	for range 3 {
		if n, _ := e.eng.ExpireDue(ctx, 10); n != 0 {
			t.Fatalf("revoked %d while the database refuses", n)
		}
		e.advance(10 * time.Second)
	}
	ls, _ := e.eng.Leases(ctx, "")
	if len(ls) != 1 || ls[0].Attempts < 2 || ls[0].LastError == "" {
		t.Fatalf("lease after failures: %+v", ls)
	}
	if _, ok := e.db.user(c.Username); !ok {
		t.Fatal("user gone although revocation failed")
	}
	e.db.revokeErr = nil
	e.advance(5 * time.Minute)
	if n, err := e.eng.ExpireDue(ctx, 10); n != 1 || err != nil {
		t.Fatalf("ExpireDue after the database came back = %d, %v", n, err)
	}
	if _, ok := e.db.user(c.Username); ok {
		t.Error("user still exists")
	}
	var kinds []string
	for _, ev := range e.rec.events {
		kinds = append(kinds, ev.Kind)
	}
	if !slices.Contains(kinds, database.KindLeaseCreate) || !slices.Contains(kinds, database.KindLeaseRevoke) {
		t.Errorf("events %v", kinds)
	}
}
