package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/mattn/go-sqlite3"
)

// Registration entries are one row each in registration_entries, with the
// selector set and the DNS names as JSON arrays of strings: the selectors
// sorted and deduplicated, so that the unique index on (spiffe_id,
// parent_id, selectors) refuses a second entry with the same identity,
// parent and selector set. The child table registration_entry_selectors
// repeats each selector as a row, only so that ListEntries can filter by
// selector through an index; it is written in the same transaction.

const entryColumns = `id, spiffe_id, parent_id, selectors, x509_svid_ttl, jwt_svid_ttl, dns_names, hint, created_at, updated_at, revision`

// Filter shapes of the entry listing query.
const (
	entryFilterSPIFFEID = 1 << iota
	entryFilterSelector
	entryFilterShapes = 1 << iota
)

// entryQueries are the registration entries' statements for one dialect.
type entryQueries struct {
	create         string
	get            string
	list           [entryFilterShapes]string
	update         string
	exists         string
	identityTaken  string
	delete         string
	addSelector    string
	deleteSelector string
	bumpRevision   string
	revision       string
}

func newEntryQueries(d dialect) entryQueries {
	q := entryQueries{
		// ON CONFLICT without a target covers both the primary key and
		// the identity index: either makes the insert a no-op, which
		// expectOneRow reports as ErrConflict.
		create: d.sql(`INSERT INTO registration_entries (` + entryColumns + `)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`),
		get: d.sql(`SELECT ` + entryColumns + ` FROM registration_entries WHERE id = ?`),
		// The compare-and-swap on revision. Under PostgreSQL the UPDATE
		// waits for a concurrent updater's row lock and then re-checks the
		// revision, so one of two updaters from the same revision wins.
		update: d.sql(`UPDATE registration_entries SET spiffe_id = ?, parent_id = ?, selectors = ?,
			x509_svid_ttl = ?, jwt_svid_ttl = ?, dns_names = ?, hint = ?, updated_at = ?,
			revision = revision + 1
			WHERE id = ? AND revision = ?`),
		exists: d.sql(`SELECT COUNT(*) FROM registration_entries WHERE id = ?`),
		identityTaken: d.sql(`SELECT COUNT(*) FROM registration_entries
			WHERE spiffe_id = ? AND parent_id = ? AND selectors = ? AND id <> ?`),
		delete:         d.sql(`DELETE FROM registration_entries WHERE id = ?`),
		addSelector:    d.sql(`INSERT INTO registration_entry_selectors (entry_id, selector) VALUES (?, ?)`),
		deleteSelector: d.sql(`DELETE FROM registration_entry_selectors WHERE entry_id = ?`),
		bumpRevision:   d.sql(`UPDATE registration_entries_revision SET revision = revision + 1 WHERE id = 1`),
		revision:       d.sql(`SELECT revision FROM registration_entries_revision WHERE id = 1`),
	}
	for shape := range entryFilterShapes {
		q.list[shape] = d.sql(listEntriesSQL(shape))
	}
	return q
}

// listEntriesSQL builds the listing query for one filter shape. Its
// parameters are, in order: AfterID, then SPIFFEID and Selector when the
// shape has them, then the limit.
func listEntriesSQL(shape int) string {
	var b strings.Builder
	b.WriteString(`SELECT ` + entryColumns + ` FROM registration_entries WHERE id > ?`)
	if shape&entryFilterSPIFFEID != 0 {
		b.WriteString(` AND spiffe_id = ?`)
	}
	if shape&entryFilterSelector != 0 {
		b.WriteString(` AND id IN (SELECT entry_id FROM registration_entry_selectors WHERE selector = ?)`)
	}
	b.WriteString(` ORDER BY id LIMIT ?`)
	return b.String()
}

var (
	sqliteEntryQueries   = newEntryQueries(sqliteDialect)
	postgresEntryQueries = newEntryQueries(postgresDialect)
)

func (db *DB) entryQ() *entryQueries {
	if db.dialect.name == postgresDialect.name {
		return &postgresEntryQueries
	}
	return &sqliteEntryQueries
}

// entryRow is a RegistrationEntry in its stored form.
type entryRow struct {
	selectorList         []string
	selectors, dnsNames  string
	createdAt, updatedAt sql.NullInt64
}

