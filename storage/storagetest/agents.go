package storagetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sigil-pki/sigil/storage"
)

// runAgents runs the agent contract: join tokens are single-use and
// expire, agents are created and compare-and-swapped, listed in order,
// counted by the agents revision, and their certificates listed by expiry.
func runAgents(t *testing.T, run func(t *testing.T, name string, fn func(t *testing.T, s storage.Store))) {
	t.Run("Agents", func(t *testing.T) {
		run(t, "JoinTokenSingleUse", testJoinTokenSingleUse)
		run(t, "JoinTokenExpired", testJoinTokenExpired)
		run(t, "JoinTokenDuplicate", testJoinTokenDuplicate)
		run(t, "JoinTokenConcurrentConsume", testJoinTokenConcurrent)
		run(t, "CreateGetUpdate", testAgentCreateGetUpdate)
		run(t, "CreateConflicts", testAgentCreateConflicts)
		run(t, "UpdateStaleOrMissing", testAgentUpdateStale)
		run(t, "ListPagination", testAgentList)
		run(t, "Certificates", testAgentCertificates)
	})
}

func testJoinToken(hash string) storage.JoinToken {
	return storage.JoinToken{Hash: hash, NodeID: "node-" + hash, Groups: []string{"web", "eu"}, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
}

func testJoinTokenSingleUse(t *testing.T, s storage.Store) {
	jt := testJoinToken("aa")
	if err := s.CreateJoinToken(t.Context(), jt); err != nil {
		t.Fatal(err)
	}
	got, err := s.ConsumeJoinToken(t.Context(), "aa", t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(jt, got); diff != "" {
		t.Errorf("consumed token (-want +got):\n%s", diff)
	}
	if _, err := s.ConsumeJoinToken(t.Context(), "aa", t0.Add(time.Minute)); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("second ConsumeJoinToken = %v, want ErrNotFound", err)
	}
	if _, err := s.ConsumeJoinToken(t.Context(), "unknown", t0); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("ConsumeJoinToken(unknown) = %v, want ErrNotFound", err)
	}
}

func testJoinTokenExpired(t *testing.T, s storage.Store) {
	if err := s.CreateJoinToken(t.Context(), testJoinToken("bb")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConsumeJoinToken(t.Context(), "bb", t0.Add(time.Hour)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("ConsumeJoinToken at expiry = %v, want ErrNotFound", err)
	}
	// The expired token is gone: an earlier clock does not revive it.
	if _, err := s.ConsumeJoinToken(t.Context(), "bb", t0); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("ConsumeJoinToken after expiry = %v, want ErrNotFound", err)
	}
}

func testJoinTokenDuplicate(t *testing.T, s storage.Store) {
	if err := s.CreateJoinToken(t.Context(), testJoinToken("cc")); err != nil {
		t.Fatal(err)
	}
	other := testJoinToken("cc")
	other.NodeID = "elsewhere"
	if err := s.CreateJoinToken(t.Context(), other); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("duplicate CreateJoinToken = %v, want ErrConflict", err)
	}
	got, err := s.ConsumeJoinToken(t.Context(), "cc", t0)
	if err != nil {
		t.Fatal(err)
	}
	if got.NodeID != "node-cc" {
		t.Errorf("node ID = %q: the duplicate replaced the original", got.NodeID)
	}
	for _, bad := range []storage.JoinToken{{NodeID: "x", CreatedAt: t0, ExpiresAt: t0}, {Hash: "dd"}} {
		if err := s.CreateJoinToken(t.Context(), bad); err == nil {
			t.Errorf("CreateJoinToken(%+v) succeeded", bad)
		}
	}
}

func testJoinTokenConcurrent(t *testing.T, s storage.Store) {
	if err := s.CreateJoinToken(t.Context(), testJoinToken("ee")); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, errs[i] = s.ConsumeJoinToken(t.Context(), "ee", t0) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, storage.ErrNotFound):
			t.Errorf("ConsumeJoinToken: %v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d of %d concurrent consumers got the token, want 1", won, n)
	}
}

func testAgent(id string) storage.Agent {
	return storage.Agent{
		ID: id, SPIFFEID: "spiffe://example.org/sigil/agent/" + id, Attestation: "join_token",
		Selectors: []string{"group:web"}, Serial: "01", NotAfter: t0.Add(time.Hour), AttestedAt: t0, UpdatedAt: t0,
	}
}

