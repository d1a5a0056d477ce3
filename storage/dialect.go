package storage

import (
	"strconv"
	"strings"
)

// dialect is everything that differs between the two backends. The SQL in
// this package is written once, with "?" placeholders and the type tokens
// below; a dialect turns it into what its server accepts, once, when the
// database is opened. The one statement only PostgreSQL has is the batch
// certificate insert (queries.insertCertBatch), an optimisation whose
// absence SQLite does not feel.
type dialect struct {
	name string
	// types replaces the type tokens used in migrations: {blob}, {seq_pk}
	// (an auto-increment primary key column) and {bytes_text} (text that
	// compares and sorts byte by byte, as SQLite's TEXT does).
	types *strings.Replacer
	// migrationLock, when set, is run first in every migration transaction
	// to serialise concurrent Opens of one database.
	migrationLock string
	// dollarParams reports whether placeholders are $1, $2, ... rather than ?.
	dollarParams bool
}

var (
	sqliteDialect = dialect{
		name: "sqlite",
		types: strings.NewReplacer(
			"{blob}", "BLOB",
			"{seq_pk}", "INTEGER PRIMARY KEY AUTOINCREMENT",
			"{bytes_text}", "TEXT",
		),
	}
	postgresDialect = dialect{
		name: "postgres",
		types: strings.NewReplacer(
			"{blob}", "BYTEA",
			"{seq_pk}", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
			"{bytes_text}", `TEXT COLLATE "C"`,
		),
		// The single-key advisory lock space is used only here; TryLock uses
		// the two-key space, so no lock name can collide with it. Scoped to
		// the schema so that deployments sharing one database in different
		// schemas do not wait on each other.
		migrationLock: "SELECT pg_advisory_xact_lock(hashtext('sigil.schema_migrations.' || current_schema()))",
		dollarParams:  true,
	}
)

// sql prepares one statement for this dialect: type tokens replaced and
// placeholders rebound.
func (d dialect) sql(q string) string {
	q = d.types.Replace(q)
	if d.dollarParams {
		q = rebindDollar(q)
	}
	return q
}

