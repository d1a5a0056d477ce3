package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// agentNode is a running 'sigil agent' with its own data dir and socket.
type agentNode struct {
	p      *proc
	dir    string
	socket string
}

func startAgent(t *testing.T, info devJSON, dir string, extra ...string) *agentNode {
	t.Helper()
	sock := filepath.Join(dir, "w.sock")
	args := append([]string{"agent", "--server", info.HTTPSURL, "--ca-cert", info.RootCA,
		"--trust-domain", info.TrustDomain, "--data-dir", dir, "--socket", sock}, extra...)
	p := start(t, nil, args...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent in %s:\n%s", dir, p.out.String())
		}
	})
	return &agentNode{p: p, dir: dir, socket: sock}
}

// shortDir is a temporary directory with a path short enough for a Unix
// socket inside it.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "sa")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(d, 0o755)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// fetchX509 returns what socket serves this process, waiting up to 10 s
// for the socket to answer.
func fetchX509(t *testing.T, socket string) (*workloadapi.X509Context, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var lastErr error
	for ctx.Err() == nil {
		c, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+socket))
		if err == nil {
			return c, nil
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	return nil, lastErr
}

// servedIDs returns the SPIFFE IDs served on socket to this process.
func servedIDs(t *testing.T, socket string) ([]string, error) {
	t.Helper()
	c, err := fetchX509(t, socket)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, s := range c.SVIDs {
		ids = append(ids, s.ID.String())
	}
	slices.Sort(ids)
	return ids, nil
}

