package agentapi_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sigil-pki/sigil/identity/agentapi"
	"github.com/sigil-pki/sigil/identity/entry"
)

func TestParseMessage(t *testing.T) {
	trust := `"trust":{"x509_roots":["AQI="],"jwt_bundle":{"keys":[]},"x509_signer":"ab"}`
	up := `"upserts":[{"id":"e1","spiffe_id":"spiffe://td/w","parent_id":"spiffe://td/sigil/agent/n","selectors":["unix:uid:1"],"x509_svid_ttl":1,"jwt_svid_ttl":1,"updated_at":"2026-01-01T00:00:00Z","revision":1}]`
	tests := []struct {
		name, line string
		ok         bool
	}{
		{"full", `{"kind":"full",` + up + `,"digest":"d","parents":["p"],` + trust + `}`, true},
		{"full without entries", `{"kind":"full","digest":"d","parents":["p"],` + trust + `}`, true},
		{"full without parents", `{"kind":"full","digest":"d",` + trust + `}`, false},
		{"full without trust", `{"kind":"full","digest":"d","parents":["p"]}`, false},
		{"full with deletions", `{"kind":"full","deleted":["x"],"digest":"d","parents":["p"],` + trust + `}`, false},
		{"delta with parents", `{"kind":"delta","deleted":["e2"],"digest":"d","parents":["p"]}`, false},
		{"delta", `{"kind":"delta",` + up + `,"deleted":["e2"],"digest":"d"}`, true},
		{"empty delta", `{"kind":"delta","digest":"d"}`, false},
		{"delta without digest", `{"kind":"delta","deleted":["e2"]}`, false},
		{"delta deleting what it upserts", `{"kind":"delta",` + up + `,"deleted":["e1"],"digest":"d"}`, false},
		{"delta with an empty ID", `{"kind":"delta","deleted":[""],"digest":"d"}`, false},
		{"upsert without revision", `{"kind":"delta","upserts":[{"id":"e","spiffe_id":"s"}],"digest":"d"}`, false},
		{"reconcile", `{"kind":"reconcile","digest":"d"}`, true},
		{"reconcile with changes", `{"kind":"reconcile","deleted":["x"],"digest":"d"}`, false},
		{"trust", `{"kind":"trust",` + trust + `}`, true},
		{"trust with digest", `{"kind":"trust","digest":"d",` + trust + `}`, false},
		{"evicted", `{"kind":"evicted"}`, true},
		{"evicted with digest", `{"kind":"evicted","digest":"d"}`, false},
		{"unknown kind", `{"kind":"hello"}`, false},
		{"unknown field", `{"kind":"evicted","extra":1}`, false},
		{"two values", `{"kind":"evicted"} {"kind":"evicted"}`, false},
		{"not JSON", `kind=evicted`, false},
		{"array", `[]`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := agentapi.ParseMessage([]byte(tt.line))
			if tt.ok {
				if err != nil {
					t.Fatalf("ParseMessage: %v", err)
				}
				if m.Kind == "" {
					t.Error("parsed message has no kind")
				}
				return
			}
			if !errors.Is(err, agentapi.ErrMalformed) {
				t.Fatalf("ParseMessage = %v, %v; want ErrMalformed", m, err)
			}
		})
	}
}

func TestStreamRoundTrip(t *testing.T) {
	e, err := entry.New(nil, time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), entry.Entry{
		SPIFFEID: "spiffe://example.org/web", ParentID: agentapi.AgentID("example.org", "node-a"),
		Selectors: []string{"unix:uid:1000"}, X509SVIDTTL: time.Hour, JWTSVIDTTL: time.Minute,
		DNSNames: []string{"web.example.org"}, Hint: "web",
	})
	if err != nil {
		t.Fatal(err)
	}
	msgs := []*agentapi.SyncMessage{
		{Kind: agentapi.KindFull, Upserts: []agentapi.Entry{agentapi.FromEntry(e)}, Digest: "d1", Parents: []string{e.ParentID},
			Trust: &agentapi.Trust{X509Roots: [][]byte{{1, 2, 3}}, JWTBundle: []byte(`{"keys":[]}`), X509Signer: "s"}},
		{Kind: agentapi.KindDelta, Deleted: []string{e.ID}, Digest: "d2"},
		{Kind: agentapi.KindReconcile, Digest: "d2"},
		{Kind: agentapi.KindEvicted},
	}
	var buf bytes.Buffer
	enc := agentapi.NewEncoder(&buf)
	for _, m := range msgs {
		if err := enc.Encode(m); err != nil {
			t.Fatal(err)
		}
	}
	dec := agentapi.NewDecoder(&buf)
	for i, want := range msgs {
		got, err := dec.Decode()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("message %d (-want +got):\n%s", i, diff)
		}
	}
	if _, err := dec.Decode(); err != io.EOF {
		t.Errorf("after the last message: %v, want io.EOF", err)
	}
	if got := msgs[0].Upserts[0].Entry(); !cmp.Equal(got, e, cmp.FilterPath(func(p cmp.Path) bool {
		return p.String() == "CreatedAt"
	}, cmp.Ignore())) {
		t.Errorf("entry round trip: %s", cmp.Diff(e, got))
	}
}

