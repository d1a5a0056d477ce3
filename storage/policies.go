package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

type policyQueries struct {
	upsert, get, list, delete, bump, revision string
}

func newPolicyQueries(d dialect) *policyQueries {
	return &policyQueries{
		upsert: d.sql(`INSERT INTO policies (name, document, updated_at, revision) VALUES (?, ?, ?, 1)
			ON CONFLICT (name) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at,
			revision = policies.revision + 1`),
		get:      d.sql(`SELECT name, document, updated_at, revision FROM policies WHERE name = ?`),
		list:     d.sql(`SELECT name, document, updated_at, revision FROM policies ORDER BY name`),
		delete:   d.sql(`DELETE FROM policies WHERE name = ?`),
		bump:     d.sql(`UPDATE policies_revision SET revision = revision + 1 WHERE id = 1`),
		revision: d.sql(`SELECT revision FROM policies_revision WHERE id = 1`),
	}
}

var (
	sqlitePolicyQueries   = newPolicyQueries(sqliteDialect)
	postgresPolicyQueries = newPolicyQueries(postgresDialect)
)

func (db *DB) policyQ() *policyQueries {
	if db.dialect.name == postgresDialect.name {
		return postgresPolicyQueries
	}
	return sqlitePolicyQueries
}

func scanPolicy(r rowScanner) (Policy, error) {
	var p Policy
	var at int64
	if err := r.Scan(&p.Name, &p.Document, &at, &p.Revision); err != nil {
		return Policy{}, err
	}
	p.UpdatedAt = time.Unix(0, at).UTC()
	return p, nil
}

// PutPolicy creates or replaces the named policy.
func (db *DB) PutPolicy(ctx context.Context, p Policy) error {
	if p.Name == "" {
		return errors.New("storing policy: empty name")
	}
	at, err := nanos(p.UpdatedAt)
	if err != nil {
		return fmt.Errorf("storing policy %s: %w", p.Name, err)
	}
	if !at.Valid {
		return fmt.Errorf("storing policy %s: no update time", p.Name)
	}
	q := db.policyQ()
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, q.upsert, p.Name, p.Document, at); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, q.bump)
		return err
	})
	if err != nil {
		return fmt.Errorf("storing policy %s: %w", p.Name, err)
	}
	return nil
}

// GetPolicy returns the named policy, or ErrNotFound.
func (db *DB) GetPolicy(ctx context.Context, name string) (Policy, error) {
	p, err := scanPolicy(db.read.QueryRowContext(ctx, db.policyQ().get, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Policy{}, fmt.Errorf("reading policy %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return Policy{}, fmt.Errorf("reading policy %s: %w", name, err)
	}
	return p, nil
}

// ListPolicies returns every policy in name order.
func (db *DB) ListPolicies(ctx context.Context) ([]Policy, error) {
	return queryAll(ctx, db.read, "listing policies", db.policyQ().list, nil, 16, scanPolicy)
}

// DeletePolicy removes the named policy, or returns ErrNotFound.
func (db *DB) DeletePolicy(ctx context.Context, name string) error {
	q := db.policyQ()
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, q.delete, name)
		if err != nil {
			return err
		}
		if err := expectOneRow(res); err != nil {
			return ErrNotFound
		}
		_, err = tx.ExecContext(ctx, q.bump)
		return err
	})
	if err != nil {
		return fmt.Errorf("deleting policy %s: %w", name, err)
	}
	return nil
}

// PoliciesRevision returns the policy change counter.
func (db *DB) PoliciesRevision(ctx context.Context) (int64, error) {
	var n int64
	if err := db.read.QueryRowContext(ctx, db.policyQ().revision).Scan(&n); err != nil {
		return 0, fmt.Errorf("reading policies revision: %w", err)
	}
	return n, nil
}
