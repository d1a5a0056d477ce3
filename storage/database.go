package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

type dbQueries struct {
	putConn, getConn, listConns, deleteConn                    string
	putRole, getRole, listRoles, deleteRole, deleteStatic      string
	getStatic, insertStatic, updateStatic                      string
	createLease, getLease, extendLease, failLease, deleteLease string
	listLeases, dueLeases, countLeases                         string
}

const leaseColumns = `id, owner, issued_at, expires_at, max_expires_at, data, attempts, next_attempt, last_error`

func newDBQueries(d dialect) *dbQueries {
	return &dbQueries{
		putConn: d.sql(`INSERT INTO db_connections (name, config, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at`),
		getConn:    d.sql(`SELECT config FROM db_connections WHERE name = ?`),
		listConns:  d.sql(`SELECT name FROM db_connections ORDER BY name`),
		deleteConn: d.sql(`DELETE FROM db_connections WHERE name = ?`),
		putRole: d.sql(`INSERT INTO db_roles (name, kind, config, updated_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, config = excluded.config, updated_at = excluded.updated_at`),
		getRole:      d.sql(`SELECT name, kind, config, updated_at FROM db_roles WHERE name = ?`),
		listRoles:    d.sql(`SELECT name, kind, config, updated_at FROM db_roles WHERE kind = ? ORDER BY name`),
		deleteRole:   d.sql(`DELETE FROM db_roles WHERE name = ?`),
		deleteStatic: d.sql(`DELETE FROM db_static_state WHERE role = ?`),
		getStatic:    d.sql(`SELECT role, password, pending, last_rotated, next_rotation, revision FROM db_static_state WHERE role = ?`),
		insertStatic: d.sql(`INSERT INTO db_static_state (role, password, pending, last_rotated, next_rotation, revision) VALUES (?, ?, ?, ?, ?, 1)`),
		updateStatic: d.sql(`UPDATE db_static_state SET password = ?, pending = ?, last_rotated = ?, next_rotation = ?,
			revision = revision + 1 WHERE role = ? AND revision = ?`),
		createLease: d.sql(`INSERT INTO leases (` + leaseColumns + `) VALUES (?, ?, ?, ?, ?, ?, 0, ?, '')`),
		getLease:    d.sql(`SELECT ` + leaseColumns + ` FROM leases WHERE id = ?`),
		extendLease: d.sql(`UPDATE leases SET expires_at = ?, next_attempt = ? WHERE id = ?`),
		failLease:   d.sql(`UPDATE leases SET attempts = attempts + 1, next_attempt = ?, last_error = ? WHERE id = ?`),
		deleteLease: d.sql(`DELETE FROM leases WHERE id = ?`),
		listLeases: d.sql(`SELECT ` + leaseColumns + ` FROM leases WHERE id >= ? AND id < ? AND id > ?
			ORDER BY id LIMIT ?`),
		dueLeases:   d.sql(`SELECT ` + leaseColumns + ` FROM leases WHERE next_attempt <= ? ORDER BY next_attempt LIMIT ?`),
		countLeases: d.sql(`SELECT COUNT(*) FROM leases`),
	}
}

var (
	sqliteDBQueries   = newDBQueries(sqliteDialect)
	postgresDBQueries = newDBQueries(postgresDialect)
)

func (db *DB) dbQ() *dbQueries {
	if db.dialect.name == postgresDialect.name {
		return postgresDBQueries
	}
	return sqliteDBQueries
}

// requiredNanos is nanos for a column that must hold a time.
func requiredNanos(what string, t time.Time) (int64, error) {
	n, err := nanos(t)
	if err != nil {
		return 0, err
	}
	if !n.Valid {
		return 0, fmt.Errorf("%s is the zero time", what)
	}
	return n.Int64, nil
}

func expectDeleted(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	if err := expectOneRow(res); err != nil {
		return ErrNotFound
	}
	return nil
}

// PutDBConnection creates or replaces a connection's sealed config.
func (db *DB) PutDBConnection(ctx context.Context, name string, sealed []byte, at time.Time) error {
	n, err := requiredNanos("update time", at)
	if err == nil {
		_, err = db.write.ExecContext(ctx, db.dbQ().putConn, name, blob(sealed), n)
	}
	if err != nil {
		return fmt.Errorf("storing database connection %s: %w", name, err)
	}
	return nil
}

