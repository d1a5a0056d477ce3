package database

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sigil-pki/sigil/secretstore/database/plugin"
	"github.com/sigil-pki/sigil/storage"
)

// Errors callers branch on.
var (
	ErrNotFound = errors.New("database: not found")
	ErrInvalid  = errors.New("database: invalid request")
	// ErrNotAllowed: the connection does not allow the role.
	ErrNotAllowed = errors.New("database: role not allowed on this connection")
	// ErrNotOwner: the lease belongs to another caller.
	ErrNotOwner = errors.New("database: lease belongs to another identity")
	// ErrDatabase: the managed database refused or could not be reached;
	// the error carries its reason, passwords redacted.
	ErrDatabase = errors.New("database: the managed database refused")
)

// Defaults for roles that name none.
const (
	DefaultTTL    = time.Hour
	DefaultMaxTTL = 24 * time.Hour
	// maxBackoff caps the wait between two attempts to revoke one lease.
	maxBackoff = 5 * time.Minute
)

// DB is an open connection to a managed database; plugin.DB satisfies it.
type DB interface {
	CreateUser(ctx context.Context, st plugin.Statements, username, password string, expiration time.Time) error
	RenewUser(ctx context.Context, st plugin.Statements, username string, expiration time.Time) error
	RevokeUser(ctx context.Context, st plugin.Statements, username string) error
	SetPassword(ctx context.Context, st plugin.Statements, username, password string) error
	Close() error
}

// Opener opens and verifies a connection.
type Opener func(ctx context.Context, cfg plugin.Config) (DB, error)

// Store is the storage the engine needs (storage.DB implements it).
type Store interface {
	PutDBConnection(ctx context.Context, name string, sealed []byte, at time.Time) error
	GetDBConnection(ctx context.Context, name string) ([]byte, error)
	ListDBConnections(ctx context.Context) ([]string, error)
	DeleteDBConnection(ctx context.Context, name string) error
	PutDBRole(ctx context.Context, r storage.DBRole) error
	GetDBRole(ctx context.Context, name string) (storage.DBRole, error)
	ListDBRoles(ctx context.Context, kind string) ([]storage.DBRole, error)
	DeleteDBRole(ctx context.Context, name string) error
	GetStaticState(ctx context.Context, role string) (storage.StaticState, error)
	PutStaticState(ctx context.Context, st storage.StaticState, expectRevision int64) error
	CreateLease(ctx context.Context, l storage.Lease) error
	GetLease(ctx context.Context, id string) (storage.Lease, error)
	ExtendLease(ctx context.Context, id string, expiresAt time.Time) error
	RecordLeaseFailure(ctx context.Context, id string, nextAttempt time.Time, reason string) error
	DeleteLease(ctx context.Context, id string) error
	ListLeases(ctx context.Context, prefix, after string, limit int) ([]storage.Lease, error)
	DueLeases(ctx context.Context, now time.Time, limit int) ([]storage.Lease, error)
}

// Sealer encrypts with additional data (the barrier).
type Sealer interface {
	Encrypt(aad string, plaintext []byte) ([]byte, error)
	Decrypt(aad string, ciphertext []byte) ([]byte, error)
}

// Event kinds recorded.
const (
	KindLeaseCreate = "lease.create"
	KindLeaseRenew  = "lease.renew"
	KindLeaseRevoke = "lease.revoke"
	KindRotate      = "database.rotate"
)

// Event is one recorded action; it never holds a password.
type Event struct {
	Kind   string
	Actor  string
	Path   string // lease ID, or database/static-roles/<role>, database/config/<name>
	Detail string
}

// Recorder makes events durable.
type Recorder interface {
	// Record MUST return an error when e could not be made durable.
	Record(ctx context.Context, e Event) error
}

// Config configures an Engine.
type Config struct {
	Store    Store
	Sealer   Sealer
	Recorder Recorder
	// Open opens connections. Default: plugin.Open.
	Open   Opener
	Clock  func() time.Time
	Logger *slog.Logger
}

// Engine is the database secrets engine. It is safe for concurrent use.
type Engine struct {
	store  Store
	sealer Sealer
	rec    Recorder
	open   Opener
	now    func() time.Time
	log    *slog.Logger

	openMu sync.Mutex // serialises opening connections
	mu     sync.Mutex // guards conns
	conns  map[string]*openConn
}

