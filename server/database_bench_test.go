package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// BenchmarkDynamicCredsPostgres: credentials per second through the whole
// path (mTLS GET /v1/database/creds/<role>, policy, lease stored, CREATE
// ROLE with a SCRAM password, log entry), 8 clients in parallel, next to
// the database's own CREATE ROLE ... LOGIN PASSWORD run raw on one
// connection and on 8. Roles are dropped afterwards.
func BenchmarkDynamicCredsPostgres(b *testing.B) {
	admin := storagetestDefaultDSN(b)
	b.Run("raw-1conn", func(b *testing.B) { benchRawCreateRole(b, admin, 1) })
	b.Run("raw-8conns", func(b *testing.B) { benchRawCreateRole(b, admin, 8) })
	b.Run("sigil-8clients", func(b *testing.B) {
		r := startRunning(b)
		r.adminCall(b, "POST", "/v1/database/config/pg", fmt.Sprintf(`{"plugin_name":"postgres","connection_url":%q,"allowed_roles":["bench"],"max_open_connections":8}`, admin), http.StatusNoContent)
		r.adminCall(b, "POST", "/v1/database/roles/bench", `{"db_name":"pg","default_ttl":"1h",
			"creation_statements":["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'"]}`, http.StatusNoContent)
		r.putPolicy(b, "bench", `
rules:
  - spiffe_id: spiffe://example.org/bench/*
    paths: ["database/creds/bench"]
    capabilities: [read]
`)
		const clients = 8
		cs := make([]*http.Client, clients)
		for i := range cs {
			cs[i], _ = r.svidClient(b, fmt.Sprintf("spiffe://example.org/bench/%d", i), time.Hour)
		}
		var next atomic.Int64
		b.SetParallelism(clients / 2)
		b.ResetTimer()
		t0 := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			c := cs[int(next.Add(1)-1)%clients]
			for pb.Next() {
				code, body := call(b, c, "GET", r.adminURL+"/v1/database/creds/bench", "")
				if code != http.StatusOK {
					b.Errorf("creds: %d %s", code, body)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "creds/s")
		b.StopTimer()
		r.adminCall(b, "PUT", "/v1/sys/leases/revoke-prefix/database/creds/bench/", "", http.StatusOK)
	})
}

func storagetestDefaultDSN(b *testing.B) string {
	b.Helper()
	return testPostgresAdminDSN(b)
}

func benchRawCreateRole(b *testing.B, dsn string, conns int) {
	ctx := b.Context()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	prefix := randName("v-raw-") + "-"
	var (
		mu    sync.Mutex
		names []string
		n     atomic.Int64
	)
	b.SetParallelism(max(conns/2, 1))
	b.ResetTimer()
	t0 := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			name := fmt.Sprintf("%s%d", prefix, n.Add(1))
			if _, err := pool.Exec(ctx, `CREATE ROLE "`+name+`" LOGIN PASSWORD 'Aa1-raw-benchmark-password-0000'`); err != nil {
				b.Error(err)
				return
			}
			mu.Lock()
			names = append(names, name)
			mu.Unlock()
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "roles/s")
	b.StopTimer()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	for len(names) > 0 {
		k := min(len(names), 500)
		quoted := make([]string, k)
		for i, nm := range names[:k] {
			quoted[i] = `"` + nm + `"`
		}
		if _, err := conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+strings.Join(quoted, ", ")); err != nil {
			b.Fatal(err)
		}
		names = names[k:]
	}
}
