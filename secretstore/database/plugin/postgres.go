package plugin

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

type postgres struct {
	pool *pgxpool.Pool
}

func openPostgres(ctx context.Context, cfg Config, red redactor) (backend, redactor, error) {
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, red, err
	}
	// The password may also have come from PGPASSWORD or the passfile.
	red = red.with(pc.ConnConfig.Password)
	pc.MaxConns = int32(min(cfg.MaxOpenConns, 1<<30))
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, red, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, red, err
	}
	var one int
	if err := pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		pool.Close()
		return nil, red, err
	}
	return &postgres{pool: pool}, red, nil
}

// run sends each statement whole with the simple protocol (Exec without
// arguments), all in one transaction.
func (p *postgres) run(ctx context.Context, k kind, stmts []string) error {
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		for i, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return &stmtError{k: k, i: i, err: err}
			}
		}
		return nil
	})
}

func (p *postgres) exists(ctx context.Context, name string) (bool, error) {
	var ok bool
	err := p.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)", name).Scan(&ok)
	return ok, err
}

// Default PostgreSQL statements.
var (
	pgRevocation = []string{
		`REASSIGN OWNED BY "{{name}}" TO CURRENT_USER; DROP OWNED BY "{{name}}"; DROP ROLE IF EXISTS "{{name}}";`,
	}
	pgRenewal  = []string{`ALTER ROLE "{{name}}" VALID UNTIL '{{expiration}}';`}
	pgRotation = []string{`ALTER ROLE "{{name}}" WITH PASSWORD '{{password}}';`}
)

func (p *postgres) defaults(_ context.Context, k kind, v *values) ([]string, error) {
	var tmpls []string
	switch k {
	case revocation:
		tmpls = pgRevocation
	case renewal:
		tmpls = pgRenewal
	case rotation:
		tmpls = pgRotation
	default:
		return nil, fmt.Errorf("no default %s statements", k)
	}
	out := make([]string, len(tmpls))
	for i, t := range tmpls {
		s, err := render(t, k, v)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

func (p *postgres) close() error {
	p.pool.Close()
	return nil
}