type openConn struct {
	db  DB
	dsn string // the DSN it was opened with, to notice changes
}

// New returns an Engine.
func New(cfg Config) *Engine {
	e := &Engine{store: cfg.Store, sealer: cfg.Sealer, rec: cfg.Recorder, open: cfg.Open, now: cfg.Clock, log: cfg.Logger, conns: map[string]*openConn{}}
	if e.open == nil {
		e.open = func(ctx context.Context, c plugin.Config) (DB, error) {
			db, err := plugin.Open(ctx, c)
			if err != nil {
				return nil, err
			}
			return db, nil
		}
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	return e
}

// Close closes every open connection.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for name, c := range e.conns {
		errs = append(errs, c.db.Close())
		delete(e.conns, name)
	}
	return errors.Join(errs...)
}

// Connection is a connection's configuration. URL may hold {{username}}
// and {{password}}, replaced by Username and Password (escaped for URL
// forms); rotate-root needs them.
type Connection struct {
	Plugin       string   `json:"plugin"`
	URL          string   `json:"connection_url"`
	Username     string   `json:"username,omitempty"`
	Password     string   `json:"password,omitempty"`
	Pending      string   `json:"pending_password,omitempty"`
	AllowedRoles []string `json:"allowed_roles"`
	MaxOpenConns int      `json:"max_open_connections,omitempty"`
}

// Redacted is the connection without its passwords, as it may be shown.
func (c Connection) Redacted() map[string]any {
	return map[string]any{
		"plugin_name": c.Plugin, "connection_url": redactURL(c.URL), "username": c.Username,
		"allowed_roles": c.AllowedRoles, "max_open_connections": c.MaxOpenConns,
	}
}

// redactURL hides a password written into a URL or DSN.
func redactURL(u string) string {
	if p, err := url.Parse(u); err == nil && p.User != nil {
		if _, ok := p.User.Password(); ok {
			p.User = url.UserPassword(p.User.Username(), "redacted")
			return strings.Replace(p.String(), "redacted", "[redacted]", 1)
		}
		return u
	}
	// go-sql-driver form user:pass@tcp(...)
	if at := strings.LastIndex(u, "@"); at > 0 {
		if colon := strings.Index(u[:at], ":"); colon >= 0 && !strings.Contains(u[:at], "{{password}}") {
			return u[:colon+1] + "[redacted]" + u[at:]
		}
	}
	return u
}

func (c Connection) dsn(password string) string {
	user, pass := c.Username, password
	if strings.Contains(c.URL, "://") {
		user, pass = url.PathEscape(user), url.PathEscape(pass)
	}
	return strings.NewReplacer("{{username}}", user, "{{password}}", pass).Replace(c.URL)
}

func (c Connection) pluginConfig(password string) plugin.Config {
	return plugin.Config{Plugin: c.Plugin, DSN: c.dsn(password), MaxOpenConns: c.MaxOpenConns}
}

func connAAD(name string) string { return "db-connection\x00" + name }
func leaseAAD(id string) string  { return "lease\x00" + id }
func staticAAD(role string, pending bool) string {
	if pending {
		return "db-static-pending\x00" + role
	}
	return "db-static\x00" + role
}

func checkName(what, n string) error {
	if n == "" || len(n) > 128 || strings.ContainsAny(n, "/ \t\r\n") {
		return fmt.Errorf("%w: %s %q must be 1 to 128 characters without slashes or spaces", ErrInvalid, what, n)
	}
	return nil
}

// WriteConnection verifies cfg by connecting, then stores it sealed.
func (e *Engine) WriteConnection(ctx context.Context, name string, c Connection) error {
	if err := checkName("connection name", name); err != nil {
		return err
	}
	switch c.Plugin {
	case "postgres", "postgresql", "postgresql-database-plugin":
		c.Plugin = "postgres"
	case "mysql", "mariadb", "mysql-database-plugin":
		c.Plugin = "mysql"
	default:
		return fmt.Errorf("%w: plugin %q is not postgres or mysql", ErrInvalid, c.Plugin)
	}
	if c.URL == "" {
		return fmt.Errorf("%w: connection_url is required", ErrInvalid)
	}
	c.Pending = ""
	db, err := e.open(ctx, c.pluginConfig(c.Password))
	if err != nil {
		return fmt.Errorf("%w: verifying connection %s: %w", ErrDatabase, name, err)
	}
	if err := e.storeConnection(ctx, name, c); err != nil {
		db.Close()
		return err
	}
	e.replaceConn(name, db, c.dsn(c.Password))
	return nil
}

