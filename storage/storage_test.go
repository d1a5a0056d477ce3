package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sigil-pki/sigil/storage"
	"github.com/sigil-pki/sigil/storage/storagetest"
)

// backends gives, per backend, options for a fresh database that lives as
// long as the test.
var backends = []struct {
	name    string
	options func(t testing.TB) storage.Options
}{
	{"sqlite", func(t testing.TB) storage.Options {
		return storage.Options{Backend: "sqlite", Path: filepath.Join(t.TempDir(), "sigil.db"), Logger: testLogger(t)}
	}},
	{"postgres", func(t testing.TB) storage.Options {
		return storage.Options{Backend: "postgres", DSN: storagetest.PostgresDSN(t), MaxConns: 8, Logger: testLogger(t)}
	}},
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

func mustOpen(t testing.TB, o storage.Options) *storage.DB {
	t.Helper()
	db, err := storage.Open(t.Context(), o)
	if err != nil {
		t.Fatalf("Open(%s): %v", o.Backend, err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

func TestContract(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			storagetest.Run(t, func(t *testing.T) storage.Store {
				return mustOpen(t, b.options(t))
			})
		})
	}
}

func appliedVersions(t *testing.T, db *storage.DB) []int64 {
	t.Helper()
	got, err := storage.AppliedSchemaVersions(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func allVersions() []int64 {
	var want []int64
	for v := int64(1); v <= storage.LatestSchemaVersion(); v++ {
		want = append(want, v)
	}
	return want
}

// TestReopen: a second Open of the same database migrates nothing again
// and finds the data the first wrote.
func TestReopen(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			o := b.options(t)
			first, err := storage.Open(t.Context(), o)
			if err != nil {
				t.Fatalf("first Open: %v", err)
			}
			if err := first.PutSealed(t.Context(), "kept", []byte("ciphertext")); err != nil {
				t.Fatalf("PutSealed: %v", err)
			}
			if err := first.InsertCertificates(t.Context(), []storage.Certificate{{Serial: "01", IssuerID: "i", DER: []byte{1}}}); err != nil {
				t.Fatalf("InsertCertificates: %v", err)
			}
			if err := first.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := first.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}

			second := mustOpen(t, o)
			if got, want := appliedVersions(t, second), allVersions(); !slices.Equal(got, want) {
				t.Errorf("schema versions after reopening = %v, want %v", got, want)
			}
			if got, err := second.GetSealed(t.Context(), "kept"); err != nil || string(got) != "ciphertext" {
				t.Errorf("GetSealed after reopening = %q, %v", got, err)
			}
			if _, err := second.GetCertificate(t.Context(), "01"); err != nil {
				t.Errorf("GetCertificate after reopening: %v", err)
			}
		})
	}
}

// TestConcurrentOpen: servers starting together on one fresh database
// apply each migration once and all come up.
func TestConcurrentOpen(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			o := b.options(t)
			const servers = 4
			dbs := make([]*storage.DB, servers)
			errs := make([]error, servers)
			var wg sync.WaitGroup
			for i := range servers {
				wg.Go(func() { dbs[i], errs[i] = storage.Open(t.Context(), o) })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("Open %d: %v", i, err)
					continue
				}
				if err := dbs[i].Close(); err != nil {
					t.Errorf("Close %d: %v", i, err)
				}
			}
			db := mustOpen(t, o)
			if got, want := appliedVersions(t, db), allVersions(); !slices.Equal(got, want) {
				t.Errorf("schema versions = %v, want %v", got, want)
			}
		})
	}
}

func TestSchemaTooNew(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			o := b.options(t)
			db, err := storage.Open(t.Context(), o)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			future := storage.LatestSchemaVersion() + 1
			err = storage.ExecForTest(t.Context(), db, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, future, int64(0))
			if err != nil {
				t.Fatalf("recording a future version: %v", err)
			}
			if err := db.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			db, err = storage.Open(t.Context(), o)
			if !errors.Is(err, storage.ErrSchemaTooNew) {
				if db != nil {
					_ = db.Close()
				}
				t.Fatalf("Open of a database at version %d: got %v, want ErrSchemaTooNew", future, err)
			}
			if db != nil {
				t.Error("Open returned a DB along with its error")
			}
		})
	}
}

