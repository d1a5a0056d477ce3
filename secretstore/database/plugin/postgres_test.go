package plugin

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// TestPostgresLifecycle drives one dynamic user through creation, use,
// renewal, a password change and revocation.
//
// This machine's PostgreSQL trusts every connection (pg_hba: local and
// host 127.0.0.1/32 trust), so a login here proves the role exists and may
// log in, not that its password is right; the password is checked against
// the SCRAM verifier the server stored instead.
func TestPostgresLifecycle(t *testing.T) {
	e := postgresEnv(t)
	ctx := t.Context()
	for _, q := range []string{
		"CREATE TABLE " + e.schema + ".granted (v int)", "INSERT INTO " + e.schema + ".granted VALUES (42)",
		"CREATE TABLE " + e.schema + ".other (v int)",
	} {
		if _, err := e.admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db := openDB(t, Config{Plugin: Postgres, DSN: e.dsn})
	st := Statements{Creation: []string{
		`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`,
		`GRANT USAGE ON SCHEMA ` + e.schema + ` TO "{{ name }}"; GRANT SELECT ON ` + e.schema + `.granted TO "{{name}}";`,
	}}
	name, pw := newCredentials(t, Postgres)
	exp := time.Now().Add(time.Hour).Truncate(time.Second)

	if ok, err := db.UserExists(ctx, name); err != nil || ok {
		t.Fatalf("UserExists before creation = %v, %v; want false", ok, err)
	}
	if err := db.CreateUser(ctx, st, name, pw, exp); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	revokeAtEnd(t, db, name)
	if ok, err := db.UserExists(ctx, name); err != nil || !ok {
		t.Fatalf("UserExists after creation = %v, %v; want true", ok, err)
	}
	if got, ok := e.validUntil(t, name); !ok || !got.Equal(exp) {
		t.Errorf("rolvaliduntil = %v (set %v), want %v", got, ok, exp)
	}
	if match, ok := e.passwordIs(t, name, pw); ok && !match {
		t.Errorf("the stored verifier does not match the password")
	}
	if err := db.CreateUser(ctx, st, name, pw, exp); !errors.Is(err, ErrUserExists) {
		t.Errorf("CreateUser of an existing user = %v, want ErrUserExists", err)
	}

	// Logged in as the user: the granted SELECT works, the other does not.
	conn, err := e.login(ctx, name, pw)
	if err != nil {
		t.Fatalf("logging in as %s: %v", name, err)
	}
	var v int
	if err := conn.QueryRow(ctx, "SELECT v FROM "+e.schema+".granted").Scan(&v); err != nil || v != 42 {
		t.Errorf("granted SELECT = %d, %v; want 42", v, err)
	}
	_, err = conn.Exec(ctx, "SELECT v FROM "+e.schema+".other")
	if pgCode(err) != "42501" {
		t.Errorf("ungranted SELECT: %v, want insufficient_privilege (42501)", err)
	}
	conn.Close(ctx)

	// Renewal moves VALID UNTIL.
	exp2 := exp.Add(24 * time.Hour)
	if err := db.RenewUser(ctx, st, name, exp2); err != nil {
		t.Fatalf("RenewUser: %v", err)
	}
	if got, _ := e.validUntil(t, name); !got.Equal(exp2) {
		t.Errorf("rolvaliduntil after renewal = %v, want %v", got, exp2)
	}

	// A new password replaces the old.
	_, pw2 := newCredentials(t, Postgres)
	if err := db.SetPassword(ctx, st, name, pw2); err != nil {
		t.Fatalf("SetPassword: %v", err)
	}
	if match, ok := e.passwordIs(t, name, pw2); ok && !match {
		t.Errorf("the stored verifier does not match the new password")
	}
	if match, ok := e.passwordIs(t, name, pw); ok && match {
		t.Errorf("the stored verifier still matches the old password")
	}

	// Revocation removes the role; the login is refused; again is fine.
	if err := db.RevokeUser(ctx, st, name); err != nil {
		t.Fatalf("RevokeUser: %v", err)
	}
	if ok, err := db.UserExists(ctx, name); err != nil || ok {
		t.Errorf("UserExists after revocation = %v, %v; want false", ok, err)
	}
	if c, err := e.login(ctx, name, pw2); err == nil {
		c.Close(ctx)
		t.Errorf("logging in as the revoked role succeeded")
	} else if pgCode(err) != "28000" || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("logging in as the revoked role: %v, want role does not exist (28000)", err)
	}
	if err := db.RevokeUser(ctx, st, name); err != nil {
		t.Errorf("revoking twice: %v", err)
	}
	if err := db.RenewUser(ctx, st, name, exp2); !errors.Is(err, ErrUserNotFound) {
		t.Errorf("RenewUser of a revoked user = %v, want ErrUserNotFound", err)
	}
	if err := db.SetPassword(ctx, st, name, pw2); !errors.Is(err, ErrUserNotFound) {
		t.Errorf("SetPassword of a revoked user = %v, want ErrUserNotFound", err)
	}
}