// TestAgentsEndToEnd: one server and two agents on this machine. Each
// agent's workloads get only their node's identities; entry changes reach
// an open X509Source, pushed; with the server stopped the
// workloads keep their SVIDs, and an agent restarted meanwhile serves
// them from its encrypted cache; the server back, eviction stops an agent.
func TestAgentsEndToEnd(t *testing.T) {
	dir := shortDir(t)
	httpsAddr, httpAddr := freePort(t), freePort(t)
	devArgs := []string{"dev", "--data-dir", filepath.Join(dir, "server"), "--https", httpsAddr, "--http", httpAddr}
	srv := start(t, nil, devArgs...)
	waitHealth(t, "http://"+httpAddr, http.StatusOK, srv)
	var info devJSON
	getJSONFile(t, filepath.Join(dir, "server", "dev.json"), &info)
	env, bin := info.env(), sigilBinary(t)
	uid := "unix:uid:" + strconv.Itoa(os.Getuid())
	parent := func(node string) string { return "spiffe://" + info.TrustDomain + "/sigil/agent/" + node }
	id := func(p string) string { return "spiffe://" + info.TrustDomain + "/" + p }

	// A short lifetime, so that rotations happen while the server is down.
	const ttl = 20 * time.Second
	run(t, true, env, bin, "entry", "create", "--spiffe-id", id("on-a"), "--parent", parent("node-a"), "--selector", uid, "--x509-ttl", ttl.String())
	run(t, true, env, bin, "entry", "create", "--spiffe-id", id("on-b"), "--parent", parent("node-b"), "--selector", uid)

	token := func(args ...string) string {
		return strings.Split(run(t, true, env, bin, append([]string{"agent", "token", "create"}, args...)...), "\n")[0]
	}
	tokA, tokB := token("--node-id", "node-a"), token()
	a := startAgent(t, info, filepath.Join(dir, "a"), "--join-token", tokA)
	b := startAgent(t, info, filepath.Join(dir, "b"), "--join-token", tokB, "--node-id", "node-b")

	if ids, err := servedIDs(t, a.socket); err != nil || !slices.Equal(ids, []string{id("on-a")}) {
		t.Fatalf("agent A serves %v (%v), want only %s", ids, err, id("on-a"))
	}
	if ids, err := servedIDs(t, b.socket); err != nil || !slices.Equal(ids, []string{id("on-b")}) {
		t.Fatalf("agent B serves %v (%v), want only %s", ids, err, id("on-b"))
	}
	list := run(t, true, env, bin, "agent", "list")
	if !strings.Contains(list, "node-a") || !strings.Contains(list, "node-b") {
		t.Errorf("agent list:\n%s", list)
	}

	// go-spiffe's X509Source on A's socket: never B's identity; an entry
	// made for A arrives, and leaves, pushed: within 5 s, half the 10 s
	// agents.sync_interval after which a reconciliation would have caught
	// it (the propagation time itself, 17 ms median, is a benchmark's).
	src, err := workloadapi.NewX509Source(t.Context(), workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+a.socket)))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if s, err := src.GetX509SVID(); err != nil || s.ID.String() != id("on-a") {
		t.Fatalf("X509Source on A: %v, %v", s, err)
	}
	waitFor := func(what string, within time.Duration, ok func([]string) bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			c, err := workloadapi.FetchX509Context(t.Context(), workloadapi.WithAddr("unix://"+a.socket))
			var ids []string
			if err == nil {
				for _, s := range c.SVIDs {
					ids = append(ids, s.ID.String())
				}
			}
			if ok(ids) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: A serves %v (%v)", what, ids, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// A JWT-SVID through the agent, minted and logged by the server,
	// validated by the agent against the bundle it synchronised.
	wenv := []string{"SPIFFE_ENDPOINT_SOCKET=unix://" + a.socket}
	jwt, _, _ := strings.Cut(run(t, true, wenv, bin, "workload", "jwt", "--audience", "orders"), "\n")
	if out := run(t, true, wenv, bin, "workload", "validate", "--audience", "orders", "--svid", jwt); !strings.Contains(out, id("on-a")) {
		t.Errorf("validating the agent's JWT-SVID: %s", out)
	}
	run(t, false, wenv, bin, "workload", "validate", "--audience", "other", "--svid", jwt)
	out := run(t, true, env, bin, "entry", "create", "--spiffe-id", id("on-a-2"), "--parent", parent("node-a"), "--selector", uid)
	waitFor("new entry", 5*time.Second, func(ids []string) bool { return slices.Contains(ids, id("on-a-2")) })
	run(t, true, env, bin, "entry", "delete", entryIDFrom(t, out))
	waitFor("deleted entry", 5*time.Second, func(ids []string) bool { return len(ids) == 1 && ids[0] == id("on-a") })
	if ids, _ := servedIDs(t, a.socket); slices.Contains(ids, id("on-b")) {
		t.Fatal("A serves B's identity")
	}

	// The server goes away: the open source keeps its SVID and still
	// receives a rotation (signed in advance); agent A, restarted
	// meanwhile, serves the cached one, and nothing once it has expired.
	before, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	// The spare is signed a quarter into the SVID's life.
	time.Sleep(time.Until(before.Certificates[0].NotAfter.Add(-ttl * 6 / 10)))
	srv.stop(t)
	rotated := func() bool {
		s, err := src.GetX509SVID()
		return err == nil && s.Certificates[0].SerialNumber.Cmp(before.Certificates[0].SerialNumber) != 0
	}
	for deadline := time.Now().Add(ttl); !rotated(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no rotation within %s of the server going away", ttl)
		}
	}
	a.p.stop(t)
	a = startAgent(t, info, a.dir)
	c, err := fetchX509(t, a.socket)
	if err != nil || len(c.SVIDs) != 1 || c.SVIDs[0].ID.String() != id("on-a") {
		t.Fatalf("restarted agent A with the server down: %v, %v", c, err)
	}
	cachedEnd := c.SVIDs[0].Certificates[0].NotAfter
	time.Sleep(time.Until(cachedEnd) + time.Second)
	if c, err := workloadapi.FetchX509Context(t.Context(), workloadapi.WithAddr("unix://"+a.socket)); err == nil {
		t.Fatalf("agent A served %v past its cached SVID's expiry %s", c.SVIDs[0].Certificates[0].NotAfter, cachedEnd)
	}

	// The server is back; evicting A ends it, and B is unaffected.
	srv = start(t, nil, devArgs...)
	waitHealth(t, "http://"+httpAddr, http.StatusOK, srv)
	if ids, err := servedIDs(t, a.socket); err != nil || !slices.Equal(ids, []string{id("on-a")}) {
		t.Fatalf("agent A with the server back: %v, %v", ids, err)
	}
	run(t, true, env, bin, "agent", "evict", "node-a")
	select {
	case <-a.p.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("agent A still running 15s after eviction:\n%s", a.p.out.String())
	}
	if !strings.Contains(a.p.out.String(), "evicted") {
		t.Errorf("agent A's output does not mention the eviction:\n%s", a.p.out.String())
	}
	if _, err := os.Stat(filepath.Join(a.dir, "cache.state")); !os.IsNotExist(err) {
		t.Errorf("evicted agent's cache still on disk: %v", err)
	}
	if ids, err := servedIDs(t, b.socket); err != nil || !slices.Equal(ids, []string{id("on-b")}) {
		t.Errorf("agent B after A's eviction serves %v (%v)", ids, err)
	}
}
