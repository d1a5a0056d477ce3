package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Plugin names.
const (
	Postgres = "postgres"
	MySQL    = "mysql"
)

// Errors callers branch on. Failures reported by a database are *Error.
var (
	// ErrUnknownPlugin: Config.Plugin is neither Postgres nor MySQL.
	ErrUnknownPlugin = errors.New("database plugin: unknown plugin")
	// ErrInvalidName: a user name that is empty, too long for the
	// database, or has characters that are not safe in a statement.
	ErrInvalidName = errors.New("database plugin: invalid user name")
	// ErrInvalidPassword: a password that is too short or too long, or has
	// characters that are not safe in a statement.
	ErrInvalidPassword = errors.New("database plugin: invalid password")
	// ErrBadTemplate: a statement names an unknown placeholder, or one
	// that has no value in that kind of statement.
	ErrBadTemplate = errors.New("database plugin: bad statement template")
	// ErrNoStatements: no creation statements, or a statement that is
	// empty.
	ErrNoStatements = errors.New("database plugin: missing statements")
	// ErrUserExists: CreateUser was asked for a name the database already
	// has. Nothing was run.
	ErrUserExists = errors.New("database plugin: user already exists")
	// ErrUserNotFound: RenewUser or SetPassword on a user the database
	// does not have. Nothing was run.
	ErrUserNotFound = errors.New("database plugin: no such user")
)

// DefaultMaxOpenConns is Config.MaxOpenConns's default.
const DefaultMaxOpenConns = 4

// Config says which database to manage users on.
type Config struct {
	// Plugin is Postgres or MySQL (MariaDB included). Required.
	Plugin string
	// DSN says where to connect and as whom; that user needs the right to
	// create and drop users, to grant what the statements grant, and to
	// read pg_catalog.pg_roles (PostgreSQL) or mysql.user (MySQL).
	// Postgres: a URL ("postgres://admin:pw@db:5432/app?sslmode=verify-full")
	// or libpq's key=value form, as pgx reads them (PGPASSWORD and the
	// passfile apply). MySQL: go-sql-driver's form
	// ("admin:pw@tcp(db:3306)/app?tls=true") or a URL
	// "mysql://admin:pw@db:3306/app?tls=true" whose query takes the same
	// parameters. Required. It is a secret: Config redacts it when printed
	// or logged.
	DSN string
	// MaxOpenConns bounds the connections held open. Default (0):
	// DefaultMaxOpenConns.
	MaxOpenConns int
	// Logger receives the driver's rare complaints (MySQL's "[mysql]"
	// messages), redacted. Default (nil): discarded.
	Logger *slog.Logger
}

// RedactedDSN is the DSN with its password replaced by "[redacted]".
func (c Config) RedactedDSN() string { return redactDSN(c.Plugin, c.DSN) }

// String prints c with its DSN redacted.
func (c Config) String() string {
	return fmt.Sprintf("plugin.Config{Plugin: %q, DSN: %q, MaxOpenConns: %d}", c.Plugin, c.RedactedDSN(), c.MaxOpenConns)
}

// GoString prints c with its DSN redacted.
func (c Config) GoString() string { return c.String() }

// LogValue logs c with its DSN redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("plugin", c.Plugin),
		slog.String("dsn", c.RedactedDSN()),
		slog.Int("max_open_conns", c.MaxOpenConns))
}

// Statements are the SQL templates of one role (see the package doc for
// placeholders and how statements run). Only Creation is required.
type Statements struct {
	// Creation creates the user and grants it what it may do.
	// Placeholders: name, password, expiration. Required: there is no
	// default, since what to grant is the operator's decision.
	Creation []string
	// Revocation removes the user. Placeholders: name. Default (empty):
	// PostgreSQL: REASSIGN OWNED BY the user TO CURRENT_USER (its objects
	// survive, owned by the DSN's user), DROP OWNED BY (which revokes its
	// privileges in the DSN's database), DROP ROLE IF EXISTS. MySQL: DROP
	// USER IF EXISTS for every account with that user name, whatever its
	// host.
	Revocation []string
	// Renewal extends the user's life. Placeholders: name, expiration.
	// Default (empty): PostgreSQL: ALTER ROLE ... VALID UNTIL; MySQL:
	// nothing.
	Renewal []string
	// Rotation sets the user's password (static users, the DSN's own user).
	// Placeholders: name, password. Default (empty): PostgreSQL: ALTER ROLE
	// ... WITH PASSWORD; MySQL: one ALTER USER ... IDENTIFIED BY for every
	// account with that user name, whatever its host.
	Rotation []string
}

