package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures Open.
type Options struct {
	// Backend is "sqlite" or "postgres". Default "sqlite".
	Backend string
	// Path is the SQLite database file, created with mode 0600 if absent.
	// Required for "sqlite".
	Path string
	// DSN is the PostgreSQL connection string or URL, without a password.
	// Required for "postgres".
	DSN string
	// Password, when set, is the PostgreSQL password. It is never logged
	// nor put in an error. Default: none.
	Password string
	// MaxConns caps the PostgreSQL connection pool. Default 10. Locks taken
	// with TryLock hold connections of their own, outside this pool.
	MaxConns int
	// Logger receives migration progress; it never sees a stored value.
	// Default: discard.
	Logger *slog.Logger
	// Now is the clock recording when migrations were applied. Default
	// time.Now.
	Now func() time.Time
}

// DB is a Store over database/sql, for either backend.
type DB struct {
	dialect dialect
	q       queries
	log     *slog.Logger
	clock   func() time.Time

	// write runs every write. Under SQLite it is a single connection whose
	// transactions begin IMMEDIATE, so writers queue here instead of
	// failing with SQLITE_BUSY; under PostgreSQL it is the pool.
	write *sql.DB
	// read runs reads: a separate pool of query-only connections under
	// SQLite (WAL readers never block the writer), the pool under PostgreSQL.
	read *sql.DB
	// locker takes TryLock's locks.
	locker locker
	// stopBackground stops backend-specific background work (SQLite's
	// checkpointer) before the pools close; nil when there is none.
	stopBackground func() error
	// commits counts committed write transactions (SQLite's checkpointer
	// paces itself by it).
	commits atomic.Int64

	// insertStmt is the single-row certificate insert, prepared once on
	// the write pool and reused by every transaction, so a batch does not
	// pay for compiling the statement again. Guarded by insertMu; nil
	// until first used.
	insertMu   sync.Mutex
	insertStmt *sql.Stmt

	mu        sync.Mutex
	held      map[*heldLock]struct{}
	closed    bool
	closeErr  error
	closeOnce sync.Once
}

var _ Store = (*DB)(nil)

// Open connects to the configured backend and migrates its schema to
// LatestSchemaVersion. A database migrated by a newer Sigil is refused
// with ErrSchemaTooNew.
func Open(ctx context.Context, o Options) (*DB, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	clock := o.Now
	if clock == nil {
		clock = time.Now
	}
	var (
		db  *DB
		err error
	)
	switch o.Backend {
	case "", "sqlite":
		db, err = openSQLite(ctx, o)
	case "postgres":
		db, err = openPostgres(ctx, o)
	default:
		return nil, fmt.Errorf("opening storage: unknown backend %q (want \"sqlite\" or \"postgres\")", o.Backend)
	}
	if err != nil {
		return nil, err
	}
	db.log = log
	db.clock = clock
	db.held = make(map[*heldLock]struct{})
	if err := db.migrate(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("migrating %s schema: %w", db.dialect.name, err)
	}
	return db, nil
}

// Backend names the implementation: "sqlite" or "postgres".
func (db *DB) Backend() string { return db.dialect.name }

// Close releases every lock still held through db and closes its
// connections. It is safe to call more than once.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		db.mu.Lock()
		db.closed = true
		locks := make([]*heldLock, 0, len(db.held))
		for l := range db.held {
			locks = append(locks, l)
		}
		db.mu.Unlock()
		var errs []error
		for _, l := range locks {
			errs = append(errs, l.Release())
		}
		errs = append(errs, db.locker.close())
		if db.stopBackground != nil {
			errs = append(errs, db.stopBackground())
		}
		db.insertMu.Lock()
		if db.insertStmt != nil {
			errs = append(errs, db.insertStmt.Close())
		}
		db.insertMu.Unlock()
		if db.read != db.write {
			errs = append(errs, db.read.Close())
		}
		errs = append(errs, db.write.Close())
		if err := errors.Join(errs...); err != nil {
			db.closeErr = fmt.Errorf("closing %s storage: %w", db.dialect.name, err)
		}
	})
	return db.closeErr
}

