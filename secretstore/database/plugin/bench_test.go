package plugin

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BenchmarkCreateUserPostgres measures CreateUser with a one-statement
// creation: the existence check, BEGIN, CREATE ROLE (the server hashes the
// password: SCRAM-SHA-256, 4096 iterations), COMMIT. Compare with
// BenchmarkRawCreateRolePostgres for the adapter's overhead. The roles are
// dropped after the timed loop.
func BenchmarkCreateUserPostgres(b *testing.B) {
	e := postgresEnv(b)
	db := openDB(b, Config{Plugin: Postgres, DSN: e.dsn, MaxOpenConns: 1})
	st := Statements{Creation: []string{`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'`}}
	_, pw := newCredentials(b, Postgres)
	prefix := "v-bench-" + suffix(b) + "-"
	var names []string
	b.Cleanup(func() { dropRoles(b, e.admin, names) })
	ctx := b.Context()
	exp := time.Now().Add(time.Hour)
	for b.Loop() {
		name := prefix + strconv.Itoa(len(names))
		if err := db.CreateUser(ctx, st, name, pw, exp); err != nil {
			b.Fatal(err)
		}
		names = append(names, name)
	}
}

// BenchmarkRawCreateRolePostgres is the floor: one CREATE ROLE ... LOGIN
// PASSWORD on one pgx connection, nothing else.
func BenchmarkRawCreateRolePostgres(b *testing.B) {
	e := postgresEnv(b)
	ctx := b.Context()
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	_, pw := newCredentials(b, Postgres)
	prefix := "v-raw-" + suffix(b) + "-"
	var names []string
	b.Cleanup(func() { dropRoles(b, e.admin, names) })
	for b.Loop() {
		name := prefix + strconv.Itoa(len(names))
		if _, err := conn.Exec(ctx, `CREATE ROLE "`+name+`" LOGIN PASSWORD '`+pw+`'`); err != nil {
			b.Fatal(err)
		}
		names = append(names, name)
	}
}

func dropRoles(tb testing.TB, admin *pgx.Conn, names []string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for len(names) > 0 {
		n := min(len(names), 500)
		quoted := make([]string, n)
		for i, name := range names[:n] {
			quoted[i] = `"` + name + `"`
		}
		if _, err := admin.Exec(ctx, "DROP ROLE IF EXISTS "+strings.Join(quoted, ", ")); err != nil {
			tb.Errorf("dropping benchmark roles: %v", err)
			return
		}
		names = names[n:]
	}
}