// ValidateStatements checks st for plugin without a database: the plugin
// is known, Creation is not empty, no statement is blank, and every
// placeholder is known and has a value in its kind of statement. The
// operations make the same checks before they run anything.
func ValidateStatements(plugin string, st Statements) error {
	if _, err := lookup(plugin); err != nil {
		return err
	}
	if len(st.Creation) == 0 {
		return fmt.Errorf("%w: no creation statements", ErrNoStatements)
	}
	for _, l := range []struct {
		k     kind
		stmts []string
	}{{creation, st.Creation}, {revocation, st.Revocation}, {renewal, st.Renewal}, {rotation, st.Rotation}} {
		for i, s := range l.stmts {
			if err := checkStatement(plugin, l.k, i, s); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkStatement(plugin string, k kind, i int, s string) error {
	blank := strings.TrimSpace(s) == ""
	if plugin == MySQL {
		blank = !hasCode(s)
	}
	if blank {
		return fmt.Errorf("%w: %s statement %d is empty", ErrNoStatements, k, i+1)
	}
	if err := checkTemplate(s, k); err != nil {
		return fmt.Errorf("%s statement %d: %w", k, i+1, err)
	}
	return nil
}

// pluginInfo describes what differs between databases.
type pluginInfo struct {
	name    string
	maxName int // longest user name, in bytes
}

func lookup(plugin string) (pluginInfo, error) {
	switch plugin {
	case Postgres:
		return pluginInfo{name: Postgres, maxName: 63}, nil
	case MySQL:
		return pluginInfo{name: MySQL, maxName: 32}, nil
	}
	return pluginInfo{}, fmt.Errorf("%w %q (want %q or %q)", ErrUnknownPlugin, plugin, Postgres, MySQL)
}

// backend is one database's connection pool and dialect.
type backend interface {
	// run executes stmts, already rendered, in order, stopping at the first
	// failure. On PostgreSQL they run in one transaction. The error names
	// the failing statement by position only (never its text) and is not
	// yet redacted.
	run(ctx context.Context, k kind, stmts []string) error
	exists(ctx context.Context, name string) (bool, error)
	// defaults returns the statements of kind k, rendered for v, to run
	// when a role gives none; nil for "nothing to run".
	defaults(ctx context.Context, k kind, v *values) ([]string, error)
	close() error
}

// DB manages users on one database. It is safe for concurrent use.
//
// Every method that takes a user name or password checks it first
// (ErrInvalidName, ErrInvalidPassword) and checks the statements it will
// run (ErrNoStatements, ErrBadTemplate), so that bad input runs nothing.
// Failures reported by the database are *Error.
type DB struct {
	p    pluginInfo
	b    backend
	keep redactor // the DSN's password
}

// Open connects to the database cfg names and checks that it answers (a
// ping and SELECT 1). A bad DSN, an unreachable server or refused
// credentials give an error with the driver's or the server's own reason
// (an *Error when it comes from the driver), with the DSN's password
// removed.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	p, err := lookup(cfg.Plugin)
	if err != nil {
		return nil, err
	}
	if cfg.DSN == "" {
		return nil, fmt.Errorf("opening %s database: no DSN", p.name)
	}
	if cfg.MaxOpenConns <= 0 {
		cfg.MaxOpenConns = DefaultMaxOpenConns
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	red := redactor{secrets: dsnPasswords(p.name, cfg.DSN)}
	var b backend
	switch p.name {
	case Postgres:
		b, red, err = openPostgres(ctx, cfg, red)
	case MySQL:
		b, red, err = openMySQL(ctx, cfg, red)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s database: %w", p.name, red.err(err))
	}
	return &DB{p: p, b: b, keep: red}, nil
}

// Plugin is Postgres or MySQL.
func (db *DB) Plugin() string { return db.p.name }

// Close closes the connections.
func (db *DB) Close() error { return db.keep.err(db.b.close()) }

// UserExists reports whether the database has a user called username:
// pg_roles on PostgreSQL, mysql.user (any host) on MySQL.
func (db *DB) UserExists(ctx context.Context, username string) (bool, error) {
	if err := validName(username, db.p.maxName); err != nil {
		return false, err
	}
	ok, err := db.b.exists(ctx, username)
	if err != nil {
		return false, fmt.Errorf("looking up user %s: %w", username, db.keep.err(err))
	}
	return ok, nil
}

// CreateUser creates username with password, valid until expiration (zero:
// no expiry, where the statements use it), by running st.Creation. If the
// user already exists it returns ErrUserExists and runs nothing. On
// PostgreSQL the statements run in one transaction, so a failure leaves
// nothing behind. On MySQL, where DDL commits at once, a failure is
// followed by RevokeUser with st's revocation statements; the error then
// also says whether that cleanup failed.
func (db *DB) CreateUser(ctx context.Context, st Statements, username, password string, expiration time.Time) error {
	if err := validName(username, db.p.maxName); err != nil {
		return err
	}
	if err := validPassword(password); err != nil {
		return err
	}
	if len(st.Creation) == 0 {
		return fmt.Errorf("creating user %s: %w: no creation statements", username, ErrNoStatements)
	}
	v := &values{name: username, password: password, expiration: expiration}
	stmts, err := db.renderAll(creation, st.Creation, v)
	if err != nil {
		return fmt.Errorf("creating user %s: %w", username, err)
	}
	// Check the revocation statements now: a MySQL cleanup must not fail
	// on a template error after half a creation.
	for i, s := range st.Revocation {
		if err := checkStatement(db.p.name, revocation, i, s); err != nil {
			return fmt.Errorf("creating user %s: %w", username, err)
		}
	}
	exists, err := db.UserExists(ctx, username)
	if err != nil {
		return fmt.Errorf("creating user %s: %w", username, err)
	}
	if exists {
		return fmt.Errorf("creating user %s: %w", username, ErrUserExists)
	}
	red := db.keep.with(password)
	runErr := db.b.run(ctx, creation, stmts)
	if runErr == nil {
		return nil
	}
	err = fmt.Errorf("creating user %s: %w", username, red.err(runErr))
	if db.p.name != MySQL {
		return err
	}
	// Clean up what the statements before the failure did, even if ctx
	// is what made them fail.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if cerr := db.RevokeUser(cctx, st, username); cerr != nil {
		return errors.Join(err, fmt.Errorf("cleaning up after the failed creation: %w", cerr))
	}
	return err
}

// cleanupTimeout bounds the revocation after a failed MySQL creation.
const cleanupTimeout = 30 * time.Second

// RenewUser runs st.Renewal (or the default) to make username valid until
// expiration. It returns ErrUserNotFound if the user does not exist.
func (db *DB) RenewUser(ctx context.Context, st Statements, username string, expiration time.Time) error {
	if err := validName(username, db.p.maxName); err != nil {
		return err
	}
	v := &values{name: username, expiration: expiration}
	return db.do(ctx, "renewing user "+username, renewal, st.Renewal, v, db.keep)
}

// RevokeUser runs st.Revocation (or the default) to remove username. It
// is idempotent: if the user does not exist it runs nothing and returns
// nil.
func (db *DB) RevokeUser(ctx context.Context, st Statements, username string) error {
	if err := validName(username, db.p.maxName); err != nil {
		return err
	}
	v := &values{name: username}
	err := db.do(ctx, "revoking user "+username, revocation, st.Revocation, v, db.keep)
	if errors.Is(err, ErrUserNotFound) {
		return nil
	}
	return err
}

// SetPassword runs st.Rotation (or the default) to give username the new
// password. It returns ErrUserNotFound if the user does not exist. When
// username is the DSN's own user (rotate-root), connections already open
// keep working; the caller closes the DB and opens it again with the new
// password.
func (db *DB) SetPassword(ctx context.Context, st Statements, username, password string) error {
	if err := validName(username, db.p.maxName); err != nil {
		return err
	}
	if err := validPassword(password); err != nil {
		return err
	}
	v := &values{name: username, password: password}
	return db.do(ctx, "setting the password of user "+username, rotation, st.Rotation, v, db.keep.with(password))
}

// do runs the statements of kind k (the defaults if tmpls is empty) for
// v.name, after checking that the user exists (ErrUserNotFound if not).
func (db *DB) do(ctx context.Context, what string, k kind, tmpls []string, v *values, red redactor) error {
	var stmts []string
	var err error
	if len(tmpls) > 0 {
		if stmts, err = db.renderAll(k, tmpls, v); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	ok, err := db.UserExists(ctx, v.name)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !ok {
		return fmt.Errorf("%s: %w", what, ErrUserNotFound)
	}
	if len(tmpls) == 0 {
		if stmts, err = db.b.defaults(ctx, k, v); err != nil {
			return fmt.Errorf("%s: %w", what, red.err(err))
		}
	}
	if len(stmts) == 0 {
		return nil
	}
	if err := db.b.run(ctx, k, stmts); err != nil {
		return fmt.Errorf("%s: %w", what, red.err(err))
	}
	return nil
}

// renderAll checks and renders each template of kind k.
func (db *DB) renderAll(k kind, tmpls []string, v *values) ([]string, error) {
	out := make([]string, len(tmpls))
	for i, t := range tmpls {
		if err := checkStatement(db.p.name, k, i, t); err != nil {
			return nil, err
		}
		s, err := render(t, k, v)
		if err != nil {
			return nil, fmt.Errorf("%s statement %d: %w", k, i+1, err)
		}
		out[i] = s
	}
	return out, nil
}

// stmtError names a failed statement by its position, never its text.
type stmtError struct {
	k    kind
	i    int // 0-based, in the role's list
	part int // 1-based part of a split MySQL statement; 0 if not split
	err  error
}

func (e *stmtError) Error() string {
	if e.part > 0 {
		return e.k.String() + " statement " + strconv.Itoa(e.i+1) + " (part " + strconv.Itoa(e.part) + "): " + e.err.Error()
	}
	return e.k.String() + " statement " + strconv.Itoa(e.i+1) + ": " + e.err.Error()
}

func (e *stmtError) Unwrap() error { return e.err }
