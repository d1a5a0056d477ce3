package storagetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultPostgresDSN is the server PostgresDSN uses when
// SIGIL_TEST_POSTGRES_DSN is not set.
const DefaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// PostgresDSN creates a fresh, empty schema on the test PostgreSQL server
// and returns a DSN whose connections use it (search_path), so that tests
// never see each other's tables or locks. The schema is dropped when the
// test ends; register cleanups that close connections after calling
// PostgresDSN so that they run first.
//
// The server is SIGIL_TEST_POSTGRES_DSN, default DefaultPostgresDSN. If it
// cannot be reached the test is skipped, or fails when CI=true.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv("SIGIL_TEST_POSTGRES_DSN")
	if base == "" {
		base = DefaultPostgresDSN
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		msg := "PostgreSQL for tests is unreachable (set SIGIL_TEST_POSTGRES_DSN, default " +
			DefaultPostgresDSN + "): " + err.Error()
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true, so this test requires PostgreSQL)")
		}
		t.Skip(msg)
	}
	defer conn.Close(ctx)

	var suffix [8]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		t.Fatalf("choosing a schema name: %v", err)
	}
	schema := "sigil_t_" + hex.EncodeToString(suffix[:])
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("creating test schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("connecting to drop test schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("dropping test schema %s: %v", schema, err)
		}
	})
	return withSearchPath(t, base, schema)
}

// withSearchPath adds search_path to a DSN in either of libpq's forms.
func withSearchPath(t testing.TB, dsn, schema string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			// The error would quote the DSN, which may carry a password.
			t.Fatal("SIGIL_TEST_POSTGRES_DSN is not a valid URL")
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " search_path=" + schema
}