// TestPostgresCreationIsAtomic: a failing statement rolls the whole
// creation back, and the error quotes no password even when the server
// echoes the statement near it.
func TestPostgresCreationIsAtomic(t *testing.T) {
	e := postgresEnv(t)
	ctx := t.Context()
	db := openDB(t, Config{Plugin: Postgres, DSN: e.dsn})
	create := `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}';`
	tests := []struct {
		name  string
		stmts []string
		code  string
	}{
		{"second statement fails", []string{create, `GRANT SELECT ON ` + e.schema + `.missing TO "{{name}}"`}, "42P01"},
		{"same string fails", []string{create + ` GRANT SELECT ON ` + e.schema + `.missing TO "{{name}}"`}, "42P01"},
		{"syntax error at the password", []string{`CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}' '{{password}}'`}, "42601"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, pw := newCredentials(t, Postgres)
			revokeAtEnd(t, db, name)
			err := db.CreateUser(ctx, Statements{Creation: tt.stmts}, name, pw, time.Time{})
			var de *Error
			if !errors.As(err, &de) || de.Code != tt.code {
				t.Fatalf("CreateUser = %v, want a database error %s", err, tt.code)
			}
			if strings.Contains(err.Error(), pw) {
				t.Errorf("the error quotes the password: %v", err)
			}
			t.Logf("error: %v", err)
			if ok, err := db.UserExists(ctx, name); err != nil || ok {
				t.Errorf("UserExists after a failed creation = %v, %v; want false", ok, err)
			}
		})
	}
	// The syntax error really did echo the password: redaction was needed.
	name, pw := newCredentials(t, Postgres)
	err := db.CreateUser(ctx, Statements{Creation: tests[2].stmts}, name, pw, time.Time{})
	if err == nil || !strings.Contains(err.Error(), Redacted) {
		t.Errorf("expected the server to echo the password (redacted) in %v", err)
	}
}

// TestPostgresRevokeOwner: the default revocation drops a role that owns
// objects and holds grants, keeping its objects (reassigned to the DSN's
// user).
func TestPostgresRevokeOwner(t *testing.T) {
	e := postgresEnv(t)
	ctx := t.Context()
	db := openDB(t, Config{Plugin: Postgres, DSN: e.dsn})
	st := Statements{Creation: []string{
		`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}'; GRANT USAGE, CREATE ON SCHEMA ` + e.schema + ` TO "{{name}}";`,
	}}
	name, pw := newCredentials(t, Postgres)
	if err := db.CreateUser(ctx, st, name, pw, time.Time{}); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	revokeAtEnd(t, db, name)
	conn, err := e.login(ctx, name, pw)
	if err != nil {
		t.Fatalf("logging in: %v", err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE "+e.schema+".made_by_user (v int)"); err != nil {
		t.Fatalf("creating a table as the user: %v", err)
	}
	conn.Close(ctx)
	if err := db.RevokeUser(ctx, Statements{}, name); err != nil {
		t.Fatalf("RevokeUser: %v", err)
	}
	if ok, _ := db.UserExists(ctx, name); ok {
		t.Error("the role still exists")
	}
	var owner string
	if err := e.admin.QueryRow(ctx, "SELECT tableowner FROM pg_tables WHERE schemaname = $1 AND tablename = 'made_by_user'", e.schema).Scan(&owner); err != nil {
		t.Fatalf("the user's table is gone: %v", err)
	}
	var me string
	if err := e.admin.QueryRow(ctx, "SELECT current_user").Scan(&me); err != nil || owner != me {
		t.Errorf("table owner = %q, want %q", owner, me)
	}
}

func TestPostgresOpenErrors(t *testing.T) {
	e := postgresEnv(t)
	const secret = "Never-Show-This-pw1"
	cfg, err := pgx.ParseConfig(e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dsn, reason string
	}{
		{"no such user", "postgres://no_such_user_" + suffix(t) + ":" + secret + "@" + cfg.Host + ":" + strconv.Itoa(int(cfg.Port)) + "/" + cfg.Database + "?sslmode=disable", "does not exist"},
		{"no server", "postgres://postgres:" + secret + "@127.0.0.1:1/test?sslmode=disable&connect_timeout=5", "connection refused"},
		{"kv form", "host=127.0.0.1 port=1 user=postgres password=" + secret + " dbname=test sslmode=disable", "connection refused"},
		{"bad dsn", "postgres://postgres:" + secret + "@127.0.0.1:5432/test?sslmode=nonsense", "sslmode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := Open(t.Context(), Config{Plugin: Postgres, DSN: tt.dsn})
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("error %q does not give the reason %q", err, tt.reason)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q quotes the password", err)
			}
		})
	}
}

