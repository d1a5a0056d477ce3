package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestRedactDSN(t *testing.T) {
	tests := []struct {
		name, plugin, dsn, want string
		secret                  string // must be gone
	}{
		{"pg url", Postgres, "postgres://admin:s3cret-pw@db:5432/app?sslmode=disable",
			"postgres://admin:[redacted]@db:5432/app?sslmode=disable", "s3cret-pw"},
		{"pg url escaped", Postgres, "postgresql://admin:p%40ss%2Fw@db/app",
			"postgresql://admin:[redacted]@db/app", "p%40ss"},
		{"pg url no password", Postgres, "postgres://admin@db/app", "postgres://admin@db/app", ""},
		{"pg url query password", Postgres, "postgres://db/app?user=a&password=s3cret-pw&sslpassword=key-pw",
			"postgres://db/app?user=a&password=[redacted]&sslpassword=[redacted]", "s3cret-pw"},
		{"pg kv", Postgres, "host=db user=admin password=s3cret-pw dbname=app",
			"host=db user=admin password=[redacted] dbname=app", "s3cret-pw"},
		{"pg kv spaces", Postgres, "host=db password = s3cret-pw dbname=app",
			"host=db password =[redacted] dbname=app", "s3cret-pw"},
		{"pg kv quoted", Postgres, `host=db password='s3 cr\'et' dbname=app`,
			"host=db password=[redacted] dbname=app", "cr"},
		{"pg kv first", Postgres, "password=s3cret-pw host=db", "password=[redacted] host=db", "s3cret-pw"},
		{"pg kv sslpassword", Postgres, "host=db sslpassword=key-pw", "host=db sslpassword=[redacted]", "key-pw"},
		{"pg kv not a password key", Postgres, "host=db xpassword=keep", "host=db xpassword=keep", ""},
		{"mysql driver", MySQL, "root:s3cret-pw@tcp(127.0.0.1:3306)/test?parseTime=true",
			"root:[redacted]@tcp(127.0.0.1:3306)/test?parseTime=true", "s3cret-pw"},
		{"mysql driver at and colon in password", MySQL, "root:p@ss:w@tcp(db:3306)/",
			"root:[redacted]@tcp(db:3306)/", "p@ss"},
		{"mysql driver no password", MySQL, "root@tcp(127.0.0.1:3306)/", "root@tcp(127.0.0.1:3306)/", ""},
		{"mysql url", MySQL, "mysql://root:s3cret-pw@db:3306/test", "mysql://root:[redacted]@db:3306/test", "s3cret-pw"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := redactDSN(tt.plugin, tt.dsn)
			if got != tt.want {
				t.Errorf("redactDSN = %q, want %q", got, tt.want)
			}
			if tt.secret != "" && strings.Contains(got, tt.secret) {
				t.Errorf("redactDSN = %q still holds %q", got, tt.secret)
			}
			// Whatever form the DSN has, dsnPasswords finds what to
			// strip from error text that quotes it.
			red := redactor{secrets: dsnPasswords(tt.plugin, tt.dsn)}
			if tt.secret != "" && strings.Contains(red.text("failed: "+tt.dsn), tt.secret) {
				t.Errorf("redacting the DSN's own text left %q in: %q (secrets %q)", tt.secret, red.text(tt.dsn), red.secrets)
			}
		})
	}
}

func TestConfigPrintsRedacted(t *testing.T) {
	c := Config{Plugin: MySQL, DSN: "root:s3cret-pw@tcp(127.0.0.1:3306)/", MaxOpenConns: 2}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "db", c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c), buf.String(), fmt.Sprint(&c)} {
		if strings.Contains(s, "s3cret-pw") {
			t.Errorf("printed config holds the password: %s", s)
		}
		if !strings.Contains(s, "[redacted]") {
			t.Errorf("printed config does not say it was redacted: %s", s)
		}
	}
}

func TestRedactorErr(t *testing.T) {
	const pw = "Pw-0123456789abcdef"
	red := redactor{secrets: dsnPasswords(Postgres, "postgres://u:dsn%2Fpw@h/db")}.with(pw)
	tests := []struct {
		name     string
		err      error
		code     string
		contains string
		is       error
	}{
		{"pg syntax error near the password", &stmtError{k: creation, err: &pgconn.PgError{Severity: "ERROR", Code: "42601",
			Message: `syntax error at or near "'` + pw + `'"`}}, "42601", `creation statement 1: ERROR: syntax error at or near "'[redacted]'" (SQLSTATE 42601)`, nil},
		{"pg detail", &pgconn.PgError{Severity: "ERROR", Code: "2BP01", Message: "cannot drop", Detail: "owner of " + pw},
			"2BP01", "(detail: owner of [redacted])", nil},
		{"mysql", &mysql.MySQLError{Number: 1064, Message: "near '" + pw + "' at line 1"}, "1064", "near '[redacted]' at line 1", nil},
		{"dsn password decoded", errors.New("auth failed for dsn/pw"), "", "auth failed for [redacted]", nil},
		{"dsn password escaped", errors.New("bad url u:dsn%2Fpw@h"), "", "bad url u:[redacted]@h", nil},
		{"context kept for errors.Is", fmt.Errorf("query %s: %w", pw, context.DeadlineExceeded), "", "query [redacted]", context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := red.err(tt.err)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("red.err gave %T, want *Error", err)
			}
			if e.Code != tt.code {
				t.Errorf("Code = %q, want %q", e.Code, tt.code)
			}
			if !strings.Contains(e.Error(), tt.contains) {
				t.Errorf("Error() = %q, want it to contain %q", e.Error(), tt.contains)
			}
			for _, s := range []string{pw, "dsn/pw", "dsn%2Fpw"} {
				if strings.Contains(e.Error(), s) {
					t.Errorf("Error() = %q holds a secret", e.Error())
				}
			}
			if errors.Unwrap(err) != nil {
				t.Errorf("the redacted error unwraps to the original")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
		})
	}
	if red.err(nil) != nil {
		t.Error("red.err(nil) != nil")
	}
	own := fmt.Errorf("x: %w", ErrUserNotFound)
	if got := red.err(own); got != own {
		t.Errorf("red.err changed the package's own error: %v", got)
	}
}

func TestRedactLongestFirst(t *testing.T) {
	red := redactor{}.with("abc", "abcdef")
	if got := red.text("x abcdef y abc"); got != "x [redacted] y [redacted]" {
		t.Errorf("text = %q", got)
	}
}
