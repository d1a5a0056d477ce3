package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// migration is one versioned schema change. Its statements are written
// once with the dialect's type tokens ({blob}, {seq_pk}) and "?"
// placeholders; where the dialects would need genuinely different SQL, the
// difference belongs in the dialect, not in a second copy of the migration.
type migration struct {
	version int64
	name    string
	stmts   []string
}

// migrations is the schema history, in version order. Never edit an entry
// that has shipped: append a new one.
var migrations = []migration{
	{
		version: 1,
		name:    "initial schema",
		stmts: []string{
			// The barrier's single row; id is always 1.
			`CREATE TABLE barrier (
				id INTEGER PRIMARY KEY CHECK (id = 1),
				seal_type TEXT NOT NULL,
				seal_config {blob} NOT NULL,
				keyring {blob} NOT NULL,
				generation BIGINT NOT NULL)`,
			`CREATE TABLE sealed (
				name TEXT PRIMARY KEY,
				ciphertext {blob} NOT NULL)`,
			// Timestamps are unix nanoseconds; NULL stands for the zero time.
			`CREATE TABLE issuers (
				id TEXT PRIMARY KEY,
				kind TEXT NOT NULL,
				cert_der {blob} NOT NULL,
				key_ref TEXT NOT NULL,
				not_before BIGINT,
				not_after BIGINT,
				created_at BIGINT)`,
			`CREATE TABLE certificates (
				seq {seq_pk},
				serial TEXT NOT NULL UNIQUE,
				issuer_id TEXT NOT NULL,
				profile TEXT NOT NULL,
				subject TEXT NOT NULL,
				not_before BIGINT,
				not_after BIGINT,
				der {blob} NOT NULL,
				revoked_at BIGINT,
				revocation_reason INTEGER NOT NULL DEFAULT 0)`,
			`CREATE INDEX certificates_issuer ON certificates (issuer_id, seq)`,
			`CREATE INDEX certificates_revoked ON certificates (seq) WHERE revoked_at IS NOT NULL`,
			`CREATE TABLE crl_numbers (
				issuer_id TEXT PRIMARY KEY,
				number BIGINT NOT NULL)`,
			`CREATE TABLE crls (
				issuer_id TEXT PRIMARY KEY,
				number BIGINT NOT NULL,
				this_update BIGINT,
				next_update BIGINT,
				der {blob} NOT NULL)`,
		},
	},
	{
		version: 2,
		name:    "transparency log",
		stmts: []string{
			// The log's single state row; id is always 1. size 0 with an
			// empty checkpoint is the log before its first append.
			`CREATE TABLE tlog_state (
				id INTEGER PRIMARY KEY CHECK (id = 1),
				size BIGINT NOT NULL,
				checkpoint {blob} NOT NULL)`,
			`INSERT INTO tlog_state (id, size, checkpoint) VALUES (1, 0, CAST('' AS {blob}))`,
			// Hash tiles and entry bundles by their tlog-tiles path without
			// the partial suffix; width is 1..256, the widest written.
			`CREATE TABLE tlog_tiles (
				path TEXT PRIMARY KEY,
				width INTEGER NOT NULL CHECK (width BETWEEN 1 AND 256),
				data {blob} NOT NULL)`,
		},
	},
	{
		version: 3,
		name:    "registration entries",
		stmts: []string{
			// selectors and dns_names are JSON arrays of strings; selectors
			// are stored sorted and without duplicates, so one selector set
			// has one spelling and the unique index below refuses a second
			// entry with the same (SPIFFE ID, parent, selector set).
			// parent_id is '' when the entry has no parent. TTLs are
			// nanoseconds; timestamps are unix nanoseconds, NULL for zero.
			`CREATE TABLE registration_entries (
				id TEXT PRIMARY KEY,
				spiffe_id TEXT NOT NULL,
				parent_id TEXT NOT NULL,
				selectors TEXT NOT NULL,
				x509_svid_ttl BIGINT NOT NULL,
				jwt_svid_ttl BIGINT NOT NULL,
				dns_names TEXT NOT NULL,
				hint TEXT NOT NULL,
				created_at BIGINT,
				updated_at BIGINT,
				revision BIGINT NOT NULL)`,
			`CREATE UNIQUE INDEX registration_entries_identity
				ON registration_entries (spiffe_id, parent_id, selectors)`,
			// One row per (entry, selector), so that listing by selector
			// uses an index instead of searching the JSON.
			`CREATE TABLE registration_entry_selectors (
				entry_id TEXT NOT NULL,
				selector TEXT NOT NULL,
				PRIMARY KEY (entry_id, selector))`,
			`CREATE INDEX registration_entry_selectors_selector
				ON registration_entry_selectors (selector, entry_id)`,
			// The single counter row (id is always 1) bumped by every
			// create, update and delete of an entry.
			`CREATE TABLE registration_entries_revision (
				id INTEGER PRIMARY KEY CHECK (id = 1),
				revision BIGINT NOT NULL)`,
			`INSERT INTO registration_entries_revision (id, revision) VALUES (1, 0)`,
		},
	},
	{
		version: 4,
		name:    "secret store",
		stmts: []string{
			// One head per secret: its metadata, sealed by the secret store,
			// and a revision every change increments (compare-and-swap).
			// Paths sort byte by byte so that a prefix is a range.
			`CREATE TABLE kv_heads (
				mount {bytes_text} NOT NULL,
				path {bytes_text} NOT NULL,
				meta {blob} NOT NULL,
				revision BIGINT NOT NULL,
				PRIMARY KEY (mount, path))`,
			// One row per version; value is the sealed data, NULL once the
			// version is destroyed.
			`CREATE TABLE kv_versions (
				mount {bytes_text} NOT NULL,
				path {bytes_text} NOT NULL,
				version BIGINT NOT NULL,
				value {blob},
				PRIMARY KEY (mount, path, version))`,
			// Access policies, as the YAML documents operators wrote; not
			// secret, so not sealed.
			`CREATE TABLE policies (
				name TEXT PRIMARY KEY,
				document TEXT NOT NULL,
				updated_at BIGINT NOT NULL,
				revision BIGINT NOT NULL)`,
			// The single counter row bumped by every policy change.
			`CREATE TABLE policies_revision (
				id INTEGER PRIMARY KEY CHECK (id = 1),
				revision BIGINT NOT NULL)`,
			`INSERT INTO policies_revision (id, revision) VALUES (1, 0)`,
		},
	},
	{
		version: 5,
		name:    "database credentials and leases",
		stmts: []string{
			// A database connection's configuration, sealed (it holds the
			// admin password).
			`CREATE TABLE db_connections (
				name TEXT PRIMARY KEY,
				config {blob} NOT NULL,
				updated_at BIGINT NOT NULL)`,
			// Dynamic and static roles: statements and TTLs as JSON; not
			// secret.
			`CREATE TABLE db_roles (
				name TEXT PRIMARY KEY,
				kind TEXT NOT NULL,
				config TEXT NOT NULL,
				updated_at BIGINT NOT NULL)`,
			// A static role's password state: current and pending
			// passwords sealed; revision for compare-and-swap.
			`CREATE TABLE db_static_state (
				role TEXT PRIMARY KEY,
				password {blob},
				pending {blob},
				last_rotated BIGINT,
				next_rotation BIGINT,
				revision BIGINT NOT NULL)`,
			// Leases: what must be revoked, and when. data is sealed.
			`CREATE TABLE leases (
				id {bytes_text} PRIMARY KEY,
				owner TEXT NOT NULL,
				issued_at BIGINT NOT NULL,
				expires_at BIGINT NOT NULL,
				max_expires_at BIGINT NOT NULL,
				data {blob} NOT NULL,
				attempts BIGINT NOT NULL,
				next_attempt BIGINT NOT NULL,
				last_error TEXT NOT NULL)`,
			`CREATE INDEX leases_due ON leases (next_attempt)`,
		},
	},
	{
		version: 6,
		name:    "acme",
		stmts: []string{
			// ACME objects are JSON documents owned by the acme package,
			// each with a revision for compare-and-swap. Accounts are
			// found by their key's thumbprint; authorizations by account
			// and identifier, for reuse.
			`CREATE TABLE acme_accounts (
				id TEXT PRIMARY KEY,
				thumbprint TEXT NOT NULL UNIQUE,
				data TEXT NOT NULL,
				revision BIGINT NOT NULL)`,
			`CREATE TABLE acme_orders (
				id TEXT PRIMARY KEY,
				account_id TEXT NOT NULL,
				data TEXT NOT NULL,
				revision BIGINT NOT NULL)`,
			`CREATE TABLE acme_authzs (
				id TEXT PRIMARY KEY,
				account_id TEXT NOT NULL,
				identifier TEXT NOT NULL,
				expires_at BIGINT NOT NULL,
				data TEXT NOT NULL,
				revision BIGINT NOT NULL)`,
			`CREATE INDEX acme_authzs_reuse ON acme_authzs (account_id, identifier, expires_at)`,
			`CREATE TABLE acme_nonces (
				nonce TEXT PRIMARY KEY,
				expires_at BIGINT NOT NULL)`,
			`CREATE INDEX acme_nonces_expiry ON acme_nonces (expires_at)`,
		},
	},
	{
		version: 7,
		name:    "acme nonces in memory",
		stmts: []string{
			// Nonces moved to each node's memory: two database writes per
			// ACME request were the server's bottleneck, and a nonce need
			// not outlive its node.
			`DROP TABLE acme_nonces`,
		},
	},
	{
		version: 8,
		name:    "agents",
		stmts: []string{
			// Join tokens by the SHA-256 of the token (hex), never the
			// token itself; node_id is '' when the agent names its node.
			// groups is a JSON array of the node groups it admits into.
			`CREATE TABLE agent_join_tokens (
				token_hash TEXT PRIMARY KEY,
				node_id TEXT NOT NULL,
				groups TEXT NOT NULL,
				created_at BIGINT NOT NULL,
				expires_at BIGINT NOT NULL)`,
			`CREATE INDEX agent_join_tokens_expiry ON agent_join_tokens (expires_at)`,
			// One row per node that has attested. evicted_at is NULL while
			// the agent is in good standing; serial is its current SVID;
			// selectors (a JSON array) are the node selectors attestation
			// found.
			`CREATE TABLE agents (
				id TEXT PRIMARY KEY,
				spiffe_id TEXT NOT NULL UNIQUE,
				attestation TEXT NOT NULL,
				selectors TEXT NOT NULL,
				serial TEXT NOT NULL,
				not_after BIGINT,
				attested_at BIGINT,
				updated_at BIGINT,
				evicted_at BIGINT,
				revision BIGINT NOT NULL)`,
			// Every certificate signed for an agent (its own SVIDs and its
			// workloads'), so that an eviction can revoke them all.
			`CREATE TABLE agent_certificates (
				serial TEXT PRIMARY KEY,
				agent_id TEXT NOT NULL,
				not_after BIGINT NOT NULL)`,
			`CREATE INDEX agent_certificates_agent ON agent_certificates (agent_id, not_after)`,
			// The single counter row bumped by every agent change, so that
			// every node notices an eviction made on another.
			`CREATE TABLE agents_revision (
				id INTEGER PRIMARY KEY CHECK (id = 1),
				revision BIGINT NOT NULL)`,
			`INSERT INTO agents_revision (id, revision) VALUES (1, 0)`,
		},
	},
	{
		version: 9,
		name:    "acme orders by account",
		stmts: []string{
			// An account's orders list (RFC 8555 §7.1.2.1), paged by ID.
			`CREATE INDEX acme_orders_account ON acme_orders (account_id, id)`,
		},
	},
}

