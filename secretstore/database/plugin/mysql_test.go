package plugin

import (
	"bytes"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

func myCode(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// MySQL error numbers the tests expect.
const (
	erAccessDenied       = 1045
	erAccessDeniedNoUser = 1698
	erTableAccessDeny    = 1142
)

// TestMySQLLifecycle drives one dynamic user through creation, use,
// renewal, a password change and revocation. MariaDB checks passwords, so
// logins with a wrong password are refused here.
func TestMySQLLifecycle(t *testing.T) {
	e := mysqlEnv(t)
	ctx := t.Context()
	e.exec(t, "CREATE TABLE "+e.db+".granted (v int)")
	e.exec(t, "INSERT INTO "+e.db+".granted VALUES (42)")
	e.exec(t, "CREATE TABLE "+e.db+".other (v int)")
	db := openDB(t, Config{Plugin: MySQL, DSN: e.dsn})
	st := Statements{Creation: []string{
		"CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; -- the user;\n" +
			"GRANT SELECT ON `" + e.db + "`.granted TO '{{ name }}'@'%';",
	}}
	name, pw := newCredentials(t, MySQL)

	if ok, err := db.UserExists(ctx, name); err != nil || ok {
		t.Fatalf("UserExists before creation = %v, %v; want false", ok, err)
	}
	if err := db.CreateUser(ctx, st, name, pw, time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	revokeAtEnd(t, db, name)
	if ok, err := db.UserExists(ctx, name); err != nil || !ok {
		t.Fatalf("UserExists after creation = %v, %v; want true", ok, err)
	}
	if err := db.CreateUser(ctx, st, name, pw, time.Time{}); !errors.Is(err, ErrUserExists) {
		t.Errorf("CreateUser of an existing user = %v, want ErrUserExists", err)
	}
	if ok, _ := db.UserExists(ctx, name); !ok {
		t.Fatal("a refused second creation removed the user")
	}

	conn, err := e.login(ctx, name, pw)
	if err != nil {
		t.Fatalf("logging in with the password: %v", err)
	}
	var v int
	if err := conn.QueryRowContext(ctx, "SELECT v FROM "+e.db+".granted").Scan(&v); err != nil || v != 42 {
		t.Errorf("granted SELECT = %d, %v; want 42", v, err)
	}
	if _, err := conn.ExecContext(ctx, "SELECT v FROM "+e.db+".other"); myCode(err) != erTableAccessDeny {
		t.Errorf("ungranted SELECT: %v, want error %d", err, erTableAccessDeny)
	}
	conn.Close()
	_, wrong := newCredentials(t, MySQL)
	if c, err := e.login(ctx, name, wrong); err == nil {
		c.Close()
		t.Error("logging in with a wrong password succeeded")
	} else if myCode(err) != erAccessDenied {
		t.Errorf("logging in with a wrong password: %v, want error %d", err, erAccessDenied)
	}

	// MySQL has no default renewal: nothing runs, nothing fails.
	if err := db.RenewUser(ctx, st, name, time.Now().Add(2*time.Hour)); err != nil {
		t.Errorf("RenewUser: %v", err)
	}

	_, pw2 := newCredentials(t, MySQL)
	if err := db.SetPassword(ctx, st, name, pw2); err != nil {
		t.Fatalf("SetPassword: %v", err)
	}
	if c, err := e.login(ctx, name, pw); myCode(err) != erAccessDenied {
		if c != nil {
			c.Close()
		}
		t.Errorf("logging in with the old password: %v, want error %d", err, erAccessDenied)
	}
	if c, err := e.login(ctx, name, pw2); err != nil {
		t.Errorf("logging in with the new password: %v", err)
	} else {
		c.Close()
	}

	if err := db.RevokeUser(ctx, st, name); err != nil {
		t.Fatalf("RevokeUser: %v", err)
	}
	if ok, err := db.UserExists(ctx, name); err != nil || ok {
		t.Errorf("UserExists after revocation = %v, %v; want false", ok, err)
	}
	// MariaDB says 1698 rather than 1045 for a user it does not know.
	if c, err := e.login(ctx, name, pw2); myCode(err) != erAccessDenied && myCode(err) != erAccessDeniedNoUser {
		if c != nil {
			c.Close()
		}
		t.Errorf("logging in as the revoked user: %v, want error %d or %d", err, erAccessDenied, erAccessDeniedNoUser)
	}
	if err := db.RevokeUser(ctx, st, name); err != nil {
		t.Errorf("revoking twice: %v", err)
	}
	if err := db.RenewUser(ctx, st, name, time.Now()); !errors.Is(err, ErrUserNotFound) {
		t.Errorf("RenewUser of a revoked user = %v, want ErrUserNotFound", err)
	}
}

// TestMySQLFailedCreationCleansUp: DDL commits at once on MySQL, so a
// failure after CREATE USER is followed by the revocation statements.
func TestMySQLFailedCreationCleansUp(t *testing.T) {
	e := mysqlEnv(t)
	ctx := t.Context()
	db := openDB(t, Config{Plugin: MySQL, DSN: e.dsn})
	create := "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'"
	tests := []struct {
		name  string
		st    Statements
		code  string
		check func(t *testing.T, err error)
	}{
		{"missing table", Statements{Creation: []string{create, "GRANT SELECT ON `" + e.db + "`.missing TO '{{name}}'@'%'"}}, "1146", nil},
		{"split part fails", Statements{Creation: []string{create + "; GRANT SELECT ON `" + e.db + "`.missing TO '{{name}}'@'%'"}}, "1146",
			func(t *testing.T, err error) {
				if !strings.Contains(err.Error(), "creation statement 1 (part 2)") {
					t.Errorf("error %q does not name the failed part", err)
				}
			}},
		{"syntax error at the password", Statements{Creation: []string{create, "GRANT USAGE ON *.* TO '{{name}}'@'%' '{{password}}'"}}, "1064",
			func(t *testing.T, err error) {
				if !strings.Contains(err.Error(), Redacted) {
					t.Errorf("expected the server to echo the password (redacted) in %v", err)
				}
			}},
		{"custom revocation used for cleanup", Statements{
			Creation:   []string{create, "GRANT SELECT ON `" + e.db + "`.missing TO '{{name}}'@'%'"},
			Revocation: []string{"DROP USER '{{name}}'@'%'"},
		}, "1146", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, pw := newCredentials(t, MySQL)
			revokeAtEnd(t, db, name)
			err := db.CreateUser(ctx, tt.st, name, pw, time.Time{})
			var de *Error
			if !errors.As(err, &de) || de.Code != tt.code {
				t.Fatalf("CreateUser = %v, want a database error %s", err, tt.code)
			}
			t.Logf("error: %v", err)
			if strings.Contains(err.Error(), pw) {
				t.Errorf("the error quotes the password: %v", err)
			}
			if tt.check != nil {
				tt.check(t, err)
			}
			if ok, err := db.UserExists(ctx, name); err != nil || ok {
				t.Errorf("UserExists after a failed creation = %v, %v; want false", ok, err)
			}
		})
	}
	t.Run("cleanup failure is reported too", func(t *testing.T) {
		name, pw := newCredentials(t, MySQL)
		revokeAtEnd(t, db, name)
		st := Statements{
			Creation:   []string{create, "GRANT SELECT ON `" + e.db + "`.missing TO '{{name}}'@'%'"},
			Revocation: []string{"DROP USER '{{name}}'@'nowhere.invalid'"},
		}
		err := db.CreateUser(ctx, st, name, pw, time.Time{})
		if err == nil || !strings.Contains(err.Error(), "cleaning up") {
			t.Fatalf("CreateUser = %v, want the creation and the cleanup errors", err)
		}
		t.Logf("error: %v", err)
		if strings.Contains(err.Error(), pw) {
			t.Errorf("the error quotes the password: %v", err)
		}
	})
}

// TestMySQLDefaultsCoverEveryHost: the default rotation and revocation act
// on every account with the user name, not only 'name'@'%'.
func TestMySQLDefaultsCoverEveryHost(t *testing.T) {
	e := mysqlEnv(t)
	ctx := t.Context()
	db := openDB(t, Config{Plugin: MySQL, DSN: e.dsn})
	st := Statements{Creation: []string{
		"CREATE USER '{{name}}'@'localhost' IDENTIFIED BY '{{password}}'",
		"CREATE USER '{{name}}'@'127.0.0.1' IDENTIFIED BY '{{password}}'",
	}}
	name, pw := newCredentials(t, MySQL)
	if err := db.CreateUser(ctx, st, name, pw, time.Time{}); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	revokeAtEnd(t, db, name)
	_, pw2 := newCredentials(t, MySQL)
	if err := db.SetPassword(ctx, Statements{}, name, pw2); err != nil {
		t.Fatalf("SetPassword: %v", err)
	}
	if c, err := e.login(ctx, name, pw2); err != nil {
		t.Errorf("logging in over TCP with the new password: %v", err)
	} else {
		c.Close()
	}
	var n int
	if err := e.admin.QueryRowContext(ctx, "SELECT COUNT(*) FROM mysql.user WHERE User = ?", name).Scan(&n); err != nil || n != 2 {
		t.Fatalf("accounts = %d, %v; want 2", n, err)
	}
	if err := db.RevokeUser(ctx, Statements{}, name); err != nil {
		t.Fatalf("RevokeUser: %v", err)
	}
	if ok, _ := db.UserExists(ctx, name); ok {
		t.Error("an account of the user survived the default revocation")
	}
}

func TestMySQLOpen(t *testing.T) {
	e := mysqlEnv(t)
	const secret = "Never-Show-This-pw1"
	if e.cfg.Net == "tcp" {
		u := url.URL{Scheme: "mysql", User: url.UserPassword(e.cfg.User, e.cfg.Passwd), Host: e.cfg.Addr, Path: "/" + e.db, RawQuery: "timeout=5s"}
		if e.cfg.Passwd == "" {
			u.User = url.User(e.cfg.User)
		}
		db := openDB(t, Config{Plugin: MySQL, DSN: u.String()})
		if ok, err := db.UserExists(t.Context(), e.cfg.User); err != nil || !ok {
			t.Errorf("through a mysql:// URL: UserExists(%s) = %v, %v", e.cfg.User, ok, err)
		}
	}
	wrong := e.cfg.Clone()
	wrong.Passwd = secret
	tests := []struct {
		name, dsn, reason, code string
	}{
		{"wrong password", wrong.FormatDSN(), "Access denied", "1045"},
		{"wrong password url", "mysql://" + e.cfg.User + ":" + secret + "@" + e.cfg.Addr + "/", "Access denied", "1045"},
		{"no server", "root:" + secret + "@tcp(127.0.0.1:1)/?timeout=5s", "connection refused", ""},
		{"bad dsn", "root:" + secret + "@tcp(127.0.0.1:3306)", "slash", ""},
		{"bad param", "root:" + secret + "@tcp(127.0.0.1:3306)/?parseTime=maybe", "invalid bool", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			db, err := Open(t.Context(), Config{Plugin: MySQL, DSN: tt.dsn, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("error %q does not give the reason %q", err, tt.reason)
			}
			var de *Error
			if tt.code != "" && (!errors.As(err, &de) || de.Code != tt.code) {
				t.Errorf("error %v: want code %s", err, tt.code)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
				t.Errorf("error %q or logs %q quote the password", err, logs.String())
			}
		})
	}
}

func TestMySQLLoggerRedacts(t *testing.T) {
	var buf bytes.Buffer
	l := mysqlLogger{log: slog.New(slog.NewTextHandler(&buf, nil)), red: redactor{}.with("Secret-pw-12345678")}
	l.Print("packets.go:58 unexpected EOF near Secret-pw-12345678\n")
	if strings.Contains(buf.String(), "Secret-pw") || !strings.Contains(buf.String(), Redacted) {
		t.Errorf("log = %q", buf.String())
	}
}

func TestParseMySQLDSN(t *testing.T) {
	tests := []struct {
		dsn                      string
		user, pass, addr, dbName string
		err                      bool
	}{
		{dsn: "root@tcp(127.0.0.1:3306)/", user: "root", addr: "127.0.0.1:3306"},
		{dsn: "u:p@ss@tcp(db:3306)/app", user: "u", pass: "p@ss", addr: "db:3306", dbName: "app"},
		{dsn: "mysql://u:p%40ss%3Aw@db/app?timeout=5s", user: "u", pass: "p@ss:w", addr: "db:3306", dbName: "app"},
		{dsn: "mysql://u@[::1]:3307/", user: "u", addr: "[::1]:3307"},
		{dsn: "mysql://u:pw@/", user: "u", pass: "pw", addr: "127.0.0.1:3306"},
		{dsn: "mysql://u:pw@db/a/b", err: true},
		{dsn: "mysql://u:pw@db/?parseTime=maybe", err: true},
		{dsn: "no slash", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.dsn, func(t *testing.T) {
			c, err := parseMySQLDSN(tt.dsn)
			if tt.err {
				if err == nil {
					t.Fatalf("parsed %+v, want an error", c)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.User != tt.user || c.Passwd != tt.pass || c.Addr != tt.addr || c.DBName != tt.dbName || c.Net != "tcp" {
				t.Errorf("got user %q pass %q net %q addr %q db %q", c.User, c.Passwd, c.Net, c.Addr, c.DBName)
			}
		})
	}
}

func TestQuoteMySQLString(t *testing.T) {
	for in, want := range map[string]string{
		"%":         "'%'",
		"localhost": "'localhost'",
		"a'b":       "'a''b'",
		`a\b`:       `'a\\b'`,
		"a\x00\n\r": `'a\0\n\r'`,
		"{{name}}":  "'{{name}}'",
		"192.168.%": "'192.168.%'",
	} {
		if got := quoteMySQLString(in); got != want {
			t.Errorf("quoteMySQLString(%q) = %s, want %s", in, got, want)
		}
	}
}
