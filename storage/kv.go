package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// KVHead is a secret's stored head: its metadata, sealed by the secret
// store (the store never sees it in the clear), and its revision.
type KVHead struct {
	Meta     []byte
	Revision int64
}

// KVChange is one atomic change to a secret, applied by WriteKV.
type KVChange struct {
	// ExpectRevision is the revision the change was computed from; 0 means
	// the secret must not exist yet.
	ExpectRevision int64
	// Meta replaces the sealed metadata.
	Meta []byte
	// Version and Value, when Version > 0, add that version with the
	// sealed Value.
	Version int64
	Value   []byte
	// Destroy removes the values of these versions (they stay listed in
	// the metadata, destroyed).
	Destroy []int64
	// Forget removes these versions' rows entirely (versions past
	// max_versions).
	Forget []int64
}

// kvQueries are the secret store's statements in one dialect.
type kvQueries struct {
	head, version, insertHead, updateHead, insertVersion, destroyVersion,
	forgetVersion, deleteHead, deleteVersions, list string
}

func newKVQueries(d dialect) *kvQueries {
	return &kvQueries{
		head:           d.sql(`SELECT meta, revision FROM kv_heads WHERE mount = ? AND path = ?`),
		version:        d.sql(`SELECT value FROM kv_versions WHERE mount = ? AND path = ? AND version = ?`),
		insertHead:     d.sql(`INSERT INTO kv_heads (mount, path, meta, revision) VALUES (?, ?, ?, 1)`),
		updateHead:     d.sql(`UPDATE kv_heads SET meta = ?, revision = revision + 1 WHERE mount = ? AND path = ? AND revision = ?`),
		insertVersion:  d.sql(`INSERT INTO kv_versions (mount, path, version, value) VALUES (?, ?, ?, ?)`),
		destroyVersion: d.sql(`UPDATE kv_versions SET value = NULL WHERE mount = ? AND path = ? AND version = ?`),
		forgetVersion:  d.sql(`DELETE FROM kv_versions WHERE mount = ? AND path = ? AND version = ?`),
		deleteHead:     d.sql(`DELETE FROM kv_heads WHERE mount = ? AND path = ?`),
		deleteVersions: d.sql(`DELETE FROM kv_versions WHERE mount = ? AND path = ?`),
		list: d.sql(`SELECT path FROM kv_heads WHERE mount = ? AND path >= ? AND path < ? AND path > ?
			ORDER BY path LIMIT ?`),
	}
}

var (
	sqliteKVQueries   = newKVQueries(sqliteDialect)
	postgresKVQueries = newKVQueries(postgresDialect)
)

func (db *DB) kvQ() *kvQueries {
	if db.dialect.name == postgresDialect.name {
		return postgresKVQueries
	}
	return sqliteKVQueries
}

// GetKVHead returns the head of the secret at mount and path, or
// ErrNotFound.
func (db *DB) GetKVHead(ctx context.Context, mount, path string) (KVHead, error) {
	var h KVHead
	err := db.read.QueryRowContext(ctx, db.kvQ().head, mount, path).Scan(&h.Meta, &h.Revision)
	if errors.Is(err, sql.ErrNoRows) {
		return KVHead{}, fmt.Errorf("reading secret %s/%s: %w", mount, path, ErrNotFound)
	}
	if err != nil {
		return KVHead{}, fmt.Errorf("reading secret %s/%s: %w", mount, path, err)
	}
	return h, nil
}

// GetKVVersion returns the sealed value of one version, or ErrNotFound when
// the version does not exist or was destroyed.
func (db *DB) GetKVVersion(ctx context.Context, mount, path string, version int64) ([]byte, error) {
	var v []byte
	err := db.read.QueryRowContext(ctx, db.kvQ().version, mount, path, version).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && v == nil) {
		return nil, fmt.Errorf("reading secret %s/%s version %d: %w", mount, path, version, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading secret %s/%s version %d: %w", mount, path, version, err)
	}
	return v, nil
}

// WriteKV applies c to the secret at mount and path in one transaction.
// If the stored revision is not c.ExpectRevision (or, with 0, the secret
// exists) it returns ErrConflict and writes nothing.
func (db *DB) WriteKV(ctx context.Context, mount, path string, c KVChange) error {
	q := db.kvQ()
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if c.ExpectRevision == 0 {
			if _, err := tx.ExecContext(ctx, q.insertHead, mount, path, blob(c.Meta)); err != nil {
				if isUniqueViolation(err) {
					return fmt.Errorf("the secret exists already: %w", ErrConflict)
				}
				return err
			}
		} else {
			res, err := tx.ExecContext(ctx, q.updateHead, blob(c.Meta), mount, path, c.ExpectRevision)
			if err != nil {
				return err
			}
			if err := expectOneRow(res); err != nil {
				return fmt.Errorf("the secret changed since revision %d: %w", c.ExpectRevision, err)
			}
		}
		if c.Version > 0 {
			if _, err := tx.ExecContext(ctx, q.insertVersion, mount, path, c.Version, blob(c.Value)); err != nil {
				if isUniqueViolation(err) {
					return fmt.Errorf("version %d exists already: %w", c.Version, ErrConflict)
				}
				return err
			}
		}
		for _, v := range c.Destroy {
			if _, err := tx.ExecContext(ctx, q.destroyVersion, mount, path, v); err != nil {
				return err
			}
		}
		for _, v := range c.Forget {
			if _, err := tx.ExecContext(ctx, q.forgetVersion, mount, path, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("writing secret %s/%s: %w", mount, path, err)
	}
	return nil
}

// DeleteKV removes the secret's head and every version if the stored
// revision is expectRevision; ErrNotFound if there is no such secret,
// ErrConflict if its revision differs.
func (db *DB) DeleteKV(ctx context.Context, mount, path string, expectRevision int64) error {
	q := db.kvQ()
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		var rev int64
		err := tx.QueryRowContext(ctx, db.kvQ().head, mount, path).Scan(new([]byte), &rev)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if rev != expectRevision {
			return fmt.Errorf("the secret changed since revision %d: %w", expectRevision, ErrConflict)
		}
		if _, err := tx.ExecContext(ctx, q.deleteVersions, mount, path); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, q.deleteHead, mount, path)
		return err
	})
	if err != nil {
		return fmt.Errorf("deleting secret %s/%s: %w", mount, path, err)
	}
	return nil
}

// maxRune is the largest code point; prefix+maxRune bounds every path that
// starts with prefix, paths being UTF-8 without U+10FFFF.
const maxRune = "\U0010FFFF"

// ListKVPaths returns, in byte order, the paths of the mount's secrets that
// start with prefix and sort after after, at most limit of them (0 means
// 100, never above 1000).
func (db *DB) ListKVPaths(ctx context.Context, mount, prefix, after string, limit int) ([]string, error) {
	limit = listLimit(limit)
	return queryAll(ctx, db.read, "listing secrets", db.kvQ().list,
		[]any{mount, prefix, prefix + maxRune, after, int64(limit)}, min(limit, 64),
		func(r rowScanner) (string, error) {
			var p string
			err := r.Scan(&p)
			return p, err
		})
}
