package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/config"
	"github.com/sigil-pki/sigil/secretstore"
	"github.com/sigil-pki/sigil/storage/storagetest"
)

// nopAuditor records nothing: only for pricing the log entry.
type nopAuditor struct{}

func (nopAuditor) Record(context.Context, secretstore.Event) error { return nil }

// benchSecrets runs 64 keep-alive mTLS clients reading (or writing) one
// secret each through the HTTPS listener, and reports the rate and the
// p50/p99 latency.
func benchSecrets(b *testing.B, cfg config.Config, write, logged bool) {
	r := startRunningWith(b, cfg)
	if !logged {
		r.newSecrets(nopAuditor{})
		if err := r.refreshPolicies(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
	r.putPolicy(b, "bench", `
rules:
  - spiffe_id: spiffe://example.org/bench/*
    paths: ["secret/bench/*"]
    capabilities: [read, create, update]
`)
	// The benchmark's own policy write may have reset the snapshot built
	// above; make sure the set in force has it.
	r.secrets.policies.Store(&policySnapshot{revision: -1, set: r.secrets.policies.Load().set})
	if err := r.refreshPolicies(b.Context()); err != nil {
		b.Fatal(err)
	}
	const clients = 64
	cs := make([]*http.Client, clients)
	for i := range cs {
		cs[i], _ = r.svidClient(b, fmt.Sprintf("spiffe://example.org/bench/%d", i), time.Hour)
		cs[i].Transport.(*http.Transport).MaxConnsPerHost = 1
		url := fmt.Sprintf("%s/v1/secret/data/bench/%d", r.adminURL, i)
		if code, body := call(b, cs[i], "POST", url, `{"data":{"password":"bench-value"}}`); code != http.StatusOK {
			b.Fatalf("seeding: %d %s", code, body)
		}
		if code, body := call(b, cs[i], "GET", url, ""); code != http.StatusOK {
			b.Fatalf("warming: %d %s", code, body)
		}
	}
	var (
		next atomic.Int64
		mu   sync.Mutex
		lat  = make([]time.Duration, 0, b.N)
	)
	b.SetParallelism(clients / 2) // 2 CPUs: 64 goroutines
	b.ResetTimer()
	t0 := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)-1) % clients
		c := cs[i]
		url := fmt.Sprintf("%s/v1/secret/data/bench/%d", r.adminURL, i)
		mine := make([]time.Duration, 0, 1024)
		for pb.Next() {
			start := time.Now()
			var resp *http.Response
			var err error
			if write {
				resp, err = c.Post(url, "application/json", stringsReader(`{"data":{"password":"bench-value"}}`))
			} else {
				resp, err = c.Get(url)
			}
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("HTTP %d", resp.StatusCode)
				return
			}
			mine = append(mine, time.Since(start))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "ops/s")
	reportLatency(b, lat, time.Millisecond, "ms")
}

// BenchmarkSecretReads: mTLS reads over keep-alive connections, 64 clients,
// every read on the transparency log; with "nolog", the same reads with a
// recorder that does nothing, to price the log entry.
func BenchmarkSecretReads(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchSecrets(b, testConfig(b, "dev"), false, true) })
	b.Run("sqlite-nolog", func(b *testing.B) { benchSecrets(b, testConfig(b, "dev"), false, false) })
	b.Run("postgres", func(b *testing.B) { benchSecrets(b, pgConfig(b), false, true) })
}

// BenchmarkSecretWrites: each write makes a version, sealed and logged.
func BenchmarkSecretWrites(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchSecrets(b, testConfig(b, "dev"), true, true) })
	b.Run("postgres", func(b *testing.B) { benchSecrets(b, pgConfig(b), true, true) })
}

func pgConfig(b *testing.B) config.Config {
	cfg := testConfig(b, "dev")
	cfg.Storage.Type = "postgres"
	cfg.Storage.Postgres.DSN = storagetest.PostgresDSN(b)
	return cfg
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }
