package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/mattn/go-sqlite3"
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
//
// Checkpoints (copying the WAL back into the database file, with an fsync
// of each) are taken off the commit path: the writer's connection never
// checkpoints by itself (wal_autocheckpoint=0), and a checkpointer on its own
// connection runs PASSIVE checkpoints in the background, which never block
// the writer. A commit therefore costs WAL writes only, never an fsync
// stall that every waiting caller would share. Durability is unchanged: the
// WAL is the durable record until it is checkpointed.
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

	write, err := sql.Open(sqliteWriterDriver, uri+"?"+sqliteWriteParams)
	if err != nil {
		return nil, fmt.Errorf("opening sqlite storage %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	// The writer connects first: it switches the file to WAL mode, which
	// readers then find already set. That switch needs the file to itself
	// and does not wait on the busy timeout, so processes opening a fresh
	// file together retry it.
	if err := pingUntilUnlocked(ctx, write); err != nil {
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
	ckpt, err := sql.Open("sqlite3", uri+"?_busy_timeout="+sqliteBusyTimeoutMillis)
	if err != nil {
		_ = read.Close()
		_ = write.Close()
		return nil, fmt.Errorf("opening sqlite storage %s: %w", path, err)
	}
	ckpt.SetMaxOpenConns(1)
	ckpt.SetMaxIdleConns(1)
	db := &DB{
		dialect: sqliteDialect,
		q:       newQueries(sqliteDialect),
		write:   write,
		read:    read,
		locker:  sqliteLocker{path: path},
	}
	db.stopBackground = startCheckpointer(ckpt, db.commits.Load, o.Logger)
	return db, nil
}

// sqliteWriterDriver is the SQLite driver for the writer's connection: it
// turns automatic checkpoints off on every connection it opens.
const sqliteWriterDriver = "sigil-sqlite3-writer"

func init() {
	sql.Register(sqliteWriterDriver, &sqlite3.SQLiteDriver{
		ConnectHook: func(c *sqlite3.SQLiteConn) error {
			_, err := c.Exec("PRAGMA wal_autocheckpoint=0", nil)
			return err
		},
	})
}

// The checkpointer copies the WAL into the database file once
// checkpointCommits transactions have been committed since the last
// checkpoint, or checkpointMaxAge after it when any has. Checkpointing by
// volume rather than by the clock keeps the number of fsyncs, each of which
// stalls the writer's WAL writes on this kind of disk, low under load
// (about 20 KiB of WAL per commit, so the WAL stays within a few tens of
// MiB), while an idle database is still checkpointed soon.
const (
	checkpointPoll    = 100 * time.Millisecond
	checkpointCommits = 2048
	checkpointMaxAge  = 2 * time.Second
)

// startCheckpointer runs PASSIVE checkpoints on ckpt, paced by commits
// (the count of committed transactions), until the returned function is
// called; that function takes a last, truncating checkpoint and closes ckpt.
func startCheckpointer(ckpt *sql.DB, commits func() int64, log *slog.Logger) func() error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(checkpointPoll)
		defer t.Stop()
		last, lastAt := commits(), time.Now()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			n := commits()
			if n-last < checkpointCommits && (n == last || time.Since(lastAt) < checkpointMaxAge) {
				continue
			}
			if _, err := ckpt.Exec("PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
				log.Warn("sqlite checkpoint failed", "err", err)
			}
			last, lastAt = n, time.Now()
		}
	}()
	return func() error {
		close(stop)
		<-done
		// A last checkpoint keeps the WAL from outliving the process; if it
		// cannot run, the WAL is replayed at the next open, losing nothing.
		if _, err := ckpt.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
			log.Warn("final sqlite checkpoint failed", "err", err)
		}
		return ckpt.Close()
	}
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

// pingUntilUnlocked connects, retrying for up to 10 s while another
// connection holds the file locked.
func pingUntilUnlocked(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := db.PingContext(ctx)
		var se sqlite3.Error
		if err == nil || !errors.As(err, &se) || (se.Code != sqlite3.ErrBusy && se.Code != sqlite3.ErrLocked) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