func (e *Engine) storeConnection(ctx context.Context, name string, c Connection) error {
	pt, err := json.Marshal(c)
	if err != nil {
		return err
	}
	defer clear(pt)
	ct, err := e.sealer.Encrypt(connAAD(name), pt)
	if err != nil {
		return err
	}
	return e.store.PutDBConnection(ctx, name, ct, e.now())
}

func (e *Engine) replaceConn(name string, db DB, dsn string) {
	e.mu.Lock()
	old := e.conns[name]
	e.conns[name] = &openConn{db: db, dsn: dsn}
	e.mu.Unlock()
	if old != nil && old.db != db {
		old.db.Close()
	}
}

// Connection returns a connection's configuration.
func (e *Engine) Connection(ctx context.Context, name string) (Connection, error) {
	ct, err := e.store.GetDBConnection(ctx, name)
	if errors.Is(err, storage.ErrNotFound) {
		return Connection{}, fmt.Errorf("connection %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return Connection{}, err
	}
	pt, err := e.sealer.Decrypt(connAAD(name), ct)
	if err != nil {
		return Connection{}, fmt.Errorf("opening connection %s: %w", name, err)
	}
	defer clear(pt)
	var c Connection
	if err := json.Unmarshal(pt, &c); err != nil {
		return Connection{}, fmt.Errorf("decoding connection %s: %w", name, err)
	}
	return c, nil
}

// Connections lists the connection names.
func (e *Engine) Connections(ctx context.Context) ([]string, error) {
	return e.store.ListDBConnections(ctx)
}

// DeleteConnection forgets a connection.
func (e *Engine) DeleteConnection(ctx context.Context, name string) error {
	if err := e.store.DeleteDBConnection(ctx, name); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("connection %s: %w", name, ErrNotFound)
		}
		return err
	}
	e.mu.Lock()
	old := e.conns[name]
	delete(e.conns, name)
	e.mu.Unlock()
	if old != nil {
		old.db.Close()
	}
	return nil
}

// conn returns the open connection, opening it (and finishing a root
// rotation a crash interrupted) when needed.
func (e *Engine) conn(ctx context.Context, name string) (DB, Connection, error) {
	c, err := e.Connection(ctx, name)
	if err != nil {
		return nil, Connection{}, err
	}
	if c.Pending != "" {
		if err := e.finishRootRotation(ctx, name, &c); err != nil {
			return nil, Connection{}, err
		}
	}
	dsn := c.dsn(c.Password)
	if db := e.cached(name, dsn); db != nil {
		return db, c, nil
	}
	// One opener at a time, so that concurrent first uses share one
	// connection instead of closing each other's.
	e.openMu.Lock()
	defer e.openMu.Unlock()
	if db := e.cached(name, dsn); db != nil {
		return db, c, nil
	}
	db, err := e.open(ctx, c.pluginConfig(c.Password))
	if err != nil {
		return nil, Connection{}, fmt.Errorf("%w: connecting to %s: %w", ErrDatabase, name, err)
	}
	e.replaceConn(name, db, dsn)
	return db, c, nil
}

func (e *Engine) cached(name, dsn string) DB {
	e.mu.Lock()
	defer e.mu.Unlock()
	if oc := e.conns[name]; oc != nil && oc.dsn == dsn {
		return oc.db
	}
	return nil
}

// RotateRoot gives the connection's admin user a new password that only
// Sigil knows.
func (e *Engine) RotateRoot(ctx context.Context, actor, name string) error {
	db, c, err := e.conn(ctx, name)
	if err != nil {
		return err
	}
	if !strings.Contains(c.URL, "{{password}}") || c.Username == "" {
		return fmt.Errorf("%w: rotate-root needs a connection_url with {{username}} and {{password}} and a username", ErrInvalid)
	}
	pw, err := plugin.GeneratePassword()
	if err != nil {
		return err
	}
	c.Pending = pw
	if err := e.storeConnection(ctx, name, c); err != nil {
		return err
	}
	if err := db.SetPassword(ctx, plugin.Statements{}, c.Username, pw); err != nil {
		return fmt.Errorf("changing the admin password of %s: %w", name, err)
	}
	if err := e.finishRootRotation(ctx, name, &c); err != nil {
		return err
	}
	return e.rec.Record(ctx, Event{Kind: KindRotate, Actor: actor, Path: "database/config/" + name, Detail: "admin password rotated"})
}