// GetDBConnection returns a connection's sealed config, or ErrNotFound.
func (db *DB) GetDBConnection(ctx context.Context, name string) ([]byte, error) {
	var b []byte
	err := db.read.QueryRowContext(ctx, db.dbQ().getConn, name).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("reading database connection %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading database connection %s: %w", name, err)
	}
	return b, nil
}

// ListDBConnections returns the connection names in order.
func (db *DB) ListDBConnections(ctx context.Context) ([]string, error) {
	return queryAll(ctx, db.read, "listing database connections", db.dbQ().listConns, nil, 8, func(r rowScanner) (string, error) {
		var s string
		err := r.Scan(&s)
		return s, err
	})
}

// DeleteDBConnection removes a connection, or returns ErrNotFound.
func (db *DB) DeleteDBConnection(ctx context.Context, name string) error {
	if err := expectDeleted(db.write.ExecContext(ctx, db.dbQ().deleteConn, name)); err != nil {
		return fmt.Errorf("deleting database connection %s: %w", name, err)
	}
	return nil
}

func scanDBRole(r rowScanner) (DBRole, error) {
	var role DBRole
	var at int64
	if err := r.Scan(&role.Name, &role.Kind, &role.Config, &at); err != nil {
		return DBRole{}, err
	}
	role.UpdatedAt = time.Unix(0, at).UTC()
	return role, nil
}

// PutDBRole creates or replaces a role.
func (db *DB) PutDBRole(ctx context.Context, r DBRole) error {
	n, err := requiredNanos("update time", r.UpdatedAt)
	if err == nil {
		_, err = db.write.ExecContext(ctx, db.dbQ().putRole, r.Name, r.Kind, r.Config, n)
	}
	if err != nil {
		return fmt.Errorf("storing database role %s: %w", r.Name, err)
	}
	return nil
}

// GetDBRole returns a role, or ErrNotFound.
func (db *DB) GetDBRole(ctx context.Context, name string) (DBRole, error) {
	r, err := scanDBRole(db.read.QueryRowContext(ctx, db.dbQ().getRole, name))
	if errors.Is(err, sql.ErrNoRows) {
		return DBRole{}, fmt.Errorf("reading database role %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return DBRole{}, fmt.Errorf("reading database role %s: %w", name, err)
	}
	return r, nil
}

// ListDBRoles returns the roles of a kind in name order.
func (db *DB) ListDBRoles(ctx context.Context, kind string) ([]DBRole, error) {
	return queryAll(ctx, db.read, "listing database roles", db.dbQ().listRoles, []any{kind}, 8, scanDBRole)
}

// DeleteDBRole removes a role and its static state.
func (db *DB) DeleteDBRole(ctx context.Context, name string) error {
	q := db.dbQ()
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if err := expectDeleted(tx.ExecContext(ctx, q.deleteRole, name)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, q.deleteStatic, name)
		return err
	})
	if err != nil {
		return fmt.Errorf("deleting database role %s: %w", name, err)
	}
	return nil
}

// GetStaticState returns a static role's password state, or ErrNotFound.
func (db *DB) GetStaticState(ctx context.Context, role string) (StaticState, error) {
	var st StaticState
	var last, next sql.NullInt64
	err := db.read.QueryRowContext(ctx, db.dbQ().getStatic, role).Scan(&st.Role, &st.Password, &st.Pending, &last, &next, &st.Revision)
	if errors.Is(err, sql.ErrNoRows) {
		return StaticState{}, fmt.Errorf("reading static role state %s: %w", role, ErrNotFound)
	}
	if err != nil {
		return StaticState{}, fmt.Errorf("reading static role state %s: %w", role, err)
	}
	st.LastRotated, st.NextRotation = fromNanos(last), fromNanos(next)
	return st, nil
}

// PutStaticState stores st if the stored revision is expectRevision.
func (db *DB) PutStaticState(ctx context.Context, st StaticState, expectRevision int64) error {
	times, err := nanosAll(st.LastRotated, st.NextRotation)
	if err != nil {
		return fmt.Errorf("storing static role state %s: %w", st.Role, err)
	}
	q := db.dbQ()
	if expectRevision == 0 {
		_, err = db.write.ExecContext(ctx, q.insertStatic, st.Role, st.Password, st.Pending, times[0], times[1])
		if isUniqueViolation(err) {
			err = fmt.Errorf("state exists already: %w", ErrConflict)
		}
	} else {
		var res sql.Result
		res, err = db.write.ExecContext(ctx, q.updateStatic, st.Password, st.Pending, times[0], times[1], st.Role, expectRevision)
		if err == nil {
			err = expectOneRow(res)
		}
	}
	if err != nil {
		return fmt.Errorf("storing static role state %s: %w", st.Role, err)
	}
	return nil
}

