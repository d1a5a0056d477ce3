package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/sigil-pki/sigil/identity/agentapi"
	"github.com/sigil-pki/sigil/identity/entry"
	"github.com/sigil-pki/sigil/server"
	"github.com/sigil-pki/sigil/storage"
)

// procCPU returns the user+system CPU time a process has used.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which ends with ')'): utime is the
	// 12th, stime the 13th, in clock ticks (100 per second on Linux).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// procRSS returns a process's resident memory in KiB.
func procRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// benchStream is one synthetic agent's sync stream.
type benchStream struct {
	bytes  atomic.Int64
	deltas atomic.Int64
	full   chan struct{}
	delta  chan struct{}
}

// TestAgentLoadFigures measures what BENCHMARKS.md reports for agents:
// server CPU and bytes for 100 agents with 100 entries each (steady state
// and one entry change), entry-to-workload propagation through a real
// agent, and an agent's memory with 1,000 workload identities. It runs
// only with SIGIL_BENCH_AGENTS=1.
func TestAgentLoadFigures(t *testing.T) {
	if os.Getenv("SIGIL_BENCH_AGENTS") != "1" {
		t.Skip("set SIGIL_BENCH_AGENTS=1 to measure")
	}
	const agents, perAgent, memEntries = 100, 100, 1000
	dir := shortDir(t)
	httpsAddr, httpAddr := freePort(t), freePort(t)
	devArgs := []string{"dev", "--data-dir", filepath.Join(dir, "server"), "--https", httpsAddr, "--http", httpAddr}
	srv := start(t, nil, devArgs...)
	waitHealth(t, "http://"+httpAddr, http.StatusOK, srv)
	srv.stop(t)
	var info devJSON
	getJSONFile(t, filepath.Join(dir, "server", "dev.json"), &info)
	uid := "unix:uid:" + strconv.Itoa(os.Getuid())
	agentID := func(node string) string { return agentapi.AgentID(info.TrustDomain, node) }

	// 10,000 entries for the synthetic agents and 1,000 for the memory
	// agent, stored directly while the server is down (the admin API
	// reloads the whole snapshot after each change).
	st, err := storage.Open(t.Context(), storage.Options{Backend: "sqlite", Path: filepath.Join(dir, "server", "sigil.db")})
	if err != nil {
		t.Fatal(err)
	}
	add := func(spiffeID, parent string) string {
		e, err := entry.New(nil, time.Now(), entry.Entry{SPIFFEID: spiffeID, ParentID: parent, Selectors: []string{uid}, X509SVIDTTL: time.Hour, JWTSVIDTTL: 5 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.CreateEntry(t.Context(), storage.RegistrationEntry(e)); err != nil {
			t.Fatal(err)
		}
		return e.ID
	}
	var changeID string
	for a := range agents {
		for i := range perAgent {
			id := add(fmt.Sprintf("spiffe://%s/bench/%03d/%03d", info.TrustDomain, a, i), agentID(fmt.Sprintf("node-%03d", a)))
			if a == 42 && i == 0 {
				changeID = id
			}
		}
	}
	for i := range memEntries {
		add(fmt.Sprintf("spiffe://%s/mem/%04d", info.TrustDomain, i), agentID("node-mem"))
	}
	st.Close()

	srv = start(t, nil, devArgs...)
	waitHealth(t, "http://"+httpAddr, http.StatusOK, srv)
	pid := srv.cmd.Process.Pid
	opCert, err := tls.LoadX509KeyPair(info.OperatorCert, info.OperatorKey)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, _ := os.ReadFile(info.RootCA)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	client := func(cert tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}}}
	}
	op := client(opCert)
	post := func(c *http.Client, method, path string, in, out any) {
		t.Helper()
		b, _ := json.Marshal(in)
		req, _ := http.NewRequestWithContext(t.Context(), method, info.HTTPSURL+path, bytes.NewReader(b))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %s %s", method, path, resp.Status, body)
		}
		if out != nil {
			json.Unmarshal(body, out)
		}
	}
	token := func(node string) string {
		var out server.JoinTokenResponse
		post(op, "POST", "/v1/agents/join-tokens", server.JoinTokenRequest{NodeID: node}, &out)
		return out.Token
	}

	// 100 synthetic agents: attest, then hold a sync stream each.
	streams := make([]*benchStream, agents)
	startFull := time.Now()
	for a := range agents {
		key, csr := newBenchCSR(t)
		var sv agentapi.SVIDResponse
		post(client(tls.Certificate{}), "POST", agentapi.PathAttest, agentapi.AttestRequest{JoinToken: token(fmt.Sprintf("node-%03d", a)), CSR: csr}, &sv)
		c := client(tls.Certificate{Certificate: sv.Chain, PrivateKey: key})
		s := &benchStream{full: make(chan struct{}), delta: make(chan struct{}, 16)}
		streams[a] = s
		req, _ := http.NewRequestWithContext(t.Context(), "GET", info.HTTPSURL+agentapi.PathSync, nil)
		resp, err := c.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("sync %d: %v %v", a, resp, err)
		}
		go func() {
			defer resp.Body.Close()
			dec := agentapi.NewDecoder(countingReader{resp.Body, &s.bytes})
			for {
				m, err := dec.Decode()
				if err != nil {
					return
				}
				switch m.Kind {
				case agentapi.KindFull:
					if len(m.Upserts) != perAgent {
						t.Errorf("agent %d: full set of %d", a, len(m.Upserts))
					}
					close(s.full)
				case agentapi.KindDelta:
					s.deltas.Add(1)
					s.delta <- struct{}{}
				}
			}
		}()
	}
	for _, s := range streams {
		<-s.full
	}
	var fullBytes int64
	for _, s := range streams {
		fullBytes += s.bytes.Load()
	}
	t.Logf("attest + first full sync of %d agents x %d entries: %s, %d bytes of sync stream in all (%d per agent)",
		agents, perAgent, time.Since(startFull).Round(time.Millisecond), fullBytes, fullBytes/agents)

	total := func() int64 {
		var n int64
		for _, s := range streams {
			n += s.bytes.Load()
		}
		return n
	}
	// Steady state.
	const window = 30 * time.Second
	cpu0, b0 := procCPU(t, pid), total()
	time.Sleep(window)
	cpu1, b1 := procCPU(t, pid), total()
	t.Logf("steady state over %s: server CPU %s (%.2f%% of one core), %d bytes to all agents (%.0f B/s)",
		window, cpu1-cpu0, 100*float64(cpu1-cpu0)/float64(window), b1-b0, float64(b1-b0)/window.Seconds())

	// One entry change.
	var e server.EntryJSON
	getOp := func(path string, out any) {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", info.HTTPSURL+path, nil)
		resp, err := op.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(out)
	}
	getOp("/v1/entries/"+changeID, &e)
	e.Hint = "changed"
	cpu0, b0 = procCPU(t, pid), total()
	before := make([]int64, agents)
	for i, s := range streams {
		before[i] = s.bytes.Load()
	}
	changeAt := time.Now()
	post(op, "PUT", "/v1/entries/"+changeID, e, nil)
	answered := time.Since(changeAt)
	<-streams[42].delta
	seen := time.Since(changeAt)
	t.Logf("one entry change: the API answered after %s", answered.Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	cpu1, b1 = procCPU(t, pid), total()
	var touched []int
	for i, s := range streams {
		if s.bytes.Load() != before[i] {
			touched = append(touched, i)
		}
	}
	t.Logf("one entry change: delta on the stream %s after the API call began; server CPU %s for the change and the 2 s after it (%d entries on the server); %d bytes to all agents; streams that received anything: %v",
		seen.Round(time.Millisecond), cpu1-cpu0, agents*perAgent+memEntries, b1-b0, touched)

	// Propagation through a real agent to a go-spiffe watcher.
	real := startAgent(t, info, filepath.Join(dir, "real"), "--join-token", token("node-real"))
	watch, err := workloadapi.New(t.Context(), workloadapi.WithAddr("unix://"+real.socket))
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	seenIDs := make(chan []string, 64)
	post(op, "POST", "/v1/entries", server.EntryJSON{SPIFFEID: "spiffe://" + info.TrustDomain + "/prop/seed", ParentID: agentID("node-real"), Selectors: []string{uid}}, nil)
	go watch.WatchX509Context(t.Context(), x509IDs(func(ids []string) { seenIDs <- ids }))
	<-seenIDs
	const rounds = 100
	lat := make([]time.Duration, 0, rounds)
	for i := range rounds {
		want := fmt.Sprintf("spiffe://%s/prop/%03d", info.TrustDomain, i)
		t0 := time.Now()
		post(op, "POST", "/v1/entries", server.EntryJSON{SPIFFEID: want, ParentID: agentID("node-real"), Selectors: []string{uid}}, nil)
		apiTime := time.Since(t0)
		for ids := range seenIDs {
			if slices.Contains(ids, want) {
				break
			}
		}
		lat = append(lat, time.Since(t0))
		if d := time.Since(t0); d > 500*time.Millisecond {
			t.Logf("round %d took %s, of which the API call %s", i, d.Round(time.Millisecond), apiTime.Round(time.Millisecond))
		}
	}
	slices.Sort(lat)
	t.Logf("entry create -> X509Source update through an agent (%d rounds, %d entries on the server): p50 %s, p99 %s, max %s",
		rounds, agents*perAgent+memEntries+rounds, lat[rounds/2].Round(time.Millisecond), lat[rounds*99/100].Round(time.Millisecond), lat[rounds-1].Round(time.Millisecond))

	// An agent with 1,000 workload identities, then 1,000 connected
	// workload streams.
	mem := startAgent(t, info, filepath.Join(dir, "mem"), "--join-token", token("node-mem"))
	rss0 := int64(0)
	memStart := time.Now()
	c, err := fetchX509(t, mem.socket)
	if err != nil || len(c.SVIDs) != memEntries {
		t.Fatalf("memory agent served %v SVIDs: %v", c, err)
	}
	t.Logf("first fetch of %d SVIDs through the agent (signed by the server from CSRs): %s", memEntries, time.Since(memStart).Round(time.Millisecond))
	rss0 = procRSS(t, mem.p.cmd.Process.Pid)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(t.Context())
	var opened atomic.Int64
	for range 1000 {
		wg.Go(func() {
			cl, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+mem.socket))
			if err != nil {
				return
			}
			defer cl.Close()
			got := make(chan struct{}, 1)
			go cl.WatchX509Bundles(ctx, bundleWatcher(func() {
				select {
				case got <- struct{}{}:
				default:
				}
			}))
			select {
			case <-got:
				opened.Add(1)
			case <-ctx.Done():
			}
			<-ctx.Done()
		})
	}
	for deadline := time.Now().Add(60 * time.Second); opened.Load() < 1000 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	rss1 := procRSS(t, mem.p.cmd.Process.Pid)
	cancel()
	wg.Wait()
	t.Logf("agent RSS: %d KiB with %d identities (SVIDs with their keys, cached; spares come later, at a quarter of the 1 h lifetime) and one stream; %d KiB with %d workload streams open as well",
		rss0, memEntries, rss1, opened.Load())
}

// bundleWatcher calls f at every X.509 bundle update.
type bundleWatcher func()

func (f bundleWatcher) OnX509BundlesUpdate(*x509bundle.Set) { f() }
func (bundleWatcher) OnX509BundlesWatchError(error)         {}

// newBenchCSR makes a P-256 key and a CSR signed with it.
func newBenchCSR(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}