// TestTwoHandles: two DBs on one database (two servers sharing PostgreSQL,
// or two handles on one SQLite file in a process) see each other's writes,
// and TryLock excludes across them.
func TestTwoHandles(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			o := b.options(t)
			a, bb := mustOpen(t, o), mustOpen(t, o)
			ctx := t.Context()

			if err := a.PutSealed(ctx, "shared", []byte("from a")); err != nil {
				t.Fatalf("a.PutSealed: %v", err)
			}
			if got, err := bb.GetSealed(ctx, "shared"); err != nil || string(got) != "from a" {
				t.Errorf("b.GetSealed = %q, %v; want a's write", got, err)
			}
			if err := bb.InsertCertificates(ctx, []storage.Certificate{{Serial: "0b", IssuerID: "i", DER: []byte{1}}}); err != nil {
				t.Fatalf("b.InsertCertificates: %v", err)
			}
			if _, err := a.RevokeCertificate(ctx, "0b", time.Unix(1, 0), 1); err != nil {
				t.Errorf("a.RevokeCertificate of b's certificate: %v", err)
			}
			if n, err := a.NextCRLNumber(ctx, "i"); err != nil || n != 1 {
				t.Errorf("a.NextCRLNumber = %d, %v; want 1", n, err)
			}
			if n, err := bb.NextCRLNumber(ctx, "i"); err != nil || n != 2 {
				t.Errorf("b.NextCRLNumber = %d, %v; want 2", n, err)
			}

			held, err := a.TryLock(ctx, "leader")
			if err != nil {
				t.Fatalf("a.TryLock: %v", err)
			}
			if _, err := bb.TryLock(ctx, "leader"); !errors.Is(err, storage.ErrLocked) {
				t.Fatalf("b.TryLock of a's lock: got %v, want ErrLocked", err)
			}
			if err := held.Release(); err != nil {
				t.Fatalf("a's Release: %v", err)
			}
			bLock, err := bb.TryLock(ctx, "leader")
			if err != nil {
				t.Fatalf("b.TryLock after a released: %v", err)
			}
			if _, err := a.TryLock(ctx, "leader"); !errors.Is(err, storage.ErrLocked) {
				t.Errorf("a.TryLock of b's lock: got %v, want ErrLocked", err)
			}

			// Closing a handle releases the locks it still holds.
			if err := bb.Close(); err != nil {
				t.Fatalf("b.Close: %v", err)
			}
			if err := bLock.Release(); err != nil {
				t.Errorf("Release after Close: %v", err)
			}
			again, err := a.TryLock(ctx, "leader")
			if err != nil {
				t.Fatalf("a.TryLock after b closed: %v", err)
			}
			if err := again.Release(); err != nil {
				t.Errorf("Release: %v", err)
			}
		})
	}
}

func TestSQLiteFileIsPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigil.db")
	db := mustOpen(t, storage.Options{Path: path})
	if db.Backend() != "sqlite" {
		t.Errorf("default Backend() = %q, want sqlite", db.Backend())
	}
	if err := db.PutSealed(t.Context(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(name)
		if errors.Is(err, fs.ErrNotExist) && name != path {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(name), perm)
		}
	}
}

