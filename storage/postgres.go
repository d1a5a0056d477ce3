package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

const defaultMaxConns = 10

func openPostgres(ctx context.Context, o Options) (*DB, error) {
	if o.DSN == "" {
		return nil, errors.New("opening postgres storage: no DSN")
	}
	cfg, err := pgx.ParseConfig(o.DSN)
	if err != nil {
		return nil, fmt.Errorf("opening postgres storage: %w", redact(err, o.Password))
	}
	if o.Password != "" {
		cfg.Password = o.Password
	}
	maxConns := o.MaxConns
	if maxConns <= 0 {
		maxConns = defaultMaxConns
	}
	connector := stdlib.GetConnector(*cfg)
	pool := sql.OpenDB(connector)
	pool.SetMaxOpenConns(maxConns)
	pool.SetMaxIdleConns(maxConns)
	if err := pool.PingContext(ctx); err != nil {
		_ = pool.Close()
		return nil, fmt.Errorf("opening postgres storage: %w", redact(err, o.Password))
	}
	// Locks hold a session each, for as long as they are held, so they get
	// connections of their own rather than starving the pool.
	lockConns := sql.OpenDB(connector)
	q := newQueries(postgresDialect)
	return &DB{
		dialect: postgresDialect,
		q:       q,
		write:   pool,
		read:    pool,
		locker:  &pgLocker{conns: lockConns, tryLockSQL: q.tryLock, unlockSQL: q.unlock},
	}, nil
}

// redact keeps a secret out of an error message. The drivers do not put
// the password in their errors; this holds that line should one start to.
func redact(err error, secret string) error {
	if secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), secret, "[redacted]"))
}

// pgLocker takes session advisory locks, each on a connection of its own
// held until release. If the connection dies, PostgreSQL releases the lock.
type pgLocker struct {
	conns      *sql.DB
	tryLockSQL string
	unlockSQL  string
}

// releaseTimeout bounds Release, which has no context of its own.
const releaseTimeout = 10 * time.Second

func (l *pgLocker) tryLock(ctx context.Context, name string) (func() error, error) {
	conn, err := l.conns.Conn(ctx)
	if err != nil {
		return nil, err
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, l.tryLockSQL, name).Scan(&ok); err != nil {
		_ = conn.Close()
		return nil, err
	}
	if !ok {
		_ = conn.Close()
		return nil, ErrLocked
	}
	return func() error {
		// Unlock explicitly before the session ends: closing the
		// connection alone would release the lock only once the server
		// has noticed, and another holder could find it still taken.
		ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
		defer cancel()
		var released bool
		err := conn.QueryRowContext(ctx, l.unlockSQL, name).Scan(&released)
		if err != nil || !released {
			// The session is in an unknown state: end it rather than let
			// the pool hand it out again, possibly still holding the lock.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		closeErr := conn.Close()
		switch {
		case err != nil:
			return fmt.Errorf("releasing lock %q: %w", name, err)
		case !released:
			return fmt.Errorf("releasing lock %q: its session no longer held it", name)
		case closeErr != nil:
			return fmt.Errorf("releasing lock %q: %w", name, closeErr)
		}
		return nil
	}, nil
}

func (l *pgLocker) close() error { return l.conns.Close() }