func testAgentCreateGetUpdate(t *testing.T, s storage.Store) {
	ctx := t.Context()
	rev0, err := s.AgentsRevision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := testAgent("n1")
	if err := s.PutAgent(ctx, a, 0); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetAgent(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	a.Revision = 1
	if diff := cmp.Diff(a, got); diff != "" {
		t.Errorf("GetAgent (-want +got):\n%s", diff)
	}
	if got.Evicted() {
		t.Error("a new agent is evicted")
	}
	a.Serial, a.EvictedAt, a.UpdatedAt = "02", t0.Add(time.Minute), t0.Add(time.Minute)
	a.Selectors = []string{"group:db", "x509pop:ca:ab"}
	if err := s.PutAgent(ctx, a, 1); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetAgent(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	a.Revision = 2
	if diff := cmp.Diff(a, got); diff != "" {
		t.Errorf("after update (-want +got):\n%s", diff)
	}
	if !got.Evicted() {
		t.Error("EvictedAt set but Evicted() is false")
	}
	rev, err := s.AgentsRevision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rev != rev0+2 {
		t.Errorf("agents revision %d after two changes from %d", rev, rev0)
	}
	if _, err := s.GetAgent(ctx, "missing"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetAgent(missing) = %v, want ErrNotFound", err)
	}
}

func testAgentCreateConflicts(t *testing.T, s storage.Store) {
	ctx := t.Context()
	if err := s.PutAgent(ctx, testAgent("n1"), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAgent(ctx, testAgent("n1"), 0); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("second create = %v, want ErrConflict", err)
	}
	sameID := testAgent("n2")
	sameID.SPIFFEID = testAgent("n1").SPIFFEID
	if err := s.PutAgent(ctx, sameID, 0); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("create with a taken SPIFFE ID = %v, want ErrConflict", err)
	}
	if err := s.PutAgent(ctx, storage.Agent{ID: "n3"}, 0); err == nil {
		t.Error("an agent without a SPIFFE ID was stored")
	}
	rev, err := s.AgentsRevision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rev != 1 {
		t.Errorf("agents revision %d after one successful change, want 1", rev)
	}
}

func testAgentUpdateStale(t *testing.T, s storage.Store) {
	ctx := t.Context()
	if err := s.PutAgent(ctx, testAgent("n1"), 0); err != nil {
		t.Fatal(err)
	}
	changed := testAgent("n1")
	changed.Serial = "ff"
	if err := s.PutAgent(ctx, changed, 7); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("update at a stale revision = %v, want ErrConflict", err)
	}
	if got, _ := s.GetAgent(ctx, "n1"); got.Serial != "01" {
		t.Errorf("serial %q after a refused update", got.Serial)
	}
	if err := s.PutAgent(ctx, testAgent("zz"), 1); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("update of a missing agent = %v, want ErrNotFound", err)
	}
}

func testAgentList(t *testing.T, s storage.Store) {
	ctx := t.Context()
	var want []string
	for i := range 5 {
		id := fmt.Sprintf("node-%d", 4-i)
		if err := s.PutAgent(ctx, testAgent(id), 0); err != nil {
			t.Fatal(err)
		}
		want = append([]string{id}, want...)
	}
	var got []string
	after := ""
	for {
		page, err := s.ListAgents(ctx, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range page {
			got = append(got, a.ID)
		}
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1].ID
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("listed IDs (-want +got):\n%s", diff)
	}
}

func testAgentCertificates(t *testing.T, s storage.Store) {
	ctx := t.Context()
	certs := []storage.AgentCertificate{
		{Serial: "0a", AgentID: "n1", NotAfter: t0.Add(time.Hour)},
		{Serial: "0b", AgentID: "n1", NotAfter: t0.Add(time.Minute)},
		{Serial: "0c", AgentID: "n2", NotAfter: t0.Add(time.Hour)},
	}
	for _, c := range certs {
		if err := s.RecordAgentCertificate(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RecordAgentCertificate(ctx, certs[0]); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("recording a serial twice = %v, want ErrConflict", err)
	}
	got, err := s.AgentCertificates(ctx, "n1", t0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(certs[:2], got); diff != "" {
		t.Errorf("n1's certificates (-want +got):\n%s", diff)
	}
	got, err = s.AgentCertificates(ctx, "n1", t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(certs[:1], got); diff != "" {
		t.Errorf("n1's certificates unexpired a minute later (-want +got):\n%s", diff)
	}
}
