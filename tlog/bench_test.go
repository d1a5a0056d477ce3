package tlog_test

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/tlog"
)

// BenchmarkAppend measures Append throughput and latency with concurrent
// appenders on each backend. b.N is the number of entries.
func BenchmarkAppend(b *testing.B) {
	backends := []struct {
		name string
		open func(b *testing.B) tlog.Store
	}{
		{"sqlite", func(b *testing.B) tlog.Store { return newSQLiteStore(b) }},
		{"postgres", func(b *testing.B) tlog.Store { return newPostgresStore(b) }},
	}
	for _, be := range backends {
		for _, workers := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("%s/appenders=%d", be.name, workers), func(b *testing.B) {
				l := newLog(b, be.open(b), nil)
				entry := tlog.NewIssuance(tlog.KindX509Issue, baseTime, "spiffe://example.org/ns/prod/sa/api", make([]byte, 600), "0123456789abcdef0123456789abcdef")
				lat := make([]time.Duration, b.N)
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for range workers {
					wg.Go(func() {
						for {
							i := next.Add(1) - 1
							if i >= int64(b.N) {
								return
							}
							t0 := time.Now()
							if _, err := l.Append(b.Context(), entry); err != nil {
								b.Error(err)
								return
							}
							lat[i] = time.Since(t0)
						}
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				slices.Sort(lat)
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "entries/s")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			})
		}
	}
}