// finishRootRotation makes the pending admin password current once the
// database accepts it; if the database still has the old one, it sets
// the pending one first.
func (e *Engine) finishRootRotation(ctx context.Context, name string, c *Connection) error {
	db, err := e.open(ctx, c.pluginConfig(c.Pending))
	if err != nil {
		old, oerr := e.open(ctx, c.pluginConfig(c.Password))
		if oerr != nil {
			return fmt.Errorf("connecting to %s with either admin password: %w", name, errors.Join(err, oerr))
		}
		serr := old.SetPassword(ctx, plugin.Statements{}, c.Username, c.Pending)
		old.Close()
		if serr != nil {
			return fmt.Errorf("finishing the admin password rotation of %s: %w", name, serr)
		}
		if db, err = e.open(ctx, c.pluginConfig(c.Pending)); err != nil {
			return fmt.Errorf("connecting to %s with the new admin password: %w", name, err)
		}
	}
	c.Password, c.Pending = c.Pending, ""
	if err := e.storeConnection(ctx, name, *c); err != nil {
		db.Close()
		return err
	}
	e.replaceConn(name, db, c.dsn(c.Password))
	return nil
}

// Role is a dynamic role.
type Role struct {
	Connection       string   `json:"db_name"`
	Creation         []string `json:"creation_statements"`
	Revocation       []string `json:"revocation_statements,omitempty"`
	Renewal          []string `json:"renew_statements,omitempty"`
	DefaultTTL       Duration `json:"default_ttl,omitempty"`
	MaxTTL           Duration `json:"max_ttl,omitempty"`
	UsernameTemplate string   `json:"username_template,omitempty"`
}

// StaticRole is a static role: an existing user whose password is rotated.
type StaticRole struct {
	Connection     string   `json:"db_name"`
	Username       string   `json:"username"`
	RotationPeriod Duration `json:"rotation_period"`
	Rotation       []string `json:"rotation_statements,omitempty"`
}

// Duration is a time.Duration written as "1h" or as seconds, as Vault
// accepts both.
type Duration time.Duration

// UnmarshalJSON accepts "90s", "1h" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if s == "" {
			*d = 0
			return nil
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			if n, nerr := json.Number(s).Int64(); nerr == nil {
				*d = Duration(time.Duration(n) * time.Second)
				return nil
			}
			return fmt.Errorf("%w: %q is not a duration", ErrInvalid, s)
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("%w: %s is not a duration", ErrInvalid, b)
	}
	*d = Duration(time.Duration(n) * time.Second)
	return nil
}

// MarshalJSON writes the Go duration form.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// WriteRole stores a dynamic role.
func (e *Engine) WriteRole(ctx context.Context, name string, r Role) error {
	if err := checkName("role name", name); err != nil {
		return err
	}
	switch {
	case r.Connection == "":
		return fmt.Errorf("%w: db_name is required", ErrInvalid)
	case len(r.Creation) == 0:
		return fmt.Errorf("%w: creation_statements are required", ErrInvalid)
	case r.DefaultTTL < 0 || r.MaxTTL < 0:
		return fmt.Errorf("%w: TTLs must not be negative", ErrInvalid)
	case r.MaxTTL > 0 && r.DefaultTTL > r.MaxTTL:
		return fmt.Errorf("%w: default_ttl %v is above max_ttl %v", ErrInvalid, time.Duration(r.DefaultTTL), time.Duration(r.MaxTTL))
	}
	c, err := e.Connection(ctx, r.Connection)
	if err != nil {
		return err
	}
	if err := plugin.ValidateStatements(c.Plugin, plugin.Statements{Creation: r.Creation, Revocation: r.Revocation, Renewal: r.Renewal}); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return e.putRole(ctx, name, "dynamic", r)
}