func TestPostgresConcurrent(t *testing.T) {
	e := postgresEnv(t)
	db := openDB(t, Config{Plugin: Postgres, DSN: e.dsn, MaxOpenConns: 3})
	st := Statements{Creation: []string{`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}'`}}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		name, pw := newCredentials(t, Postgres)
		revokeAtEnd(t, db, name)
		wg.Go(func() {
			ctx := context.WithoutCancel(t.Context())
			if err := db.CreateUser(ctx, st, name, pw, time.Now().Add(time.Hour)); err != nil {
				errs <- err
				return
			}
			errs <- db.RevokeUser(ctx, st, name)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestInvalidInputRunsNothing(t *testing.T) {
	e := postgresEnv(t)
	ctx := t.Context()
	db := openDB(t, Config{Plugin: Postgres, DSN: e.dsn})
	st := Statements{Creation: []string{`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}'`}}
	_, pw := newCredentials(t, Postgres)
	tests := []struct {
		name string
		err  error
		fn   func() error
	}{
		{"injection in name", ErrInvalidName, func() error {
			return db.CreateUser(ctx, st, `x"; DROP ROLE postgres; --`, pw, time.Time{})
		}},
		{"quote in password", ErrInvalidPassword, func() error {
			return db.CreateUser(ctx, st, "v-ok", "aaaaaaaaaaaaaaaa'; DROP ROLE postgres; --", time.Time{})
		}},
		{"no creation", ErrNoStatements, func() error { return db.CreateUser(ctx, Statements{}, "v-ok", pw, time.Time{}) }},
		{"bad placeholder", ErrBadTemplate, func() error {
			return db.CreateUser(ctx, Statements{Creation: []string{"{{pasword}}"}}, "v-ok", pw, time.Time{})
		}},
		{"bad revocation placeholder", ErrBadTemplate, func() error {
			return db.RevokeUser(ctx, Statements{Revocation: []string{"{{password}}"}}, "v-ok")
		}},
		{"name too long", ErrInvalidName, func() error { return db.RevokeUser(ctx, Statements{}, strings.Repeat("a", 64)) }},
		{"short password", ErrInvalidPassword, func() error { return db.SetPassword(ctx, Statements{}, "postgres", "short") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.fn(); !errors.Is(err, tt.err) {
				t.Errorf("got %v, want %v", err, tt.err)
			}
		})
	}
}

// TestScramVerifier checks the test helper on a verifier PostgreSQL 15
// stored for the password "abc".
func TestScramVerifier(t *testing.T) {
	const v = "SCRAM-SHA-256$4096:G7CQDLerKmpgnvsg5DXk+A==$rWmf1tQ/iqPqWgt+BoT7DYpxWQ1h6sJ9SbS6WcJf5y8=:bgmgiUnLZB7L4Y8KCwdSE1qyjUz3T19wgvihKopIYAc="
	if !scramVerifierMatches(t, v, "abc") {
		t.Error("the verifier of abc does not match abc")
	}
	if scramVerifierMatches(t, v, "abd") {
		t.Error("the verifier of abc matches abd")
	}
}
