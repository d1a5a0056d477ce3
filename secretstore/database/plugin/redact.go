package plugin

import (
	"errors"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

// Redacted replaces secrets in error messages and DSNs.
const Redacted = "[redacted]"

// Error is a failure reported by a database or its driver, rewritten so
// that it carries no password. It does not unwrap to the driver's error,
// whose text may hold one; errors.Is still matches what that error
// matches (context.Canceled, context.DeadlineExceeded, ...).
type Error struct {
	// Code is the server's error code when the server sent one: the
	// SQLSTATE on PostgreSQL ("28P01"), the error number on MySQL
	// ("1045"). Empty for failures of the driver or the network.
	Code string
	// Message is the driver's message, after the position of the failed
	// statement if there was one ("creation statement 2: ..."), with every
	// password involved, and the DSN's password in the forms it may
	// appear in, replaced by "[redacted]".
	Message string

	cause error
}

// Error returns the redacted message.
func (e *Error) Error() string { return e.Message }

// Is reports whether the hidden driver error matches target.
func (e *Error) Is(target error) bool { return e.cause != nil && errors.Is(e.cause, target) }

// redactor removes a set of secrets from text.
type redactor struct{ secrets []string }

// with returns a redactor that also removes the given passwords.
func (r redactor) with(passwords ...string) redactor {
	out := redactor{secrets: append([]string(nil), r.secrets...)}
	for _, p := range passwords {
		out.secrets = addSecret(out.secrets, p)
	}
	return out
}

// addSecret adds s and its URL-escaped forms to list.
func addSecret(list []string, s string) []string {
	if s == "" {
		return list
	}
	for _, f := range []string{s, url.QueryEscape(s), url.PathEscape(s), url.UserPassword("", s).String()[1:]} {
		if f != "" && !contains(list, f) {
			list = append(list, f)
		}
	}
	return list
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// text removes every secret from s, longest first so that a secret that
// contains another is removed whole.
func (r redactor) text(s string) string {
	if len(r.secrets) == 0 {
		return s
	}
	secrets := append([]string(nil), r.secrets...)
	for i := 1; i < len(secrets); i++ {
		for j := i; j > 0 && len(secrets[j]) > len(secrets[j-1]); j-- {
			secrets[j], secrets[j-1] = secrets[j-1], secrets[j]
		}
	}
	for _, sec := range secrets {
		s = strings.ReplaceAll(s, sec, Redacted)
	}
	return s
}

// err turns a driver's error into an *Error without secrets. Errors of
// this package (whose text never holds a secret) pass through.
func (r redactor) err(err error) error {
	if err == nil {
		return nil
	}
	var own *Error
	if errors.As(err, &own) || isOwn(err) {
		return err
	}
	e := &Error{Message: r.text(err.Error()), cause: err}
	var pg *pgconn.PgError
	var my *mysql.MySQLError
	switch {
	case errors.As(err, &pg):
		e.Code = pg.Code
		if pg.Detail != "" && !strings.Contains(e.Message, pg.Detail) {
			e.Message += " (detail: " + r.text(pg.Detail) + ")"
		}
	case errors.As(err, &my):
		e.Code = strconv.Itoa(int(my.Number))
	}
	return e
}

func isOwn(err error) bool {
	for _, s := range []error{ErrUnknownPlugin, ErrInvalidName, ErrInvalidPassword, ErrBadTemplate,
		ErrNoStatements, ErrUserExists, ErrUserNotFound} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// dsnPasswords returns the password written in dsn, in the forms it may
// appear in, for redaction. It works on DSNs that do not parse too.
func dsnPasswords(plugin, dsn string) []string {
	var list []string
	if i := strings.Index(dsn, "://"); i >= 0 {
		auth := dsn[i+3:]
		if end := strings.IndexAny(auth, "/?#"); end >= 0 {
			auth = auth[:end]
		}
		if at := strings.LastIndex(auth, "@"); at >= 0 {
			if _, pw, ok := strings.Cut(auth[:at], ":"); ok {
				list = addSecret(list, pw)
				if dec, err := url.PathUnescape(pw); err == nil {
					list = addSecret(list, dec)
				}
			}
		}
		if u, err := url.Parse(dsn); err == nil {
			list = addSecret(list, u.Query().Get("password"))
			list = addSecret(list, u.Query().Get("sslpassword"))
		}
		return list
	}
	if plugin == MySQL {
		if _, _, pw, ok := mysqlUserinfo(dsn); ok {
			list = addSecret(list, pw)
		}
		return list
	}
	for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
		raw := m[1]
		list = addSecret(list, raw)
		if len(raw) >= 2 && raw[0] == '\'' {
			list = addSecret(list, raw[1:len(raw)-1])
			list = addSecret(list, strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(raw[1:len(raw)-1]))
		}
	}
	return list
}

// kvPassword finds the values of password and sslpassword in libpq's
// key=value form.
var kvPassword = regexp.MustCompile(`(?:^|\s)(?:ssl)?password\s*=\s*('(?:[^'\\]|\\.)*'?|\S*)`)

// mysqlUserinfo locates the password in go-sql-driver's DSN form
// "user:pass@net(addr)/db?params" as the driver does: the last '/', the
// last '@' before it, the first ':' before that. It returns the password
// and its byte range.
func mysqlUserinfo(dsn string) (start, end int, pw string, ok bool) {
	slash := strings.LastIndex(dsn, "/")
	if slash < 0 {
		return 0, 0, "", false
	}
	at := strings.LastIndex(dsn[:slash], "@")
	if at < 0 {
		return 0, 0, "", false
	}
	colon := strings.Index(dsn[:at], ":")
	if colon < 0 {
		return 0, 0, "", false
	}
	return colon + 1, at, dsn[colon+1 : at], true
}

// redactDSN returns dsn with its password, if any, replaced by
// "[redacted]".
func redactDSN(plugin, dsn string) string {
	if strings.Contains(dsn, "://") {
		i := strings.Index(dsn, "://") + 3
		auth := dsn[i:]
		if end := strings.IndexAny(auth, "/?#"); end >= 0 {
			auth = auth[:end]
		}
		rest := dsn[i+len(auth):]
		if at := strings.LastIndex(auth, "@"); at >= 0 {
			if user, _, ok := strings.Cut(auth[:at], ":"); ok {
				auth = user + ":" + Redacted + auth[at:]
			}
		}
		if q := strings.Index(rest, "?"); q >= 0 {
			params := strings.Split(rest[q+1:], "&")
			for k, p := range params {
				if key, _, ok := strings.Cut(p, "="); ok && (key == "password" || key == "sslpassword") {
					params[k] = key + "=" + Redacted
				}
			}
			rest = rest[:q+1] + strings.Join(params, "&")
		}
		return dsn[:i] + auth + rest
	}
	if plugin == MySQL {
		if start, end, _, ok := mysqlUserinfo(dsn); ok {
			return dsn[:start] + Redacted + dsn[end:]
		}
		return dsn
	}
	return kvPassword.ReplaceAllStringFunc(dsn, func(m string) string {
		eq := strings.Index(m, "=")
		return m[:eq+1] + Redacted
	})
}