// rebindDollar rewrites each "?" placeholder outside a quoted string or
// identifier to $1, $2, ... in order.
func rebindDollar(q string) string {
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	var quote byte // the open quote character, or 0
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case quote != 0:
			// A doubled quote inside a literal closes and reopens it,
			// which this toggling handles without special casing.
			if c == quote {
				quote = 0
			}
			b.WriteByte(c)
		case c == '\'' || c == '"':
			quote = c
			b.WriteByte(c)
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Filter shapes index the prepared variants of the certificate listing
// query, so that each combination of filters is a static statement the
// planner can use an index for.
const (
	filterIssuer = 1 << iota
	filterRevoked
	filterValidAt
	filterShapes = 1 << iota
)

const certColumns = `seq, serial, issuer_id, profile, subject, not_before, not_after, der, revoked_at, revocation_reason`

// queries holds every statement the store runs, prepared for one dialect.
type queries struct {
	loadBarrier   string
	initBarrier   string
	updateKeyring string
	barrierExists string

	getSealed string
	putSealed string

	putIssuer   string
	listIssuers string

	insertCert string
	// insertCertBatch, when set, inserts many certificates in one
	// statement from one array parameter per column.
	insertCertBatch string
	getCert         string
	revokeCert      string
	certExists      string
	listCerts       [filterShapes]string

	nextCRLNumber string
	putCRL        string
	getCRL        string

	tryLock string
	unlock  string

	createMigrations string
	maxVersion       string
	hasVersion       string
	recordVersion    string
}

func newQueries(d dialect) queries {
	q := queries{
		loadBarrier: d.sql(`SELECT seal_type, seal_config, keyring, generation FROM barrier WHERE id = 1`),
		initBarrier: d.sql(`INSERT INTO barrier (id, seal_type, seal_config, keyring, generation)
			VALUES (1, ?, ?, ?, 1) ON CONFLICT (id) DO NOTHING`),
		updateKeyring: d.sql(`UPDATE barrier SET keyring = ?, generation = generation + 1
			WHERE id = 1 AND generation = ?`),
		barrierExists: d.sql(`SELECT COUNT(*) FROM barrier WHERE id = 1`),

		getSealed: d.sql(`SELECT ciphertext FROM sealed WHERE name = ?`),
		putSealed: d.sql(`INSERT INTO sealed (name, ciphertext) VALUES (?, ?)
			ON CONFLICT (name) DO UPDATE SET ciphertext = excluded.ciphertext`),

		putIssuer: d.sql(`INSERT INTO issuers (id, kind, cert_der, key_ref, not_before, not_after, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, cert_der = excluded.cert_der,
				key_ref = excluded.key_ref, not_before = excluded.not_before,
				not_after = excluded.not_after, created_at = excluded.created_at`),
		listIssuers: d.sql(`SELECT id, kind, cert_der, key_ref, not_before, not_after, created_at
			FROM issuers ORDER BY not_before NULLS FIRST, id`),

		insertCert: d.sql(`INSERT INTO certificates
			(serial, issuer_id, profile, subject, not_before, not_after, der, revoked_at, revocation_reason)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (serial) DO NOTHING`),
		getCert: d.sql(`SELECT ` + certColumns + ` FROM certificates WHERE serial = ?`),
		revokeCert: d.sql(`UPDATE certificates SET revoked_at = ?, revocation_reason = ?
			WHERE serial = ? AND revoked_at IS NULL RETURNING ` + certColumns),
		certExists: d.sql(`SELECT COUNT(*) FROM certificates WHERE serial = ?`),

		nextCRLNumber: d.sql(`INSERT INTO crl_numbers (issuer_id, number) VALUES (?, 1)
			ON CONFLICT (issuer_id) DO UPDATE SET number = crl_numbers.number + 1
			RETURNING number`),
		putCRL: d.sql(`INSERT INTO crls (issuer_id, number, this_update, next_update, der)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (issuer_id) DO UPDATE SET number = excluded.number,
				this_update = excluded.this_update, next_update = excluded.next_update,
				der = excluded.der
			WHERE crls.number < excluded.number`),
		getCRL: d.sql(`SELECT number, this_update, next_update, der FROM crls WHERE issuer_id = ?`),

		createMigrations: d.sql(`CREATE TABLE IF NOT EXISTS schema_migrations (
			version BIGINT PRIMARY KEY,
			applied_at BIGINT NOT NULL)`),
		maxVersion:    d.sql(`SELECT MAX(version) FROM schema_migrations`),
		hasVersion:    d.sql(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`),
		recordVersion: d.sql(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`),
	}
	if d.name == postgresDialect.name {
		// Two-key advisory locks: the schema and the lock name. A session
		// lock, held by the connection until unlocked or the session ends.
		q.tryLock = d.sql(`SELECT pg_try_advisory_lock(hashtext(current_schema()), hashtext(?))`)
		q.unlock = d.sql(`SELECT pg_advisory_unlock(hashtext(current_schema()), hashtext(?))`)
	}
	if d.name == postgresDialect.name {
		// Rows are inserted in array order, so Seq follows it.
		q.insertCertBatch = d.sql(`INSERT INTO certificates
			(serial, issuer_id, profile, subject, not_before, not_after, der, revoked_at, revocation_reason)
			SELECT serial, issuer_id, profile, subject, not_before, not_after, der, revoked_at, revocation_reason
			FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::bigint[], ?::bigint[], ?::bytea[], ?::bigint[], ?::bigint[])
				WITH ORDINALITY AS c(serial, issuer_id, profile, subject, not_before, not_after, der, revoked_at, revocation_reason, ord)
			ORDER BY ord
			ON CONFLICT (serial) DO NOTHING`)
	}
	for shape := range filterShapes {
		q.listCerts[shape] = d.sql(listCertsSQL(shape))
	}
	return q
}

// listCertsSQL builds the listing query for one filter shape. Its
// parameters are, in order: AfterSeq, then IssuerID and ValidAt when the
// shape has them, then the limit.
func listCertsSQL(shape int) string {
	var b strings.Builder
	b.WriteString(`SELECT ` + certColumns + ` FROM certificates WHERE seq > ?`)
	if shape&filterIssuer != 0 {
		b.WriteString(` AND issuer_id = ?`)
	}
	if shape&filterRevoked != 0 {
		b.WriteString(` AND revoked_at IS NOT NULL`)
	}
	if shape&filterValidAt != 0 {
		b.WriteString(` AND not_after > ?`)
	}
	b.WriteString(` ORDER BY seq LIMIT ?`)
	return b.String()
}