// inTx runs fn in a write transaction, committing if it returns nil.
func (db *DB) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing: %w", err)
	}
	db.commits.Add(1)
	return nil
}

// LoadBarrier returns the barrier's state, or ErrNotFound.
func (db *DB) LoadBarrier(ctx context.Context) (BarrierState, error) {
	var st BarrierState
	err := db.read.QueryRowContext(ctx, db.q.loadBarrier).Scan(&st.SealType, &st.SealConfig, &st.Keyring, &st.Generation)
	if errors.Is(err, sql.ErrNoRows) {
		return BarrierState{}, fmt.Errorf("loading barrier state: %w", ErrNotFound)
	}
	if err != nil {
		return BarrierState{}, fmt.Errorf("loading barrier state: %w", err)
	}
	return st, nil
}

// InitBarrier stores the first barrier state with Generation 1, or returns
// ErrConflict if there is one already. st.Generation is ignored.
func (db *DB) InitBarrier(ctx context.Context, st BarrierState) error {
	res, err := db.write.ExecContext(ctx, db.q.initBarrier, st.SealType, blob(st.SealConfig), blob(st.Keyring))
	if err != nil {
		return fmt.Errorf("initialising barrier state: %w", err)
	}
	if err := expectOneRow(res); err != nil {
		return fmt.Errorf("initialising barrier state: %w", err)
	}
	return nil
}

// UpdateKeyring replaces the keyring if the stored generation is
// prevGeneration: ErrConflict if it is not, ErrNotFound if the barrier is
// not initialised.
func (db *DB) UpdateKeyring(ctx context.Context, prevGeneration int64, keyring []byte) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, db.q.updateKeyring, blob(keyring), prevGeneration)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 1 {
			return nil
		}
		var exists int
		if err := tx.QueryRowContext(ctx, db.q.barrierExists).Scan(&exists); err != nil {
			return err
		}
		if exists == 0 {
			return ErrNotFound
		}
		return ErrConflict
	})
	if err != nil {
		return fmt.Errorf("updating keyring from generation %d: %w", prevGeneration, err)
	}
	return nil
}

// GetSealed returns the ciphertext stored under name, or ErrNotFound.
func (db *DB) GetSealed(ctx context.Context, name string) ([]byte, error) {
	var ct []byte
	err := db.read.QueryRowContext(ctx, db.q.getSealed, name).Scan(&ct)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("reading sealed %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading sealed %q: %w", name, err)
	}
	return ct, nil
}

// PutSealed creates or replaces the ciphertext stored under name.
func (db *DB) PutSealed(ctx context.Context, name string, ciphertext []byte) error {
	if _, err := db.write.ExecContext(ctx, db.q.putSealed, name, blob(ciphertext)); err != nil {
		return fmt.Errorf("writing sealed %q: %w", name, err)
	}
	return nil
}

// PutIssuer creates or replaces an issuer by ID.
func (db *DB) PutIssuer(ctx context.Context, iss Issuer) error {
	times, err := nanosAll(iss.NotBefore, iss.NotAfter, iss.CreatedAt)
	if err != nil {
		return fmt.Errorf("storing issuer %s: %w", iss.ID, err)
	}
	_, err = db.write.ExecContext(ctx, db.q.putIssuer,
		iss.ID, iss.Kind, blob(iss.CertDER), iss.KeyRef, times[0], times[1], times[2])
	if err != nil {
		return fmt.Errorf("storing issuer %s: %w", iss.ID, err)
	}
	return nil
}

// ListIssuers returns every issuer, oldest NotBefore first (ties by ID).
func (db *DB) ListIssuers(ctx context.Context) ([]Issuer, error) {
	return queryAll(ctx, db.read, "listing issuers", db.q.listIssuers, nil, 4, func(r rowScanner) (Issuer, error) {
		var (
			iss        Issuer
			nb, na, ca sql.NullInt64
		)
		err := r.Scan(&iss.ID, &iss.Kind, &iss.CertDER, &iss.KeyRef, &nb, &na, &ca)
		iss.NotBefore, iss.NotAfter, iss.CreatedAt = fromNanos(nb), fromNanos(na), fromNanos(ca)
		return iss, err
	})
}

