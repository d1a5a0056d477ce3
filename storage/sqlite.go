package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	// The SQLite driver, registered as "sqlite3".
	_ "github.com/mattn/go-sqlite3"
)

// SQLite connection settings.
//
// journal_mode=WAL with synchronous=NORMAL: a commit is durable once it is
// in the WAL file, which the operating system holds even if this process
// is killed, so no acknowledged write is lost on a process crash. A power
// loss or kernel crash can roll back the last transactions before the WAL
// is synced at a checkpoint, but never corrupts the database.
//
// The writer's transactions begin IMMEDIATE (taking the write lock at
// BEGIN, so a transaction never fails to upgrade a read lock midway), and
// busy_timeout makes a writer in another process wait rather than fail.
// Readers are query-only, so nothing can write around the single writer.
const (
	sqliteBusyTimeoutMillis = "10000"
	sqliteWriteParams       = "_journal_mode=WAL&_synchronous=NORMAL&_foreign_keys=on&_txlock=immediate&_busy_timeout=" + sqliteBusyTimeoutMillis
	sqliteReadParams        = "_foreign_keys=on&_query_only=true&_busy_timeout=" + sqliteBusyTimeoutMillis
)

func openSQLite(ctx context.Context, o Options) (*DB, error) {
	if o.Path == "" {
		return nil, errors.New("opening sqlite storage: no database path")
	}
	path, err := filepath.Abs(o.Path)
	if err != nil {
		return nil, fmt.Errorf("opening sqlite storage %s: %w", o.Path, err)
	}
	// Create the file ourselves so that it, and the WAL and shared-memory
	// files SQLite creates with the same permissions, are private.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening sqlite storage: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("opening sqlite storage: %w", err)
	}
	// One canonical name per file, so that every handle on it in this
	// process shares TryLock's locks.
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	uri := "file:" + (&url.URL{Path: path}).EscapedPath()

	write, err := sql.Open("sqlite3", uri+"?"+sqliteWriteParams)
	if err != nil {
		return nil, fmt.Errorf("opening sqlite storage %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	// The writer connects first: it switches the file to WAL mode, which
	// readers then find already set.
	if err := write.PingContext(ctx); err != nil {
		_ = write.Close()
		return nil, fmt.Errorf("opening sqlite storage %s: %w", path, err)
	}
	read, err := sql.Open("sqlite3", uri+"?"+sqliteReadParams)
	if err != nil {
		_ = write.Close()
		return nil, fmt.Errorf("opening sqlite storage %s: %w", path, err)
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	read.SetMaxOpenConns(readers)
	read.SetMaxIdleConns(readers)
	if err := read.PingContext(ctx); err != nil {
		_ = read.Close()
		_ = write.Close()
		return nil, fmt.Errorf("opening sqlite storage %s: %w", path, err)
	}
	return &DB{
		dialect: sqliteDialect,
		q:       newQueries(sqliteDialect),
		write:   write,
		read:    read,
		locker:  sqliteLocker{path: path},
	}, nil
}

// sqliteLocks are the TryLock locks held in this process, by database file
// and lock name. Under SQLite only one process serves a database, so a
// process-wide lock is a cluster-wide one.
var sqliteLocks = struct {
	sync.Mutex
	held map[sqliteLockKey]struct{}
}{held: make(map[sqliteLockKey]struct{})}

type sqliteLockKey struct{ path, name string }

type sqliteLocker struct{ path string }

func (l sqliteLocker) tryLock(_ context.Context, name string) (func() error, error) {
	key := sqliteLockKey{path: l.path, name: name}
	sqliteLocks.Lock()
	defer sqliteLocks.Unlock()
	if _, ok := sqliteLocks.held[key]; ok {
		return nil, ErrLocked
	}
	sqliteLocks.held[key] = struct{}{}
	return func() error {
		sqliteLocks.Lock()
		defer sqliteLocks.Unlock()
		delete(sqliteLocks.held, key)
		return nil
	}, nil
}

func (sqliteLocker) close() error { return nil }
