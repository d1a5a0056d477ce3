package plugin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"

	"github.com/go-sql-driver/mysql"
)

type mysqlDB struct {
	db *sql.DB
}

func openMySQL(ctx context.Context, cfg Config, red redactor) (backend, redactor, error) {
	mc, err := parseMySQLDSN(cfg.DSN)
	if err != nil {
		return nil, red, err
	}
	red = red.with(mc.Passwd)
	mc.Logger = mysqlLogger{log: cfg.Logger, red: red}
	conn, err := mysql.NewConnector(mc)
	if err != nil {
		return nil, red, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(cfg.MaxOpenConns)
	db.SetMaxIdleConns(cfg.MaxOpenConns)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, red, err
	}
	var one int
	if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		_ = db.Close()
		return nil, red, err
	}
	return &mysqlDB{db: db}, red, nil
}

// parseMySQLDSN reads go-sql-driver's DSN form, or a mysql:// URL:
// mysql://user:pass@host[:port]/[db][?driver parameters], the port 3306 by
// default, the host 127.0.0.1 if empty.
func parseMySQLDSN(dsn string) (*mysql.Config, error) {
	if !strings.HasPrefix(dsn, "mysql://") {
		return mysql.ParseDSN(dsn)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		// url's errors quote the input, password and all.
		return nil, errors.New("invalid mysql:// URL")
	}
	if u.Opaque != "" || u.Fragment != "" {
		return nil, errors.New("invalid mysql:// URL: want mysql://user:password@host:port/database?parameters")
	}
	addr := u.Host
	if addr == "" {
		addr = "127.0.0.1:3306"
	} else if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "3306")
	}
	db := strings.TrimPrefix(u.Path, "/")
	if strings.Contains(db, "/") {
		return nil, fmt.Errorf("invalid mysql:// URL: database name %q has a '/'", db)
	}
	// The driver parses the parameters (and sets TLS up for the host);
	// the user and password are set afterwards so that no character of
	// theirs can confuse its parser.
	mc, err := mysql.ParseDSN("tcp(" + addr + ")/" + url.PathEscape(db) + "?" + u.RawQuery)
	if err != nil {
		return nil, err
	}
	mc.User = u.User.Username()
	mc.Passwd, _ = u.User.Password()
	return mc, nil
}

// mysqlLogger sends the driver's messages to slog, redacted.
type mysqlLogger struct {
	log *slog.Logger
	red redactor
}

func (l mysqlLogger) Print(v ...any) {
	l.log.Warn("mysql driver", "msg", l.red.text(strings.TrimSpace(fmt.Sprint(v...))))
}

// run executes the statements one by one on one connection, each split
// into the single statements that MySQL takes per query.
func (m *mysqlDB) run(ctx context.Context, k kind, stmts []string) error {
	conn, err := m.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	for i, s := range stmts {
		parts := mysqlStatements(s)
		for j, part := range parts {
			if _, err := conn.ExecContext(ctx, part); err != nil {
				e := &stmtError{k: k, i: i, err: err}
				if len(parts) > 1 {
					e.part = j + 1
				}
				return e
			}
		}
	}
	return nil
}

func (m *mysqlDB) exists(ctx context.Context, name string) (bool, error) {
	var ok bool
	err := m.db.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM mysql.user WHERE User = ?)", name).Scan(&ok)
	return ok, err
}

// defaults builds the default revocation and rotation from the accounts
// that exist with the user name: MySQL identifies a user by name and
// host, and the root user, say, is rarely 'root'@'%'.
func (m *mysqlDB) defaults(ctx context.Context, k kind, v *values) ([]string, error) {
	if k == renewal {
		return nil, nil
	}
	if k != revocation && k != rotation {
		return nil, fmt.Errorf("no default %s statements", k)
	}
	rows, err := m.db.QueryContext(ctx, "SELECT Host FROM mysql.user WHERE User = ? ORDER BY Host", v.name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var accounts []string
	for rows.Next() {
		var host string
		if err := rows.Scan(&host); err != nil {
			return nil, err
		}
		account := "'" + v.name + "'@" + quoteMySQLString(host)
		if k == rotation {
			account += " IDENTIFIED BY '" + v.password + "'"
		}
		accounts = append(accounts, account)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(accounts) == 0 {
		return nil, nil
	}
	if k == revocation {
		return []string{"DROP USER IF EXISTS " + strings.Join(accounts, ", ")}, nil
	}
	return []string{"ALTER USER " + strings.Join(accounts, ", ")}, nil
}

// quoteMySQLString quotes s as a MySQL string literal, escaping the
// characters that are special there (backslash escapes on, as by default;
// with NO_BACKSLASH_ESCAPES a host holding a quote or backslash fails to
// match rather than escaping the literal).
func quoteMySQLString(s string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for _, c := range []byte(s) {
		switch c {
		case '\'':
			b.WriteString("''")
		case '\\':
			b.WriteString(`\\`)
		case 0:
			b.WriteString(`\0`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case 0x1a:
			b.WriteString(`\Z`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

func (m *mysqlDB) close() error { return m.db.Close() }
