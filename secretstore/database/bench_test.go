package database_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"github.com/sigil-pki/sigil/barrier"
	"github.com/sigil-pki/sigil/secretstore/database"
	"github.com/sigil-pki/sigil/secretstore/database/plugin"
	"github.com/sigil-pki/sigil/storage"
)

// BenchmarkExpiry100k: 100,000 live leases on SQLite expiring over 100
// simulated seconds (1,000 a second); each simulated second the manager
// runs until nothing is due. It reports the wall time one second's
// revocations take (p50/p99: the lag a lease sees, since the server polls
// every second) and the Go heap in use, which does not grow with the
// number of leases: they stay in storage. Revocation is a fake that
// forgets the user, so the figure is the manager's own cost; the real
// database's DROP cost is measured by the plugin's benchmarks. Run with
// -benchtime 1x.
func BenchmarkExpiry100k(b *testing.B) {
	const leases, spread = 100_000, 100
	ctx := context.Background()
	dir := b.TempDir()
	path := filepath.Join(dir, "sigil.db")
	db, err := storage.Open(ctx, storage.Options{Backend: "sqlite", Path: path})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	bar := barrier.New(barrier.Config{Store: db})
	w, _ := barrier.DevKeyWrapper(filepath.Join(dir, "dev.key"), nil)
	if err := bar.InitWrapped(ctx, "dev", w); err != nil {
		b.Fatal(err)
	}
	fake := newFakeDB("initial")
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start
	eng := database.New(database.Config{Store: db, Sealer: bar, Recorder: &recorder{}, Clock: func() time.Time { return now },
		Open: func(context.Context, plugin.Config) (database.DB, error) { return fake, nil }})
	if err := eng.WriteConnection(ctx, "db", database.Connection{Plugin: "postgres", URL: "fake://admin:initial@db", AllowedRoles: []string{"*"}}); err != nil {
		b.Fatal(err)
	}

	// The fixture: 100,000 sealed leases written in one transaction, as
	// Creds would have written them one by one.
	raw, err := sql.Open("sqlite3", path+"?_busy_timeout=10000")
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	tx, err := raw.Begin()
	if err != nil {
		b.Fatal(err)
	}
	stmt, err := tx.Prepare(`INSERT INTO leases (id, owner, issued_at, expires_at, max_expires_at, data, attempts, next_attempt, last_error)
		VALUES (?, 'spiffe://example.org/app', ?, ?, ?, ?, 0, ?, '')`)
	if err != nil {
		b.Fatal(err)
	}
	for i := range leases {
		id := fmt.Sprintf("database/creds/ro/%08d", i)
		user := fmt.Sprintf("v-ro-%08d", i)
		fake.users[user] = "x"
		data, _ := json.Marshal(map[string]any{"db_name": "db", "role": "ro", "username": user, "default_ttl": "1h"})
		sealed, err := bar.Encrypt("lease\x00"+id, data)
		if err != nil {
			b.Fatal(err)
		}
		exp := start.Add(time.Duration(1+i%spread) * time.Second).UnixNano()
		if _, err := stmt.Exec(id, start.UnixNano(), exp, exp+int64(time.Hour), sealed, exp); err != nil {
			b.Fatal(err)
		}
	}
	stmt.Close()
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapInuse
	var peak uint64
	var steps []time.Duration
	b.ResetTimer()
	t0 := time.Now()
	for s := 1; s <= spread; s++ {
		now = start.Add(time.Duration(s) * time.Second)
		st := time.Now()
		for {
			n, err := eng.ExpireDue(ctx, 256)
			if err != nil {
				b.Fatal(err)
			}
			if n < 256 {
				break
			}
		}
		steps = append(steps, time.Since(st))
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapInuse)
	}
	total := time.Since(t0)
	b.StopTimer()
	if left := len(fake.users); left != 0 {
		b.Fatalf("%d users not revoked", left)
	}
	slices.Sort(steps)
	b.ReportMetric(float64(leases)/total.Seconds(), "revocations/s")
	b.ReportMetric(float64(steps[len(steps)/2])/1e6, "p50-ms/second-of-expiries")
	b.ReportMetric(float64(steps[len(steps)*99/100])/1e6, "p99-ms/second-of-expiries")
	b.ReportMetric(float64(heapBefore)/(1<<20), "heap-MiB-before")
	b.ReportMetric(float64(peak)/(1<<20), "heap-MiB-peak")
}