func scanLease(r rowScanner) (Lease, error) {
	var l Lease
	var issued, expires, maxExpires, next int64
	if err := r.Scan(&l.ID, &l.Owner, &issued, &expires, &maxExpires, &l.Data, &l.Attempts, &next, &l.LastError); err != nil {
		return Lease{}, err
	}
	l.IssuedAt, l.ExpiresAt = time.Unix(0, issued).UTC(), time.Unix(0, expires).UTC()
	l.MaxExpiresAt, l.NextAttempt = time.Unix(0, maxExpires).UTC(), time.Unix(0, next).UTC()
	return l, nil
}

// CreateLease stores a new lease, due at its expiry.
func (db *DB) CreateLease(ctx context.Context, l Lease) error {
	var ts [3]int64
	var err error
	for i, t := range []time.Time{l.IssuedAt, l.ExpiresAt, l.MaxExpiresAt} {
		if ts[i], err = requiredNanos("lease time", t); err != nil {
			return fmt.Errorf("storing lease %s: %w", l.ID, err)
		}
	}
	_, err = db.write.ExecContext(ctx, db.dbQ().createLease, l.ID, l.Owner, ts[0], ts[1], ts[2], blob(l.Data), ts[1])
	if isUniqueViolation(err) {
		err = fmt.Errorf("%w: %w", ErrConflict, err)
	}
	if err != nil {
		return fmt.Errorf("storing lease %s: %w", l.ID, err)
	}
	return nil
}

// GetLease returns a lease, or ErrNotFound.
func (db *DB) GetLease(ctx context.Context, id string) (Lease, error) {
	l, err := scanLease(db.read.QueryRowContext(ctx, db.dbQ().getLease, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Lease{}, fmt.Errorf("reading lease %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Lease{}, fmt.Errorf("reading lease %s: %w", id, err)
	}
	return l, nil
}

// ExtendLease sets a lease's expiry and next attempt.
func (db *DB) ExtendLease(ctx context.Context, id string, expiresAt time.Time) error {
	n, err := requiredNanos("expiry", expiresAt)
	if err == nil {
		err = expectDeleted(db.write.ExecContext(ctx, db.dbQ().extendLease, n, n, id))
	}
	if err != nil {
		return fmt.Errorf("extending lease %s: %w", id, err)
	}
	return nil
}

// RecordLeaseFailure counts a failed revocation and reschedules it.
func (db *DB) RecordLeaseFailure(ctx context.Context, id string, nextAttempt time.Time, reason string) error {
	n, err := requiredNanos("next attempt", nextAttempt)
	if err == nil {
		err = expectDeleted(db.write.ExecContext(ctx, db.dbQ().failLease, n, reason, id))
	}
	if err != nil {
		return fmt.Errorf("recording the failed revocation of lease %s: %w", id, err)
	}
	return nil
}

// DeleteLease removes a lease.
func (db *DB) DeleteLease(ctx context.Context, id string) error {
	if err := expectDeleted(db.write.ExecContext(ctx, db.dbQ().deleteLease, id)); err != nil {
		return fmt.Errorf("deleting lease %s: %w", id, err)
	}
	return nil
}

// ListLeases returns leases whose ID starts with prefix, in ID order.
func (db *DB) ListLeases(ctx context.Context, prefix, after string, limit int) ([]Lease, error) {
	limit = listLimit(limit)
	return queryAll(ctx, db.read, "listing leases", db.dbQ().listLeases,
		[]any{prefix, prefix + maxRune, after, int64(limit)}, min(limit, 64), scanLease)
}

// DueLeases returns leases due for revocation at now, earliest first.
func (db *DB) DueLeases(ctx context.Context, now time.Time, limit int) ([]Lease, error) {
	n, err := requiredNanos("now", now)
	if err != nil {
		return nil, err
	}
	return queryAll(ctx, db.read, "listing due leases", db.dbQ().dueLeases, []any{n, int64(listLimit(limit))}, 16, scanLease)
}

// CountLeases returns how many leases are stored.
func (db *DB) CountLeases(ctx context.Context) (int64, error) {
	var n int64
	if err := db.read.QueryRowContext(ctx, db.dbQ().countLeases).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting leases: %w", err)
	}
	return n, nil
}