func (e *Engine) putRole(ctx context.Context, name, kind string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return e.store.PutDBRole(ctx, storage.DBRole{Name: name, Kind: kind, Config: string(b), UpdatedAt: e.now()})
}

func (e *Engine) role(ctx context.Context, name, kind string, v any) error {
	r, err := e.store.GetDBRole(ctx, name)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && r.Kind != kind) {
		return fmt.Errorf("%s role %s: %w", kind, name, ErrNotFound)
	}
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(r.Config), v)
}

// Role returns a dynamic role.
func (e *Engine) Role(ctx context.Context, name string) (Role, error) {
	var r Role
	return r, e.role(ctx, name, "dynamic", &r)
}

// StaticRole returns a static role.
func (e *Engine) StaticRole(ctx context.Context, name string) (StaticRole, error) {
	var r StaticRole
	return r, e.role(ctx, name, "static", &r)
}

// Roles lists the role names of a kind ("dynamic" or "static").
func (e *Engine) Roles(ctx context.Context, kind string) ([]string, error) {
	rs, err := e.store.ListDBRoles(ctx, kind)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Name
	}
	return out, nil
}

// DeleteRole removes a role of the kind ("dynamic" or "static"); leases it
// issued stay until they expire or are revoked.
func (e *Engine) DeleteRole(ctx context.Context, name, kind string) error {
	if r, err := e.store.GetDBRole(ctx, name); err != nil || r.Kind != kind {
		return fmt.Errorf("%s role %s: %w", kind, name, ErrNotFound)
	}
	if err := e.store.DeleteDBRole(ctx, name); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("role %s: %w", name, ErrNotFound)
		}
		return err
	}
	return nil
}

func allowed(c Connection, role string) bool {
	return slices.Contains(c.AllowedRoles, "*") || slices.Contains(c.AllowedRoles, role)
}

// Creds are dynamic credentials and their lease.
type Creds struct {
	Username      string
	Password      string
	LeaseID       string
	LeaseDuration time.Duration
}