// InsertCertificates records certs in one transaction; a serial already
// stored, or repeated within certs, is ErrConflict and nothing is stored.
func (db *DB) InsertCertificates(ctx context.Context, certs []Certificate) error {
	if len(certs) == 0 {
		return nil
	}
	rows := make([]certRow, len(certs))
	for i, c := range certs {
		times, err := nanosAll(c.NotBefore, c.NotAfter, c.RevokedAt)
		if err != nil {
			return fmt.Errorf("inserting certificate %s: %w", c.Serial, err)
		}
		rows[i] = certRow{
			serial: c.Serial, issuerID: c.IssuerID, profile: c.Profile, subject: c.Subject,
			notBefore: times[0], notAfter: times[1], der: blob(c.DER),
			revokedAt: times[2], reason: int64(c.RevocationReason),
		}
	}
	if len(rows) > 1 && db.q.insertCertBatch != "" {
		return db.inTx(ctx, func(tx *sql.Tx) error {
			return db.insertCertBatch(ctx, tx, rows)
		})
	}
	// Prepared before the transaction: under SQLite the write pool is one
	// connection, which the transaction holds.
	prepared, err := db.preparedInsert(ctx)
	if err != nil {
		return err
	}
	return db.inTx(ctx, func(tx *sql.Tx) error {
		return db.insertCertEach(ctx, tx, prepared, rows)
	})
}

// certRow is a Certificate in its stored form.
type certRow struct {
	serial, issuerID, profile, subject string
	notBefore, notAfter, revokedAt     sql.NullInt64
	der                                []byte
	reason                             int64
}

// insertCertEach inserts rows one statement each.
func (db *DB) insertCertEach(ctx context.Context, tx *sql.Tx, prepared *sql.Stmt, rows []certRow) error {
	stmt := tx.StmtContext(ctx, prepared)
	defer stmt.Close()
	for _, r := range rows {
		res, err := stmt.ExecContext(ctx, r.serial, r.issuerID, r.profile, r.subject,
			r.notBefore, r.notAfter, r.der, r.revokedAt, r.reason)
		if err != nil {
			return fmt.Errorf("inserting certificate %s: %w", r.serial, err)
		}
		if err := expectOneRow(res); err != nil {
			return fmt.Errorf("inserting certificate %s: %w", r.serial, err)
		}
	}
	return nil
}

// preparedInsert returns the shared single-row insert statement, preparing
// it on first use. It must not be called inside a write transaction.
func (db *DB) preparedInsert(ctx context.Context) (*sql.Stmt, error) {
	db.insertMu.Lock()
	defer db.insertMu.Unlock()
	if db.insertStmt == nil {
		stmt, err := db.write.PrepareContext(ctx, db.q.insertCert)
		if err != nil {
			return nil, fmt.Errorf("preparing certificate insert: %w", err)
		}
		db.insertStmt = stmt
	}
	return db.insertStmt, nil
}