func TestDecoderRefusesTruncatedAndHugeLines(t *testing.T) {
	if _, err := agentapi.NewDecoder(strings.NewReader(`{"kind":"evicted"}`)).Decode(); !errors.Is(err, agentapi.ErrMalformed) {
		t.Errorf("a message without its newline: %v, want ErrMalformed", err)
	}
	huge := strings.NewReader(`{"kind":"evicted","x":"` + strings.Repeat("a", agentapi.MaxLine) + "\"}\n")
	if _, err := agentapi.NewDecoder(huge).Decode(); !errors.Is(err, agentapi.ErrMalformed) {
		t.Errorf("a line over MaxLine: %v, want ErrMalformed", err)
	}
}

func TestCheckNodeID(t *testing.T) {
	for id, ok := range map[string]bool{
		"node-a": true, "n1.example_b": true, "0": true, strings.Repeat("a", 63): true,
		"": false, strings.Repeat("a", 64): false, "Node": false, "-a": false, "a/b": false, "a b": false, ".a": false,
	} {
		if err := agentapi.CheckNodeID(id); (err == nil) != ok {
			t.Errorf("CheckNodeID(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}

func TestNodeOf(t *testing.T) {
	tests := []struct {
		id, node string
		ok       bool
	}{
		{"spiffe://example.org/sigil/agent/node-a", "node-a", true},
		{"spiffe://other.org/sigil/agent/node-a", "", false},
		{"spiffe://example.org/sigil/agent/", "", false},
		{"spiffe://example.org/sigil/agent/a/b", "", false},
		{"spiffe://example.org/web", "", false},
	}
	for _, tt := range tests {
		node, ok := agentapi.NodeOf("example.org", tt.id)
		if node != tt.node || ok != tt.ok {
			t.Errorf("NodeOf(%q) = %q, %v; want %q, %v", tt.id, node, ok, tt.node, tt.ok)
		}
	}
	if got := agentapi.AgentID("example.org", "n"); got != "spiffe://example.org/sigil/agent/n" {
		t.Errorf("AgentID = %q", got)
	}
}

func TestDigest(t *testing.T) {
	a := agentapi.Digest(map[string]int64{"a": 1, "b": 2})
	if b := agentapi.Digest(map[string]int64{"b": 2, "a": 1}); a != b {
		t.Error("digest depends on map order")
	}
	for _, other := range []map[string]int64{{"a": 1, "b": 3}, {"a": 1}, {"a": 1, "b": 2, "c": 1}, {"a:1\nb": 2}} {
		if agentapi.Digest(other) == a {
			t.Errorf("digest of %v equals that of {a:1 b:2}", other)
		}
	}
	if agentapi.Digest(nil) != agentapi.Digest(map[string]int64{}) {
		t.Error("nil and empty sets differ")
	}
}

func TestSelectorParent(t *testing.T) {
	tests := []struct {
		sel, parent string
		ok          bool
	}{
		{"group:web", "spiffe://example.org/sigil/nodes/group/web", true},
		{"x509pop:ca:0a1b", "spiffe://example.org/sigil/nodes/x509pop/ca/0a1b", true},
		{"group", "", false},
		{"group:", "", false},
		{"group:Web", "", false},
		{"group:a/b", "", false},
	}
	for _, tt := range tests {
		p, ok := agentapi.SelectorParent("example.org", tt.sel)
		if p != tt.parent || ok != tt.ok {
			t.Errorf("SelectorParent(%q) = %q, %v; want %q, %v", tt.sel, p, ok, tt.parent, tt.ok)
			continue
		}
		if !ok {
			continue
		}
		if back, ok := agentapi.ParentSelector("example.org", p); !ok || back != tt.sel {
			t.Errorf("ParentSelector(%q) = %q, %v", p, back, ok)
		}
	}
	for _, bad := range []string{"spiffe://example.org/sigil/nodes/group", "spiffe://example.org/sigil/nodes/group//x", "spiffe://other.org/sigil/nodes/group/web", "spiffe://example.org/sigil/agent/n"} {
		if sel, ok := agentapi.ParentSelector("example.org", bad); ok {
			t.Errorf("ParentSelector(%q) = %q, true", bad, sel)
		}
	}
}
