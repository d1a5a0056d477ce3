package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// locker is a backend's way of taking TryLock's locks. tryLock returns
// ErrLocked when the name is held elsewhere, or a function that releases
// the lock; heldLock calls that function at most once.
type locker interface {
	tryLock(ctx context.Context, name string) (release func() error, err error)
	close() error
}

// errClosed: the DB was closed.
var errClosed = errors.New("storage is closed")

// TryLock takes the named lock without waiting, or returns ErrLocked.
// Under PostgreSQL the lock is cluster-wide (a session advisory lock,
// scoped to the schema); under SQLite it is process-wide, per database
// file. Locks still held when the DB is closed are released by Close.
func (db *DB) TryLock(ctx context.Context, name string) (Lock, error) {
	db.mu.Lock()
	closed := db.closed
	db.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("taking lock %q: %w", name, errClosed)
	}
	release, err := db.locker.tryLock(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("taking lock %q: %w", name, err)
	}
	l := &heldLock{db: db, release: release}
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		_ = release()
		return nil, fmt.Errorf("taking lock %q: %w", name, errClosed)
	}
	db.held[l] = struct{}{}
	db.mu.Unlock()
	return l, nil
}

// heldLock is a Lock taken through a DB.
type heldLock struct {
	db      *DB
	release func() error
	once    sync.Once
	err     error
}

// Release gives the lock up. Later calls do nothing and return the first
// call's result; they never release a lock someone else took since.
func (l *heldLock) Release() error {
	l.once.Do(func() {
		l.err = l.release()
		l.db.mu.Lock()
		delete(l.db.held, l)
		l.db.mu.Unlock()
	})
	return l.err
}