// insertCertBatch inserts rows in one statement, each column passed as an
// array: one round trip for the batch rather than one per certificate.
func (db *DB) insertCertBatch(ctx context.Context, tx *sql.Tx, rows []certRow) error {
	var (
		serials, issuers, profiles, subjects = make([]string, len(rows)), make([]string, len(rows)), make([]string, len(rows)), make([]string, len(rows))
		notBefores, notAfters, revokedAts    = make([]*int64, len(rows)), make([]*int64, len(rows)), make([]*int64, len(rows))
		ders                                 = make([][]byte, len(rows))
		reasons                              = make([]int64, len(rows))
	)
	for i, r := range rows {
		serials[i], issuers[i], profiles[i], subjects[i] = r.serial, r.issuerID, r.profile, r.subject
		notBefores[i], notAfters[i], revokedAts[i] = nullableInt(r.notBefore), nullableInt(r.notAfter), nullableInt(r.revokedAt)
		ders[i], reasons[i] = r.der, r.reason
	}
	res, err := tx.ExecContext(ctx, db.q.insertCertBatch,
		serials, issuers, profiles, subjects, notBefores, notAfters, ders, revokedAts, reasons)
	if err != nil {
		return fmt.Errorf("inserting %d certificates: %w", len(rows), err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("inserting %d certificates: %w", len(rows), err)
	}
	if n != int64(len(rows)) {
		return fmt.Errorf("inserting %d certificates: %d serials already present: %w", len(rows), int64(len(rows))-n, ErrConflict)
	}
	return nil
}

func nullableInt(n sql.NullInt64) *int64 {
	if !n.Valid {
		return nil
	}
	return &n.Int64
}

// GetCertificate returns the certificate with the serial, or ErrNotFound.
func (db *DB) GetCertificate(ctx context.Context, serial string) (Certificate, error) {
	c, err := scanCert(db.read.QueryRowContext(ctx, db.q.getCert, serial))
	if errors.Is(err, sql.ErrNoRows) {
		return Certificate{}, fmt.Errorf("reading certificate %s: %w", serial, ErrNotFound)
	}
	if err != nil {
		return Certificate{}, fmt.Errorf("reading certificate %s: %w", serial, err)
	}
	return c, nil
}

// Listing limits of CertificateFilter.
const (
	defaultListLimit = 100
	// MaxListLimit is the most rows one listing returns.
	MaxListLimit = 1000
)

// listLimit applies the listings' default and maximum to a requested limit.
func listLimit(n int) int {
	switch {
	case n <= 0:
		return defaultListLimit
	case n > MaxListLimit:
		return MaxListLimit
	}
	return n
}

// ListCertificates returns the certificates f selects, in Seq order.
func (db *DB) ListCertificates(ctx context.Context, f CertificateFilter) ([]Certificate, error) {
	limit := listLimit(f.Limit)
	shape := 0
	args := []any{f.AfterSeq}
	if f.IssuerID != "" {
		shape |= filterIssuer
		args = append(args, f.IssuerID)
	}
	if f.RevokedOnly {
		shape |= filterRevoked
	}
	if !f.ValidAt.IsZero() {
		validAt, err := nanos(f.ValidAt)
		if err != nil {
			return nil, fmt.Errorf("listing certificates: %w", err)
		}
		shape |= filterValidAt
		args = append(args, validAt)
	}
	args = append(args, int64(limit))

	return queryAll(ctx, db.read, "listing certificates", db.q.listCerts[shape], args, min(limit, 64), scanCert)
}

// queryAll runs a query on pool and scans every row; errors say what was
// being done.
func queryAll[T any](ctx context.Context, pool *sql.DB, what, query string, args []any, sizeHint int, scan func(rowScanner) (T, error)) ([]T, error) {
	rows, err := pool.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	out := make([]T, 0, sizeHint)
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// RevokeCertificate marks the certificate revoked at the given time with
// the RFC 5280 reason code and returns it as stored. ErrNotFound for an
// unknown serial, ErrConflict if it was already revoked.
func (db *DB) RevokeCertificate(ctx context.Context, serial string, at time.Time, reason int) (Certificate, error) {
	if at.IsZero() {
		return Certificate{}, fmt.Errorf("revoking certificate %s: revocation time is zero", serial)
	}
	atNanos, err := nanos(at)
	if err != nil {
		return Certificate{}, fmt.Errorf("revoking certificate %s: %w", serial, err)
	}
	var c Certificate
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		c, err = scanCert(tx.QueryRowContext(ctx, db.q.revokeCert, atNanos, int64(reason), serial))
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var exists int
		if err := tx.QueryRowContext(ctx, db.q.certExists, serial).Scan(&exists); err != nil {
			return err
		}
		if exists == 0 {
			return ErrNotFound
		}
		return ErrConflict
	})
	if err != nil {
		return Certificate{}, fmt.Errorf("revoking certificate %s: %w", serial, err)
	}
	return c, nil
}

// NextCRLNumber increments and returns the issuer's CRL number, starting
// at 1, in one atomic statement.
func (db *DB) NextCRLNumber(ctx context.Context, issuerID string) (int64, error) {
	var n int64
	if err := db.write.QueryRowContext(ctx, db.q.nextCRLNumber, issuerID).Scan(&n); err != nil {
		return 0, fmt.Errorf("allocating CRL number for issuer %s: %w", issuerID, err)
	}
	return n, nil
}