// encodeEntry checks what the store relies on and converts e to its
// stored form.
func encodeEntry(e RegistrationEntry) (entryRow, error) {
	if e.ID == "" {
		return entryRow{}, errors.New("entry has no ID")
	}
	if e.SPIFFEID == "" {
		return entryRow{}, errors.New("entry has no SPIFFE ID")
	}
	sel := slices.Clone(e.Selectors)
	slices.Sort(sel)
	sel = slices.Compact(sel)
	if sel == nil {
		sel = []string{}
	}
	dns := e.DNSNames
	if dns == nil {
		dns = []string{}
	}
	selJSON, err := json.Marshal(sel)
	if err != nil {
		return entryRow{}, fmt.Errorf("encoding selectors: %w", err)
	}
	dnsJSON, err := json.Marshal(dns)
	if err != nil {
		return entryRow{}, fmt.Errorf("encoding DNS names: %w", err)
	}
	times, err := nanosAll(e.CreatedAt, e.UpdatedAt)
	if err != nil {
		return entryRow{}, err
	}
	return entryRow{
		selectorList: sel,
		selectors:    string(selJSON),
		dnsNames:     string(dnsJSON),
		createdAt:    times[0],
		updatedAt:    times[1],
	}, nil
}

func scanEntry(r rowScanner) (RegistrationEntry, error) {
	var (
		e             RegistrationEntry
		sel, dns      string
		x509TTL, jTTL int64
		created, upd  sql.NullInt64
	)
	if err := r.Scan(&e.ID, &e.SPIFFEID, &e.ParentID, &sel, &x509TTL, &jTTL, &dns, &e.Hint, &created, &upd, &e.Revision); err != nil {
		return RegistrationEntry{}, err
	}
	if err := json.Unmarshal([]byte(sel), &e.Selectors); err != nil {
		return RegistrationEntry{}, fmt.Errorf("decoding selectors of entry %s: %w", e.ID, err)
	}
	if err := json.Unmarshal([]byte(dns), &e.DNSNames); err != nil {
		return RegistrationEntry{}, fmt.Errorf("decoding DNS names of entry %s: %w", e.ID, err)
	}
	e.X509SVIDTTL, e.JWTSVIDTTL = time.Duration(x509TTL), time.Duration(jTTL)
	e.CreatedAt, e.UpdatedAt = fromNanos(created), fromNanos(upd)
	return e, nil
}

// isUniqueViolation reports whether err is a unique or primary key
// constraint violation in either backend.
func isUniqueViolation(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.ExtendedCode == sqlite3.ErrConstraintUnique || se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// writeEntrySelectors replaces the entry's rows in the selector table and
// bumps the entries revision.
func (db *DB) writeEntrySelectors(ctx context.Context, tx *sql.Tx, id string, sel []string) error {
	q := db.entryQ()
	if _, err := tx.ExecContext(ctx, q.deleteSelector, id); err != nil {
		return fmt.Errorf("clearing selectors: %w", err)
	}
	for _, s := range sel {
		if _, err := tx.ExecContext(ctx, q.addSelector, id, s); err != nil {
			return fmt.Errorf("writing selector: %w", err)
		}
	}
	return db.bumpEntriesRevision(ctx, tx)
}

func (db *DB) bumpEntriesRevision(ctx context.Context, tx *sql.Tx) error {
	res, err := tx.ExecContext(ctx, db.entryQ().bumpRevision)
	if err != nil {
		return fmt.Errorf("bumping entries revision: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("bumping entries revision: %d rows changed, %v", n, err)
	}
	return nil
}

// CreateEntry stores a new entry; ErrConflict if its ID, or its SPIFFE ID,
// parent ID and selector set together, are already stored.
func (db *DB) CreateEntry(ctx context.Context, e RegistrationEntry) error {
	row, err := encodeEntry(e)
	if err != nil {
		return fmt.Errorf("creating registration entry %s: %w", e.ID, err)
	}
	q := db.entryQ()
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, q.create, e.ID, e.SPIFFEID, e.ParentID, row.selectors,
			int64(e.X509SVIDTTL), int64(e.JWTSVIDTTL), row.dnsNames, e.Hint, row.createdAt, row.updatedAt, e.Revision)
		if err != nil {
			return err
		}
		if err := expectOneRow(res); err != nil {
			return fmt.Errorf("the ID or the (SPIFFE ID, parent, selectors) is taken: %w", err)
		}
		return db.writeEntrySelectors(ctx, tx, e.ID, row.selectorList)
	})
	if err != nil {
		if isUniqueViolation(err) {
			err = fmt.Errorf("%w: %w", ErrConflict, err)
		}
		return fmt.Errorf("creating registration entry %s: %w", e.ID, err)
	}
	return nil
}

