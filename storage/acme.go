package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

type acmeQueries struct {
	insertAccount, updateAccount, getAccount, getAccountByThumb, setThumb string
	insertOrder, updateOrder, getOrder, listOrders                        string
	insertAuthz, updateAuthz, getAuthz, findAuthzs                        string
}

func newACMEQueries(d dialect) *acmeQueries {
	return &acmeQueries{
		insertAccount:     d.sql(`INSERT INTO acme_accounts (id, thumbprint, data, revision) VALUES (?, ?, ?, 1)`),
		updateAccount:     d.sql(`UPDATE acme_accounts SET data = ?, revision = revision + 1 WHERE id = ? AND revision = ?`),
		getAccount:        d.sql(`SELECT id, data, revision FROM acme_accounts WHERE id = ?`),
		getAccountByThumb: d.sql(`SELECT id, data, revision FROM acme_accounts WHERE thumbprint = ?`),
		setThumb:          d.sql(`UPDATE acme_accounts SET thumbprint = ? WHERE id = ?`),
		insertOrder:       d.sql(`INSERT INTO acme_orders (id, account_id, data, revision) VALUES (?, ?, ?, 1)`),
		updateOrder:       d.sql(`UPDATE acme_orders SET data = ?, revision = revision + 1 WHERE id = ? AND revision = ?`),
		getOrder:          d.sql(`SELECT id, data, revision FROM acme_orders WHERE id = ?`),
		listOrders:        d.sql(`SELECT id, data, revision FROM acme_orders WHERE account_id = ? AND id > ? ORDER BY id LIMIT ?`),
		insertAuthz:       d.sql(`INSERT INTO acme_authzs (id, account_id, identifier, expires_at, data, revision) VALUES (?, ?, ?, ?, ?, 1)`),
		updateAuthz:       d.sql(`UPDATE acme_authzs SET data = ?, expires_at = ?, revision = revision + 1 WHERE id = ? AND revision = ?`),
		getAuthz:          d.sql(`SELECT id, data, revision FROM acme_authzs WHERE id = ?`),
		findAuthzs: d.sql(`SELECT id, data, revision FROM acme_authzs WHERE account_id = ? AND identifier = ? AND expires_at > ?
			ORDER BY expires_at LIMIT 16`),
	}
}

var (
	sqliteACMEQueries   = newACMEQueries(sqliteDialect)
	postgresACMEQueries = newACMEQueries(postgresDialect)
)

func (db *DB) acmeQ() *acmeQueries {
	if db.dialect.name == postgresDialect.name {
		return postgresACMEQueries
	}
	return sqliteACMEQueries
}

func scanDoc(r rowScanner) (ACMEDoc, error) {
	var d ACMEDoc
	err := r.Scan(&d.ID, &d.Data, &d.Revision)
	return d, err
}

// putDoc creates (expectRevision 0) or compare-and-swaps a document.
func (db *DB) putDoc(ctx context.Context, what string, insert func() (sql.Result, error), update func() (sql.Result, error), exists string, id string, expectRevision int64) error {
	var err error
	if expectRevision == 0 {
		_, err = insert()
		if isUniqueViolation(err) {
			err = fmt.Errorf("%w: %w", ErrConflict, err)
		}
	} else {
		var res sql.Result
		if res, err = update(); err == nil {
			if err = expectOneRow(res); err != nil {
				if qerr := db.read.QueryRowContext(ctx, exists, id).Scan(new(string), new(string), new(int64)); errors.Is(qerr, sql.ErrNoRows) {
					err = ErrNotFound
				}
			}
		}
	}
	if err != nil {
		return fmt.Errorf("storing %s %s: %w", what, id, err)
	}
	return nil
}

func (db *DB) getDoc(ctx context.Context, what, q string, key string) (ACMEDoc, error) {
	d, err := scanDoc(db.read.QueryRowContext(ctx, q, key))
	if errors.Is(err, sql.ErrNoRows) {
		return ACMEDoc{}, fmt.Errorf("reading %s %s: %w", what, key, ErrNotFound)
	}
	if err != nil {
		return ACMEDoc{}, fmt.Errorf("reading %s %s: %w", what, key, err)
	}
	return d, nil
}

// PutACMEAccount creates or compare-and-swaps an account.
func (db *DB) PutACMEAccount(ctx context.Context, d ACMEDoc, thumbprint string, expectRevision int64) error {
	q := db.acmeQ()
	return db.putDoc(ctx, "ACME account",
		func() (sql.Result, error) {
			return db.write.ExecContext(ctx, q.insertAccount, d.ID, thumbprint, d.Data)
		},
		func() (sql.Result, error) {
			return db.write.ExecContext(ctx, q.updateAccount, d.Data, d.ID, expectRevision)
		},
		q.getAccount, d.ID, expectRevision)
}