// LatestSchemaVersion is the highest schema version this binary knows.
func LatestSchemaVersion() int64 { return migrations[len(migrations)-1].version }

// migrate brings the schema up to LatestSchemaVersion, one transaction per
// migration. Concurrent callers on one database are serialised (PostgreSQL
// by an advisory transaction lock, SQLite by its single writer), so each
// migration is applied exactly once.
func (db *DB) migrate(ctx context.Context) error {
	latest := LatestSchemaVersion()
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if err := db.lockMigrations(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, db.q.createMigrations); err != nil {
			return fmt.Errorf("creating schema_migrations: %w", err)
		}
		var current sql.NullInt64
		if err := tx.QueryRowContext(ctx, db.q.maxVersion).Scan(&current); err != nil {
			return fmt.Errorf("reading schema version: %w", err)
		}
		if current.Int64 > latest {
			return fmt.Errorf("database is at schema version %d, this binary knows up to %d: %w",
				current.Int64, latest, ErrSchemaTooNew)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, m := range migrations {
		if err := db.applyMigration(ctx, m); err != nil {
			return fmt.Errorf("applying migration %d (%s): %w", m.version, m.name, err)
		}
	}
	return nil
}

func (db *DB) applyMigration(ctx context.Context, m migration) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		if err := db.lockMigrations(ctx, tx); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, db.q.hasVersion, m.version).Scan(&n); err != nil {
			return fmt.Errorf("checking whether applied: %w", err)
		}
		if n > 0 {
			return nil
		}
		for _, stmt := range m.stmts {
			if _, err := tx.ExecContext(ctx, db.dialect.sql(stmt)); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, db.q.recordVersion, m.version, db.clock().UnixNano()); err != nil {
			return fmt.Errorf("recording version: %w", err)
		}
		db.log.Info("applied schema migration", "backend", db.dialect.name, "version", m.version, "name", m.name)
		return nil
	})
}

func (db *DB) lockMigrations(ctx context.Context, tx *sql.Tx) error {
	if db.dialect.migrationLock == "" {
		return nil
	}
	if _, err := tx.ExecContext(ctx, db.dialect.migrationLock); err != nil {
		return fmt.Errorf("taking the migration lock: %w", err)
	}
	return nil
}
