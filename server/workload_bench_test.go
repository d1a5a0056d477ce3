package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/sigil-pki/sigil/config"
	"github.com/sigil-pki/sigil/identity/entry"
	"github.com/sigil-pki/sigil/storage"
)

// runningServer is an initialised server with every listener up.
type runningServer struct {
	*Server
	socket   string
	adminURL string
	admin    *http.Client
}

func startRunning(tb testing.TB) *runningServer {
	tb.Helper()
	return startRunningWith(tb, testConfig(tb, "dev"))
}

func startRunningWith(tb testing.TB, cfg config.Config) *runningServer {
	tb.Helper()
	if strings.HasSuffix(cfg.Listen.HTTPS, ":0") {
		// Fix the HTTPS port now, so that the URLs the server puts in its
		// answers (ACME's) are the ones clients reach.
		l, err := net.Listen("tcp", cfg.Listen.HTTPS)
		if err != nil {
			tb.Fatal(err)
		}
		cfg.Listen.HTTPS = l.Addr().String()
		cfg.Listen.HTTPSURL = "https://" + cfg.Listen.HTTPS
		l.Close()
	}
	s, err := New(tb.Context(), cfg, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	if st, err := s.Status(tb.Context()); err != nil {
		tb.Fatal(err)
	} else if !st.Initialized {
		if _, err := s.Initialize(tb.Context(), InitOptions{}); err != nil {
			tb.Fatal(err)
		}
	}
	l, err := s.Listen()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	r := &runningServer{
		Server:   s,
		socket:   "unix://" + cfg.Listen.WorkloadSocket,
		adminURL: "https://" + l.HTTPS.Addr().String(),
	}
	// A node joining an initialised cluster has no operator files here.
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "operator.pem")); err == nil {
		r.admin = operatorClient(tb, s, cfg.DataDir)
	}
	return r
}

// uidSelector matches this process.
func uidSelector() string { return "unix:uid:" + strconv.Itoa(os.Getuid()) }

// addEntries stores n entries for this process straight into storage and
// reloads the snapshot, as the admin API does after a create.
func (r *runningServer) addEntries(tb testing.TB, prefix string, n int) {
	tb.Helper()
	for i := range n {
		e, err := entry.New(nil, time.Now(), entry.Entry{
			SPIFFEID:  fmt.Sprintf("spiffe://example.org/%s/%d", prefix, i),
			Selectors: []string{uidSelector()},
		})
		if err != nil {
			tb.Fatal(err)
		}
		e, err = r.checkEntry(e)
		if err != nil {
			tb.Fatal(err)
		}
		if err := r.store.CreateEntry(tb.Context(), storage.RegistrationEntry(e)); err != nil {
			tb.Fatal(err)
		}
	}
	r.entriesChanged(tb.Context())
}