// PutCRL stores crl as its issuer's latest, or returns ErrConflict if the
// stored one has a higher or equal number.
func (db *DB) PutCRL(ctx context.Context, crl CRL) error {
	times, err := nanosAll(crl.ThisUpdate, crl.NextUpdate)
	if err != nil {
		return fmt.Errorf("storing CRL %d for issuer %s: %w", crl.Number, crl.IssuerID, err)
	}
	res, err := db.write.ExecContext(ctx, db.q.putCRL, crl.IssuerID, crl.Number, times[0], times[1], blob(crl.DER))
	if err != nil {
		return fmt.Errorf("storing CRL %d for issuer %s: %w", crl.Number, crl.IssuerID, err)
	}
	if err := expectOneRow(res); err != nil {
		return fmt.Errorf("storing CRL %d for issuer %s: %w", crl.Number, crl.IssuerID, err)
	}
	return nil
}

// GetCRL returns the issuer's latest CRL, or ErrNotFound.
func (db *DB) GetCRL(ctx context.Context, issuerID string) (CRL, error) {
	crl := CRL{IssuerID: issuerID}
	var tu, nu sql.NullInt64
	err := db.read.QueryRowContext(ctx, db.q.getCRL, issuerID).Scan(&crl.Number, &tu, &nu, &crl.DER)
	if errors.Is(err, sql.ErrNoRows) {
		return CRL{}, fmt.Errorf("reading CRL for issuer %s: %w", issuerID, ErrNotFound)
	}
	if err != nil {
		return CRL{}, fmt.Errorf("reading CRL for issuer %s: %w", issuerID, err)
	}
	crl.ThisUpdate, crl.NextUpdate = fromNanos(tu), fromNanos(nu)
	return crl, nil
}

// expectOneRow turns "no row changed" into ErrConflict: the statements it
// checks insert or update exactly one row unless a conflict stops them.
func expectOneRow(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrConflict
	}
	return nil
}

type rowScanner interface{ Scan(dest ...any) error }

func scanCert(r rowScanner) (Certificate, error) {
	var (
		c           Certificate
		nb, na, rev sql.NullInt64
		reason      int64
	)
	if err := r.Scan(&c.Seq, &c.Serial, &c.IssuerID, &c.Profile, &c.Subject, &nb, &na, &c.DER, &rev, &reason); err != nil {
		return Certificate{}, err
	}
	c.NotBefore, c.NotAfter, c.RevokedAt = fromNanos(nb), fromNanos(na), fromNanos(rev)
	c.RevocationReason = int(reason)
	return c, nil
}

// blob keeps a nil slice from being stored as NULL.
func blob(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// The instants an int64 of unix nanoseconds can hold: years 1677 to 2262.
var (
	minStorableTime = time.Unix(0, math.MinInt64)
	maxStorableTime = time.Unix(0, math.MaxInt64)
)

// nanos converts a timestamp to its stored form: unix nanoseconds, or NULL
// for the zero time. A time outside what an int64 of nanoseconds can hold
// is an error rather than a silently different time.
func nanos(t time.Time) (sql.NullInt64, error) {
	if t.IsZero() {
		return sql.NullInt64{}, nil
	}
	if t.Before(minStorableTime) || t.After(maxStorableTime) {
		return sql.NullInt64{}, fmt.Errorf("time %s is outside the storable range %s to %s",
			t.UTC().Format(time.RFC3339), minStorableTime.UTC().Format(time.RFC3339), maxStorableTime.UTC().Format(time.RFC3339))
	}
	return sql.NullInt64{Int64: t.UnixNano(), Valid: true}, nil
}

func nanosAll(ts ...time.Time) ([]sql.NullInt64, error) {
	out := make([]sql.NullInt64, len(ts))
	for i, t := range ts {
		n, err := nanos(t)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

// fromNanos is the inverse of nanos; times come back in UTC.
func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}