// leaseData is what a lease must remember to renew and revoke its user.
type leaseData struct {
	Connection string   `json:"db_name"`
	Role       string   `json:"role"`
	Username   string   `json:"username"`
	Revocation []string `json:"revocation_statements,omitempty"`
	Renewal    []string `json:"renew_statements,omitempty"`
	DefaultTTL Duration `json:"default_ttl"`
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// Creds creates a database user for role under a new lease owned by
// caller. The lease is stored before the user is created; the user exists
// and the lease is recorded before the credentials are returned.
func (e *Engine) Creds(ctx context.Context, caller, roleName string) (Creds, error) {
	r, err := e.Role(ctx, roleName)
	if err != nil {
		return Creds{}, err
	}
	db, c, err := e.conn(ctx, r.Connection)
	if err != nil {
		return Creds{}, err
	}
	if !allowed(c, roleName) {
		return Creds{}, fmt.Errorf("%w: %s on %s", ErrNotAllowed, roleName, r.Connection)
	}
	ttl, maxTTL := time.Duration(r.DefaultTTL), time.Duration(r.MaxTTL)
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if maxTTL == 0 {
		maxTTL = DefaultMaxTTL
	}
	ttl = min(ttl, maxTTL)
	username, err := plugin.GenerateUsername(c.Plugin, r.UsernameTemplate, plugin.UsernameData{RoleName: roleName, DisplayName: displayName(caller)})
	if err != nil {
		return Creds{}, err
	}
	password, err := plugin.GeneratePassword()
	if err != nil {
		return Creds{}, err
	}
	suffix, err := randomHex(12)
	if err != nil {
		return Creds{}, err
	}
	now := e.now().UTC().Truncate(time.Second)
	id := "database/creds/" + roleName + "/" + suffix
	data, err := json.Marshal(leaseData{Connection: r.Connection, Role: roleName, Username: username, Revocation: r.Revocation, Renewal: r.Renewal, DefaultTTL: Duration(ttl)})
	if err != nil {
		return Creds{}, err
	}
	sealed, err := e.sealer.Encrypt(leaseAAD(id), data)
	if err != nil {
		return Creds{}, err
	}
	l := storage.Lease{ID: id, Owner: caller, IssuedAt: now, ExpiresAt: now.Add(ttl), MaxExpiresAt: now.Add(maxTTL), Data: sealed}
	if err := e.store.CreateLease(ctx, l); err != nil {
		return Creds{}, err
	}
	st := plugin.Statements{Creation: r.Creation, Revocation: r.Revocation, Renewal: r.Renewal}
	if err := db.CreateUser(ctx, st, username, password, l.ExpiresAt); err != nil {
		e.undoCreds(l, db, st, username)
		return Creds{}, fmt.Errorf("%w: creating a user for role %s: %w", ErrDatabase, roleName, err)
	}
	if err := e.rec.Record(ctx, Event{Kind: KindLeaseCreate, Actor: caller, Path: id,
		Detail: fmt.Sprintf("role=%s user=%s expires=%s", roleName, username, l.ExpiresAt.Format(time.RFC3339))}); err != nil {
		e.undoCreds(l, db, st, username)
		return Creds{}, err
	}
	return Creds{Username: username, Password: password, LeaseID: id, LeaseDuration: ttl}, nil
}

// undoCreds drops a user whose credentials will not be handed out; if
// that fails the lease stays and the expiry manager retries.
func (e *Engine) undoCreds(l storage.Lease, db DB, st plugin.Statements, username string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.RevokeUser(ctx, st, username); err != nil {
		e.log.Error("dropping a user whose credentials were not handed out; its lease stays for the expiry manager", "lease", l.ID, "err", err)
		return
	}
	if err := e.store.DeleteLease(ctx, l.ID); err != nil {
		e.log.Error("deleting the lease of a dropped user", "lease", l.ID, "err", err)
	}
}

// displayName turns a SPIFFE ID into a short name for usernames.
func displayName(caller string) string {
	caller = strings.TrimPrefix(caller, "spiffe://")
	if i := strings.LastIndex(caller, "/"); i >= 0 {
		caller = caller[i+1:]
	}
	return caller
}

// Lease is a lease as shown to callers.
type Lease struct {
	ID           string
	Owner        string
	IssuedAt     time.Time
	ExpiresAt    time.Time
	MaxExpiresAt time.Time
	Attempts     int64
	LastError    string
}

func publicLease(l storage.Lease) Lease {
	return Lease{ID: l.ID, Owner: l.Owner, IssuedAt: l.IssuedAt, ExpiresAt: l.ExpiresAt, MaxExpiresAt: l.MaxExpiresAt, Attempts: l.Attempts, LastError: l.LastError}
}

func (e *Engine) lease(ctx context.Context, id string) (storage.Lease, leaseData, error) {
	l, err := e.store.GetLease(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Lease{}, leaseData{}, fmt.Errorf("lease %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return storage.Lease{}, leaseData{}, err
	}
	pt, err := e.sealer.Decrypt(leaseAAD(id), l.Data)
	if err != nil {
		return storage.Lease{}, leaseData{}, fmt.Errorf("opening lease %s: %w", id, err)
	}
	var d leaseData
	if err := json.Unmarshal(pt, &d); err != nil {
		return storage.Lease{}, leaseData{}, fmt.Errorf("decoding lease %s: %w", id, err)
	}
	return l, d, nil
}

// Renew extends a lease by increment (0: the role's TTL), never past its
// max TTL; only its owner may, unless anyone is set (operators).
func (e *Engine) Renew(ctx context.Context, caller, id string, increment time.Duration, anyone bool) (Lease, error) {
	l, d, err := e.lease(ctx, id)
	if err != nil {
		return Lease{}, err
	}
	if !anyone && l.Owner != caller {
		return Lease{}, ErrNotOwner
	}
	if increment <= 0 {
		increment = time.Duration(d.DefaultTTL)
	}
	now := e.now().UTC().Truncate(time.Second)
	exp := now.Add(increment)
	if exp.After(l.MaxExpiresAt) {
		exp = l.MaxExpiresAt
	}
	if !exp.After(now) {
		return Lease{}, fmt.Errorf("%w: lease %s has reached its max TTL", ErrInvalid, id)
	}
	db, _, err := e.conn(ctx, d.Connection)
	if err != nil {
		return Lease{}, err
	}
	if err := db.RenewUser(ctx, plugin.Statements{Renewal: d.Renewal}, d.Username, exp); err != nil {
		return Lease{}, fmt.Errorf("%w: renewing lease %s: %w", ErrDatabase, id, err)
	}
	if err := e.store.ExtendLease(ctx, id, exp); err != nil {
		return Lease{}, err
	}
	if err := e.rec.Record(ctx, Event{Kind: KindLeaseRenew, Actor: caller, Path: id, Detail: "expires=" + exp.Format(time.RFC3339)}); err != nil {
		return Lease{}, err
	}
	l.ExpiresAt = exp
	return publicLease(l), nil
}

// Revoke drops a lease's user and then the lease. A failed drop keeps the
// lease, scheduled for a retry.
func (e *Engine) Revoke(ctx context.Context, caller, id string, anyone bool) error {
	l, d, err := e.lease(ctx, id)
	if err != nil {
		return err
	}
	if !anyone && l.Owner != caller {
		return ErrNotOwner
	}
	return e.revoke(ctx, caller, l, d)
}

func (e *Engine) revoke(ctx context.Context, actor string, l storage.Lease, d leaseData) error {
	err := func() error {
		db, _, err := e.conn(ctx, d.Connection)
		if err != nil {
			return err
		}
		return db.RevokeUser(ctx, plugin.Statements{Revocation: d.Revocation}, d.Username)
	}()
	if err != nil {
		backoff := min(time.Second<<min(l.Attempts, 16), maxBackoff)
		if ferr := e.store.RecordLeaseFailure(ctx, l.ID, e.now().Add(backoff), truncate(err.Error(), 512)); ferr != nil {
			e.log.Error("recording a failed revocation", "lease", l.ID, "err", ferr)
		}
		return fmt.Errorf("%w: revoking lease %s (kept, retried in %v): %w", ErrDatabase, l.ID, backoff, err)
	}
	if err := e.rec.Record(ctx, Event{Kind: KindLeaseRevoke, Actor: actor, Path: l.ID, Detail: "user=" + d.Username}); err != nil {
		return err
	}
	if err := e.store.DeleteLease(ctx, l.ID); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// RevokePrefix revokes every lease whose ID starts with prefix (break
// glass for a role); it returns how many were revoked and the failures.
func (e *Engine) RevokePrefix(ctx context.Context, caller, prefix string) (int, error) {
	if prefix == "" {
		return 0, fmt.Errorf("%w: an empty prefix would revoke everything; name one", ErrInvalid)
	}
	var n int
	var errs []error
	after := ""
	for {
		page, err := e.store.ListLeases(ctx, prefix, after, storage.MaxListLimit)
		if err != nil {
			return n, err
		}
		for _, l := range page {
			_, d, err := e.lease(ctx, l.ID)
			if err == nil {
				err = e.revoke(ctx, caller, l, d)
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			n++
		}
		if len(page) < storage.MaxListLimit {
			return n, errors.Join(errs...)
		}
		after = page[len(page)-1].ID
	}
}

// Leases lists leases under prefix.
func (e *Engine) Leases(ctx context.Context, prefix string) ([]Lease, error) {
	var out []Lease
	after := ""
	for {
		page, err := e.store.ListLeases(ctx, prefix, after, storage.MaxListLimit)
		if err != nil {
			return nil, err
		}
		for _, l := range page {
			out = append(out, publicLease(l))
		}
		if len(page) < storage.MaxListLimit {
			return out, nil
		}
		after = page[len(page)-1].ID
	}
}

// expiryParallelism bounds concurrent revocations by ExpireDue.
const expiryParallelism = 8

// ExpireDue revokes the leases due now (expired, or due for a retry), at
// most limit of them; it returns how many were revoked.
func (e *Engine) ExpireDue(ctx context.Context, limit int) (int, error) {
	due, err := e.store.DueLeases(ctx, e.now(), limit)
	if err != nil {
		return 0, err
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		n    int
		sema = make(chan struct{}, expiryParallelism)
	)
	for _, l := range due {
		sema <- struct{}{}
		wg.Go(func() {
			defer func() { <-sema }()
			_, d, err := e.lease(ctx, l.ID)
			if err == nil {
				err = e.revoke(ctx, "sigil", l, d)
			}
			if err != nil {
				if ctx.Err() == nil {
					e.log.Warn("revoking an expired lease failed; it will be retried", "lease", l.ID, "err", err)
				}
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
		})
	}
	wg.Wait()
	return n, nil
}