// createEntryHTTP creates an entry through the admin API, as 'sigil entry
// create' does.
func (r *runningServer) createEntryHTTP(tb testing.TB, spiffeID string) {
	tb.Helper()
	body, _ := json.Marshal(EntryJSON{SPIFFEID: spiffeID, Selectors: []string{uidSelector()}})
	resp, err := r.admin.Post(r.adminURL+"/v1/entries", "application/json", bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("creating entry: %s", resp.Status)
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func reportLatency(b *testing.B, lat []time.Duration, unit time.Duration, name string) {
	if len(lat) == 0 {
		return
	}
	b.ReportMetric(float64(percentile(lat, 0.50))/float64(unit), "p50-"+name)
	b.ReportMetric(float64(percentile(lat, 0.99))/float64(unit), "p99-"+name)
}

// BenchmarkWorkloadFetchCached: go-spiffe's client fetching the X.509-SVID
// of a workload whose SVID is cached: attestation, entry match, response.
func BenchmarkWorkloadFetchCached(b *testing.B) {
	r := startRunning(b)
	r.addEntries(b, "cached", 1)
	client, err := workloadapi.New(b.Context(), workloadapi.WithAddr(r.socket))
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	if _, err := client.FetchX509SVID(b.Context()); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := client.FetchX509SVID(b.Context()); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportLatency(b, lat, time.Microsecond, "µs")
}

// BenchmarkWorkloadMintFresh: X.509-SVIDs minted per second through the
// Workload API with the log on: each iteration adds 256 entries for the
// workload, and one FetchX509SVIDs call mints their SVIDs (each recorded
// and logged before the response is sent).
func BenchmarkWorkloadMintFresh(b *testing.B) {
	const perRound = 256
	r := startRunning(b)
	client, err := workloadapi.New(b.Context(), workloadapi.WithAddr(r.socket))
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	var minting time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		r.addEntries(b, "fresh"+strconv.Itoa(i), perRound)
		b.StartTimer()
		t0 := time.Now()
		svids, err := client.FetchX509SVIDs(b.Context())
		minting += time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		if len(svids) != (i+1)*perRound {
			b.Fatalf("%d SVIDs, want %d", len(svids), (i+1)*perRound)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*perRound)/minting.Seconds(), "svids/s")
}

// BenchmarkEntryToStream: from the admin API call that creates an entry to
// the new SVID arriving on an open X509Context watch (go-spiffe client).
func BenchmarkEntryToStream(b *testing.B) {
	r := startRunning(b)
	r.addEntries(b, "base", 1)
	client, err := workloadapi.New(b.Context(), workloadapi.WithAddr(r.socket))
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	updates := make(chan int, 64)
	go client.WatchX509Context(b.Context(), countWatcher(func(n int) { updates <- n }))
	if n := <-updates; n != 1 {
		b.Fatalf("first update has %d SVIDs", n)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		r.createEntryHTTP(b, "spiffe://example.org/new/"+strconv.Itoa(i))
		for n := range updates {
			if n == i+2 {
				break
			}
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportLatency(b, lat, time.Millisecond, "ms")
}

type countWatcher func(int)

func (f countWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) { f(len(c.SVIDs)) }
func (countWatcher) OnX509ContextWatchError(error)                    {}

// BenchmarkOpenStreams: memory held per open FetchX509SVID stream, with
// 10,000 streams over 100 connections (client and server share this
// process, so the figure counts both ends), then the time until every
// stream has received the push caused by one new entry. Run with
// -benchtime 1x.
func BenchmarkOpenStreams(b *testing.B) {
	const conns, perConn = 100, 100
	r := startRunning(b)
	r.addEntries(b, "streams", 1)
	path := r.socket
	before := heapAndStacks()
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(context.Background(), metadata.Pairs("workload.spiffe.io", "true")))
	defer cancel()
	var (
		wg   sync.WaitGroup
		errs = make(chan error, conns)
	)
	b.ResetTimer()
	t0 := time.Now()
	ccs := make([]*grpc.ClientConn, conns)
	streams := make(chan grpc.ServerStreamingClient[workload.X509SVIDResponse], conns*perConn)
	for c := range conns {
		cc, err := grpc.NewClient(path, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		ccs[c] = cc
		api := workload.NewSpiffeWorkloadAPIClient(cc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perConn {
				st, err := api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
				if err == nil {
					_, err = st.Recv()
				}
				if err != nil {
					errs <- err
					return
				}
				streams <- st
			}
		}()
	}
	wg.Wait()
	opened := time.Since(t0)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	after := heapAndStacks()
	b.ReportMetric(float64(conns*perConn), "streams")
	b.ReportMetric(float64(after-before)/float64(conns*perConn), "B/stream")
	b.ReportMetric(opened.Seconds(), "s-to-open")

	close(streams)
	var pushed sync.WaitGroup
	for st := range streams {
		pushed.Go(func() {
			resp, err := st.Recv()
			if err == nil && len(resp.Svids) != 2 {
				err = fmt.Errorf("push has %d SVIDs, want 2", len(resp.Svids))
			}
			if err != nil {
				b.Error(err)
			}
		})
	}
	t1 := time.Now()
	r.addEntries(b, "streams-more", 1)
	pushed.Wait()
	b.ReportMetric(time.Since(t1).Seconds(), "s-to-push-all")
	cancel()
	for _, cc := range ccs {
		cc.Close()
	}
}

func heapAndStacks() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}