// GetACMEAccount returns an account, or ErrNotFound.
func (db *DB) GetACMEAccount(ctx context.Context, id string) (ACMEDoc, error) {
	return db.getDoc(ctx, "ACME account", db.acmeQ().getAccount, id)
}

// GetACMEAccountByThumbprint returns the account with the key, or ErrNotFound.
func (db *DB) GetACMEAccountByThumbprint(ctx context.Context, thumbprint string) (ACMEDoc, error) {
	return db.getDoc(ctx, "ACME account with key", db.acmeQ().getAccountByThumb, thumbprint)
}

// SetACMEAccountThumbprint records an account's new key.
func (db *DB) SetACMEAccountThumbprint(ctx context.Context, id, thumbprint string) error {
	res, err := db.write.ExecContext(ctx, db.acmeQ().setThumb, thumbprint, id)
	if isUniqueViolation(err) {
		err = fmt.Errorf("%w: the key belongs to another account", ErrConflict)
	} else if err == nil {
		if expectOneRow(res) != nil {
			err = ErrNotFound
		}
	}
	if err != nil {
		return fmt.Errorf("changing the key of ACME account %s: %w", id, err)
	}
	return nil
}

// PutACMEOrder creates or compare-and-swaps an order.
func (db *DB) PutACMEOrder(ctx context.Context, d ACMEDoc, accountID string, expectRevision int64) error {
	q := db.acmeQ()
	return db.putDoc(ctx, "ACME order",
		func() (sql.Result, error) { return db.write.ExecContext(ctx, q.insertOrder, d.ID, accountID, d.Data) },
		func() (sql.Result, error) {
			return db.write.ExecContext(ctx, q.updateOrder, d.Data, d.ID, expectRevision)
		},
		q.getOrder, d.ID, expectRevision)
}

// GetACMEOrder returns an order, or ErrNotFound.
func (db *DB) GetACMEOrder(ctx context.Context, id string) (ACMEDoc, error) {
	return db.getDoc(ctx, "ACME order", db.acmeQ().getOrder, id)
}

// ListACMEOrders returns up to limit (at most MaxListLimit) of the
// account's orders with IDs after after, in ID order.
func (db *DB) ListACMEOrders(ctx context.Context, accountID, after string, limit int) ([]ACMEDoc, error) {
	rows, err := db.read.QueryContext(ctx, db.acmeQ().listOrders, accountID, after, listLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("listing the orders of ACME account %s: %w", accountID, err)
	}
	defer rows.Close()
	var out []ACMEDoc
	for rows.Next() {
		d, err := scanDoc(rows)
		if err != nil {
			return nil, fmt.Errorf("listing the orders of ACME account %s: %w", accountID, err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing the orders of ACME account %s: %w", accountID, err)
	}
	return out, nil
}

// PutACMEAuthz creates or compare-and-swaps an authorization.
func (db *DB) PutACMEAuthz(ctx context.Context, d ACMEDoc, accountID, identifier string, expiresAt time.Time, expectRevision int64) error {
	exp, err := requiredNanos("expiry", expiresAt)
	if err != nil {
		return err
	}
	q := db.acmeQ()
	return db.putDoc(ctx, "ACME authorization",
		func() (sql.Result, error) {
			return db.write.ExecContext(ctx, q.insertAuthz, d.ID, accountID, identifier, exp, d.Data)
		},
		func() (sql.Result, error) {
			return db.write.ExecContext(ctx, q.updateAuthz, d.Data, exp, d.ID, expectRevision)
		},
		q.getAuthz, d.ID, expectRevision)
}

// GetACMEAuthz returns an authorization, or ErrNotFound.
func (db *DB) GetACMEAuthz(ctx context.Context, id string) (ACMEDoc, error) {
	return db.getDoc(ctx, "ACME authorization", db.acmeQ().getAuthz, id)
}

// FindACMEAuthzs returns the account's unexpired authorizations for
// identifier, soonest expiry first.
func (db *DB) FindACMEAuthzs(ctx context.Context, accountID, identifier string, now time.Time) ([]ACMEDoc, error) {
	n, err := requiredNanos("now", now)
	if err != nil {
		return nil, err
	}
	return queryAll(ctx, db.read, "finding ACME authorizations", db.acmeQ().findAuthzs, []any{accountID, identifier, n}, 4, scanDoc)
}
