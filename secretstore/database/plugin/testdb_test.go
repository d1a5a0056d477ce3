package plugin

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
)

// Test servers; the environment overrides them.
const (
	defaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	defaultMySQLDSN    = "root@tcp(127.0.0.1:3306)/"
)

// unavailable skips the test, or fails it when CI=true: CI must run
// against the real servers.
func unavailable(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true, so this test requires it)")
	}
	t.Skip(msg)
}

func suffix(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// pgEnv is the test PostgreSQL server with a fresh schema of this test's.
type pgEnv struct {
	dsn    string    // the admin DSN (SIGIL_TEST_POSTGRES_DSN)
	admin  *pgx.Conn // an admin connection for the test's own checks
	schema string    // created for the test, dropped after it
}

func postgresEnv(t testing.TB) *pgEnv {
	t.Helper()
	dsn := os.Getenv("SIGIL_TEST_POSTGRES_DSN")
	if dsn == "" {
		dsn = defaultPostgresDSN
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		unavailable(t, "PostgreSQL for tests is unreachable (set SIGIL_TEST_POSTGRES_DSN, default "+
			defaultPostgresDSN+"): "+redactor{secrets: dsnPasswords(Postgres, dsn)}.text(err.Error()))
	}
	e := &pgEnv{dsn: dsn, admin: conn, schema: "sigil_plugin_" + suffix(t)}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+e.schema); err != nil {
		t.Fatalf("creating schema %s: %v", e.schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+e.schema+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", e.schema, err)
		}
		conn.Close(ctx)
	})
	return e
}

// login connects as user with password, as a workload would.
func (e *pgEnv) login(ctx context.Context, user, password string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(e.dsn)
	if err != nil {
		return nil, err
	}
	cfg.User, cfg.Password = user, password
	return pgx.ConnectConfig(ctx, cfg)
}

// validUntil reads rolvaliduntil; ok is false for NULL (no expiry).
func (e *pgEnv) validUntil(t testing.TB, user string) (time.Time, bool) {
	t.Helper()
	var at *time.Time
	if err := e.admin.QueryRow(t.Context(), "SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1", user).Scan(&at); err != nil {
		t.Fatalf("reading rolvaliduntil of %s: %v", user, err)
	}
	if at == nil {
		return time.Time{}, false
	}
	return *at, true
}

// passwordIs checks password against the SCRAM-SHA-256 verifier that
// PostgreSQL stored for user (pg_authid, superusers only): the check the
// server would make at a password login, which this machine's trust
// authentication skips. ok is false when the verifier cannot be read.
func (e *pgEnv) passwordIs(t testing.TB, user, password string) (match, ok bool) {
	t.Helper()
	var verifier *string
	err := e.admin.QueryRow(t.Context(), "SELECT rolpassword FROM pg_authid WHERE rolname = $1", user).Scan(&verifier)
	if err != nil || verifier == nil {
		t.Logf("cannot read the password verifier of %s (not a superuser?): %v", user, err)
		return false, false
	}
	return scramVerifierMatches(t, *verifier, password), true
}

// scramVerifierMatches checks a "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>"
// verifier (RFC 5802, RFC 7677) against password, which needs no SASLprep
// since it is ASCII without spaces.
func scramVerifierMatches(t testing.TB, verifier, password string) bool {
	t.Helper()
	mech, rest, _ := strings.Cut(verifier, "$")
	params, keys, _ := strings.Cut(rest, "$")
	iterS, saltB64, _ := strings.Cut(params, ":")
	storedB64, serverB64, _ := strings.Cut(keys, ":")
	iter, err1 := strconv.Atoi(iterS)
	salt, err2 := base64.StdEncoding.DecodeString(saltB64)
	stored, err3 := base64.StdEncoding.DecodeString(storedB64)
	server, err4 := base64.StdEncoding.DecodeString(serverB64)
	if mech != "SCRAM-SHA-256" || err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		t.Fatalf("unexpected password verifier format %.20q...", verifier)
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, sha256.Size)
	if err != nil {
		t.Fatal(err)
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	return hmac.Equal(storedKey[:], stored) && hmac.Equal(mac(salted, "Server Key"), server)
}

// myEnv is the test MySQL/MariaDB server with a fresh database of this
// test's.
type myEnv struct {
	dsn   string
	cfg   *mysql.Config
	admin *sql.DB
	db    string // created for the test, dropped after it
}

func mysqlEnv(t testing.TB) *myEnv {
	t.Helper()
	dsn := os.Getenv("SIGIL_TEST_MYSQL_DSN")
	if dsn == "" {
		dsn = defaultMySQLDSN
	}
	cfg, err := parseMySQLDSN(dsn)
	if err != nil {
		t.Fatalf("SIGIL_TEST_MYSQL_DSN: %v", redactor{secrets: dsnPasswords(MySQL, dsn)}.err(err))
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	admin := sql.OpenDB(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		admin.Close()
		unavailable(t, "MySQL/MariaDB for tests is unreachable (set SIGIL_TEST_MYSQL_DSN, default "+
			defaultMySQLDSN+"): "+redactor{secrets: dsnPasswords(MySQL, dsn)}.text(err.Error()))
	}
	e := &myEnv{dsn: dsn, cfg: cfg, admin: admin, db: "sigil_plugin_" + suffix(t)}
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+e.db); err != nil {
		t.Fatalf("creating database %s: %v", e.db, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE "+e.db); err != nil {
			t.Errorf("dropping database %s: %v", e.db, err)
		}
		admin.Close()
	})
	return e
}

// login connects as user with password, with no default database, and
// checks that the server accepts it.
func (e *myEnv) login(ctx context.Context, user, password string) (*sql.DB, error) {
	cfg := e.cfg.Clone()
	cfg.User, cfg.Passwd, cfg.DBName = user, password, ""
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func (e *myEnv) exec(t testing.TB, q string) {
	t.Helper()
	if _, err := e.admin.ExecContext(t.Context(), q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// openDB opens cfg and closes it when t ends.
func openDB(t testing.TB, cfg Config) *DB {
	t.Helper()
	db, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

// newCredentials generates a name and a password.
func newCredentials(t testing.TB, plugin string) (string, string) {
	t.Helper()
	name, err := GenerateUsername(plugin, "", UsernameData{RoleName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	pw, err := GeneratePassword()
	if err != nil {
		t.Fatal(err)
	}
	return name, pw
}

// revokeAtEnd makes sure user is gone when t ends, whatever the test did.
func revokeAtEnd(t testing.TB, db *DB, user string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := db.RevokeUser(ctx, Statements{}, user); err != nil {
			t.Errorf("cleanup: revoking %s: %v", user, err)
		}
	})
}