// TestPostgresLockFreedWhenSessionDies: a server that dies holding a lock
// (its session ends) gives it up to the next.
func TestPostgresLockFreedWhenSessionDies(t *testing.T) {
	dsn := storagetest.PostgresDSN(t)
	o := storage.Options{Backend: "postgres", DSN: dsn, Logger: testLogger(t)}
	a, b := mustOpen(t, o), mustOpen(t, o)
	ctx := t.Context()
	held, err := a.TryLock(ctx, "leader")
	if err != nil {
		t.Fatalf("a.TryLock: %v", err)
	}
	if _, err := b.TryLock(ctx, "leader"); !errors.Is(err, storage.ErrLocked) {
		t.Fatalf("b.TryLock: got %v, want ErrLocked", err)
	}

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var killed int
	err = conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND objsubid = 2 AND granted
		AND classid = hashtext(current_schema())::oid AND objid = hashtext('leader')::oid`).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminating the holder's session: killed %d, %v", killed, err)
	}

	var taken storage.Lock
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		taken, err = b.TryLock(ctx, "leader")
		if err != nil && !errors.Is(err, storage.ErrLocked) {
			t.Fatalf("b.TryLock: %v", err)
		}
		if taken != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lock was not freed after its session died")
		}
		<-tick.C
	}
	// The dead holder's Release reports the lost session and frees nothing.
	if err := held.Release(); err == nil {
		t.Error("Release of a lock whose session died returned nil")
	}
	if _, err := a.TryLock(ctx, "leader"); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("a.TryLock while b holds the lock: got %v, want ErrLocked", err)
	}
	if err := taken.Release(); err != nil {
		t.Errorf("Release: %v", err)
	}
}

// TestSQLitePathNeedsNoEscaping: characters that mean something in a URI
// are just part of the file name.
func TestSQLitePathNeedsNoEscaping(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a b?c=d#e%20f&g")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "sigil?.db")
	db := mustOpen(t, storage.Options{Path: path})
	if err := db.PutSealed(t.Context(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Contains(names, "sigil?.db") || !slices.Contains(names, "sigil?.db-wal") {
		t.Errorf("directory holds %q, want sigil?.db and its WAL", names)
	}
	again := mustOpen(t, storage.Options{Path: path})
	if got, err := again.GetSealed(t.Context(), "k"); err != nil || string(got) != "v" {
		t.Errorf("GetSealed through a second handle = %q, %v", got, err)
	}
}

func TestSQLiteWALMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigil.db")
	db := mustOpen(t, storage.Options{Backend: "sqlite", Path: path})
	if err := db.PutSealed(t.Context(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Errorf("no write-ahead log next to the database: %v", err)
	}
}

func TestSQLiteRefusesUnrepresentableTime(t *testing.T) {
	db := mustOpen(t, storage.Options{Path: filepath.Join(t.TempDir(), "sigil.db")})
	noExpiry := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"certificate", func() error {
			return db.InsertCertificates(t.Context(), []storage.Certificate{
				{Serial: "01", IssuerID: "i", DER: []byte{1}},
				{Serial: "02", IssuerID: "i", DER: []byte{1}, NotAfter: noExpiry},
			})
		}},
		{"issuer", func() error {
			return db.PutIssuer(t.Context(), storage.Issuer{ID: "i", NotAfter: noExpiry})
		}},
		{"crl", func() error {
			return db.PutCRL(t.Context(), storage.CRL{IssuerID: "i", Number: 1, NextUpdate: noExpiry})
		}},
		{"revocation", func() error {
			_, err := db.RevokeCertificate(t.Context(), "01", noExpiry, 1)
			return err
		}},
		{"zero revocation time", func() error {
			_, err := db.RevokeCertificate(t.Context(), "01", time.Time{}, 1)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); err == nil {
				t.Fatal("stored a time it cannot represent")
			}
		})
	}
	if got, err := db.ListCertificates(t.Context(), storage.CertificateFilter{}); err != nil || len(got) != 0 {
		t.Errorf("after refusals, listed %d certificates (%v), want none", len(got), err)
	}
	if got, err := db.ListIssuers(t.Context()); err != nil || len(got) != 0 {
		t.Errorf("after refusals, listed %d issuers (%v), want none", len(got), err)
	}
}

func TestOpenErrors(t *testing.T) {
	const password = "s3cret-Pa55word-never-shown"
	dir := t.TempDir()
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, tc := range []struct {
		name string
		o    storage.Options
	}{
		{"unknown backend", storage.Options{Backend: "mysql", Path: filepath.Join(dir, "x.db")}},
		{"sqlite without path", storage.Options{Backend: "sqlite"}},
		{"sqlite in a missing directory", storage.Options{Backend: "sqlite", Path: filepath.Join(dir, "missing", "x.db")}},
		{"postgres without DSN", storage.Options{Backend: "postgres", Password: password}},
		{"postgres malformed DSN", storage.Options{Backend: "postgres", DSN: "postgres://%zz", Password: password}},
		{"postgres unreachable", storage.Options{
			Backend:  "postgres",
			DSN:      "postgres://sigil@127.0.0.1:1/sigil?sslmode=disable&connect_timeout=5",
			Password: password,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Logger = logger
			db, err := storage.Open(t.Context(), tc.o)
			if err == nil {
				_ = db.Close()
				t.Fatal("Open succeeded")
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error reveals the password: %v", err)
			}
			t.Logf("error: %v", err)
		})
	}
	if strings.Contains(logs.String(), password) {
		t.Error("the log reveals the password")
	}
}

func TestPostgresPassword(t *testing.T) {
	// The test server trusts local connections, so a password is sent
	// only if asked for; what matters is that setting one is accepted and
	// never echoed.
	o := backends[1].options(t)
	o.Password = "unused-by-trust-auth"
	db := mustOpen(t, o)
	if err := db.PutSealed(t.Context(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkInsertCertificates(b *testing.B) {
	for _, backend := range backends {
		for _, batch := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/batch=%d", backend.name, batch), func(b *testing.B) {
				db, err := storage.Open(b.Context(), backend.options(b))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = db.Close() })
				var serial atomic.Int64
				now := time.Now()
				certs := make([]storage.Certificate, batch)
				der := bytes.Repeat([]byte{0x30}, 800)
				for b.Loop() {
					for i := range certs {
						certs[i] = storage.Certificate{
							Serial:    fmt.Sprintf("%x", serial.Add(1)),
							IssuerID:  "bench",
							Profile:   "spiffe",
							Subject:   "spiffe://example.org/bench",
							NotBefore: now,
							NotAfter:  now.Add(time.Hour),
							DER:       der,
						}
					}
					if err := db.InsertCertificates(b.Context(), certs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "certs/s")
			})
		}
	}
}

// TestSQLiteBackgroundCheckpoints: commits never checkpoint by themselves,
// the background checkpointer copies the WAL into the database file, and
// Close leaves no WAL behind. The data survives a reopen.
func TestSQLiteBackgroundCheckpoints(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigil.db")
	db := mustOpen(t, storage.Options{Backend: "sqlite", Path: path, Logger: testLogger(t)})
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	before := size(path)
	for i := range 400 {
		c := storage.Certificate{Serial: fmt.Sprintf("%x", i+1), IssuerID: "i", DER: bytes.Repeat([]byte{byte(i)}, 600)}
		if err := db.InsertCertificates(t.Context(), []storage.Certificate{c}); err != nil {
			t.Fatal(err)
		}
	}
	if size(path+"-wal") == 0 {
		t.Fatal("commits wrote no WAL")
	}
	deadline := time.Now().Add(10 * time.Second)
	for size(path) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint copied the WAL into the database (size %d)", size(path))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if n := size(path + "-wal"); n != 0 {
		t.Fatalf("WAL of %d bytes left after Close", n)
	}
	db = mustOpen(t, storage.Options{Backend: "sqlite", Path: path, Logger: testLogger(t)})
	if _, err := db.GetCertificate(t.Context(), fmt.Sprintf("%x", 400)); err != nil {
		t.Fatalf("last certificate after reopen: %v", err)
	}
}