// GetEntry returns the entry with the ID, or ErrNotFound.
func (db *DB) GetEntry(ctx context.Context, id string) (RegistrationEntry, error) {
	e, err := scanEntry(db.read.QueryRowContext(ctx, db.entryQ().get, id))
	if errors.Is(err, sql.ErrNoRows) {
		return RegistrationEntry{}, fmt.Errorf("reading registration entry %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return RegistrationEntry{}, fmt.Errorf("reading registration entry %s: %w", id, err)
	}
	return e, nil
}

// ListEntries returns the entries f selects, in ID order.
func (db *DB) ListEntries(ctx context.Context, f EntryFilter) ([]RegistrationEntry, error) {
	limit := listLimit(f.Limit)
	shape := 0
	args := []any{f.AfterID}
	if f.SPIFFEID != "" {
		shape |= entryFilterSPIFFEID
		args = append(args, f.SPIFFEID)
	}
	if f.Selector != "" {
		shape |= entryFilterSelector
		args = append(args, f.Selector)
	}
	args = append(args, int64(limit))
	return queryAll(ctx, db.read, "listing registration entries", db.entryQ().list[shape], args, min(limit, 64), scanEntry)
}

// UpdateEntry replaces the entry if its stored revision is expectRevision.
func (db *DB) UpdateEntry(ctx context.Context, e RegistrationEntry, expectRevision int64) error {
	row, err := encodeEntry(e)
	if err != nil {
		return fmt.Errorf("updating registration entry %s: %w", e.ID, err)
	}
	q := db.entryQ()
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		var taken int
		if err := tx.QueryRowContext(ctx, q.identityTaken, e.SPIFFEID, e.ParentID, row.selectors, e.ID).Scan(&taken); err != nil {
			return fmt.Errorf("checking the entry's identity: %w", err)
		}
		if taken > 0 {
			return fmt.Errorf("another entry has the same (SPIFFE ID, parent, selectors): %w", ErrConflict)
		}
		res, err := tx.ExecContext(ctx, q.update, e.SPIFFEID, e.ParentID, row.selectors,
			int64(e.X509SVIDTTL), int64(e.JWTSVIDTTL), row.dnsNames, e.Hint, row.updatedAt, e.ID, expectRevision)
		if err != nil {
			return err
		}
		if err := expectOneRow(res); err != nil {
			var n int
			if err := tx.QueryRowContext(ctx, q.exists, e.ID).Scan(&n); err != nil {
				return fmt.Errorf("checking whether the entry exists: %w", err)
			}
			if n == 0 {
				return ErrNotFound
			}
			return fmt.Errorf("stored revision is not %d: %w", expectRevision, ErrConflict)
		}
		return db.writeEntrySelectors(ctx, tx, e.ID, row.selectorList)
	})
	if err != nil {
		if isUniqueViolation(err) {
			err = fmt.Errorf("%w: %w", ErrConflict, err)
		}
		return fmt.Errorf("updating registration entry %s: %w", e.ID, err)
	}
	return nil
}

// DeleteEntry removes the entry, or returns ErrNotFound.
func (db *DB) DeleteEntry(ctx context.Context, id string) error {
	q := db.entryQ()
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, q.delete, id)
		if err != nil {
			return err
		}
		if err := expectOneRow(res); err != nil {
			return ErrNotFound
		}
		if _, err := tx.ExecContext(ctx, q.deleteSelector, id); err != nil {
			return fmt.Errorf("deleting selectors: %w", err)
		}
		return db.bumpEntriesRevision(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("deleting registration entry %s: %w", id, err)
	}
	return nil
}

// EntriesRevision returns the counter of entry changes.
func (db *DB) EntriesRevision(ctx context.Context) (int64, error) {
	var rev int64
	if err := db.read.QueryRowContext(ctx, db.entryQ().revision).Scan(&rev); err != nil {
		return 0, fmt.Errorf("reading registration entries revision: %w", err)
	}
	return rev, nil
}
