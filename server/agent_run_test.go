package server

import (
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/sigil-pki/sigil/agent"
	"github.com/sigil-pki/sigil/config"
	"github.com/sigil-pki/sigil/identity/workload"
	"github.com/sigil-pki/sigil/storage"
)

// waitAgent polls the stored agent until ok accepts it.
func waitAgent(t *testing.T, r *runningServer, node, what string, ok func(storage.Agent) bool) storage.Agent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, err := r.store.GetAgent(t.Context(), node)
		if err == nil && ok(a) {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: agent %s is %+v (%v)", what, node, a, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAgentRenewsAndReattests runs the agent against a server whose agent
// SVIDs live 4 s: it attests by x509pop, renews at half-life, and when its
// SVID is revoked it attests again with its node certificate; meanwhile
// its socket serves its entry.
func TestAgentRenewsAndReattests(t *testing.T) {
	caPEM, issue := nodeCA(t)
	cfg := testConfig(t, "dev")
	cfg.Agents.SVIDTTL = config.Duration(4 * time.Second)
	cfg.Agents.X509PoPCAFile = filepath.Join(t.TempDir(), "nodes.pem")
	if err := os.WriteFile(cfg.Agents.X509PoPCAFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRunningWith(t, cfg)
	r.parentedEntry(t, "spiffe://example.org/on-r", "spiffe://example.org/sigil/agent/node-r")
	auth, _ := r.Authority()
	roots := x509.NewCertPool()
	for _, c := range auth.Roots() {
		roots.AddCert(c)
	}
	node := issue("node-r")
	a, err := agent.New(agent.Config{
		ServerURL: r.adminURL, ServerRoots: roots, TrustDomain: "example.org", NodeCertificate: &node,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "w.sock")
	l, err := workload.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(t.Context(), l) }()
	t.Cleanup(func() {
		// t.Context is done before cleanups run: Run must return nil.
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	first := waitAgent(t, r, "node-r", "attestation", func(a storage.Agent) bool { return a.Serial != "" })
	svid, err := workloadapi.FetchX509SVID(t.Context(), workloadapi.WithAddr("unix://"+sock))
	if err != nil || svid.ID.String() != "spiffe://example.org/on-r" {
		t.Fatalf("the agent's socket: %v, %v", svid, err)
	}
	renewed := waitAgent(t, r, "node-r", "renewal", func(a storage.Agent) bool { return a.Serial != first.Serial })
	if took := time.Since(first.AttestedAt); took < time.Second {
		t.Errorf("renewed %s after attesting, before half of the 4 s lifetime", took)
	}
	if !renewed.AttestedAt.Equal(first.AttestedAt) {
		t.Errorf("renewal re-attested (attested at %s, then %s)", first.AttestedAt, renewed.AttestedAt)
	}
	if _, err := auth.Revoke(t.Context(), renewed.Serial, 1); err != nil {
		t.Fatal(err)
	}
	r.markRevoked(renewed.Serial)
	again := waitAgent(t, r, "node-r", "re-attestation", func(a storage.Agent) bool { return a.AttestedAt.After(renewed.AttestedAt) })
	if again.Attestation != "x509pop" || again.Evicted() {
		t.Errorf("after re-attestation: %+v", again)
	}
	if _, err := workloadapi.FetchX509SVID(t.Context(), workloadapi.WithAddr("unix://"+sock)); err != nil {
		t.Errorf("the agent's socket after re-attestation: %v", err)
	}
}
