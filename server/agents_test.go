package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/config"
	"github.com/sigil-pki/sigil/identity/agentapi"
	"github.com/sigil-pki/sigil/storage"
)

// testAgent is an attested agent as the server sees it from outside.
type testAgent struct {
	node   string
	id     string
	client *http.Client
	leaf   *x509.Certificate
}

// postJSON sends body as JSON and decodes a 200 answer into out, or
// returns the status and the error document.
func postJSON(t testing.TB, c *http.Client, url string, body, out any) (int, agentapi.ErrorDocument) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var doc agentapi.ErrorDocument
	if resp.StatusCode != http.StatusOK {
		json.Unmarshal(raw, &doc)
		return resp.StatusCode, doc
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("decoding %s: %v", raw, err)
		}
	}
	return resp.StatusCode, doc
}

func newCSR(t testing.TB) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// joinToken makes a join token as the operator.
func (r *runningServer) joinToken(t testing.TB, node string, groups ...string) string {
	t.Helper()
	var out JoinTokenResponse
	if code, doc := postJSON(t, r.admin, r.adminURL+"/v1/agents/join-tokens", JoinTokenRequest{NodeID: node, Groups: groups}, &out); code != http.StatusOK {
		t.Fatalf("creating join token: %d %v", code, doc)
	}
	return out.Token
}

// attestAgent attests node with a fresh join token for the groups.
func (r *runningServer) attestAgent(t testing.TB, node string, groups ...string) *testAgent {
	t.Helper()
	key, csr := newCSR(t)
	var out agentapi.SVIDResponse
	if code, doc := postJSON(t, r.clientWith(tls.Certificate{}), r.adminURL+agentapi.PathAttest,
		agentapi.AttestRequest{JoinToken: r.joinToken(t, node, groups...), CSR: csr}, &out); code != http.StatusOK {
		t.Fatalf("attesting %s: %d %v", node, code, doc)
	}
	leaf, err := x509.ParseCertificate(out.Chain[0])
	if err != nil {
		t.Fatal(err)
	}
	return &testAgent{node: node, id: out.SPIFFEID, leaf: leaf,
		client: r.clientWith(tls.Certificate{Certificate: out.Chain, PrivateKey: key, Leaf: leaf})}
}

// parentedEntry creates an entry for this process parented to agent.
func (r *runningServer) parentedEntry(t testing.TB, spiffeID, parent string) EntryJSON {
	t.Helper()
	var out EntryJSON
	if code, doc := postJSON(t, r.admin, r.adminURL+"/v1/entries",
		EntryJSON{SPIFFEID: spiffeID, ParentID: parent, Selectors: []string{uidSelector()}}, &out); code != http.StatusOK {
		t.Fatalf("creating entry %s: %d %v", spiffeID, code, doc)
	}
	return out
}

func TestAgentAttestJoinToken(t *testing.T) {
	r := startRunning(t)
	anon := r.clientWith(tls.Certificate{})
	url := r.adminURL + agentapi.PathAttest
	_, csr := newCSR(t)

	token := r.joinToken(t, "node-a")
	tests := []struct {
		name     string
		req      agentapi.AttestRequest
		wantCode int
		wantErr  string
	}{
		{"no credential", agentapi.AttestRequest{CSR: csr}, http.StatusUnauthorized, agentapi.CodeUnauthenticated},
		{"unknown token", agentapi.AttestRequest{JoinToken: "nope", CSR: csr}, http.StatusUnauthorized, agentapi.CodeUnauthenticated},
		{"bad CSR", agentapi.AttestRequest{JoinToken: token, CSR: []byte("junk")}, http.StatusBadRequest, agentapi.CodeBadRequest},
		{"bad node ID", agentapi.AttestRequest{JoinToken: token, NodeID: "Node A", CSR: csr}, http.StatusBadRequest, agentapi.CodeBadRequest},
		{"another node", agentapi.AttestRequest{JoinToken: token, NodeID: "node-b", CSR: csr}, http.StatusBadRequest, agentapi.CodeBadRequest},
		// The refusals above left the token usable.
		{"good", agentapi.AttestRequest{JoinToken: token, CSR: csr}, http.StatusOK, ""},
		{"token reused", agentapi.AttestRequest{JoinToken: token, CSR: csr}, http.StatusUnauthorized, agentapi.CodeUnauthenticated},
	}
	for _, tt := range tests {
		var out agentapi.SVIDResponse
		code, doc := postJSON(t, anon, url, tt.req, &out)
		if code != tt.wantCode || doc.Code != tt.wantErr {
			t.Errorf("%s: %d %+v, want %d %s", tt.name, code, doc, tt.wantCode, tt.wantErr)
			continue
		}
		if code != http.StatusOK {
			continue
		}
		leaf, err := x509.ParseCertificate(out.Chain[0])
		if err != nil {
			t.Fatal(err)
		}
		if want := "spiffe://example.org/sigil/agent/node-a"; out.SPIFFEID != want || leaf.URIs[0].String() != want {
			t.Errorf("agent SVID for %s / %s, want %s", out.SPIFFEID, leaf.URIs[0], want)
		}
		if len(out.Roots) == 0 {
			t.Error("no roots in the attestation answer")
		}
		a, err := r.store.GetAgent(t.Context(), "node-a")
		if err != nil {
			t.Fatal(err)
		}
		if a.Attestation != agentapi.MethodJoinToken || a.Serial == "" || a.Evicted() {
			t.Errorf("stored agent %+v", a)
		}
	}

	// A token without a node needs one in the request.
	open := r.joinToken(t, "")
	if code, doc := postJSON(t, anon, url, agentapi.AttestRequest{JoinToken: open, CSR: csr}, nil); code != http.StatusBadRequest {
		t.Errorf("token without node, request without node: %d %v", code, doc)
	}
	if code, doc := postJSON(t, anon, url, agentapi.AttestRequest{JoinToken: open, NodeID: "node-c", CSR: csr}, nil); code != http.StatusOK {
		t.Errorf("token without node, request naming node-c: %d %v", code, doc)
	}
}

func TestAgentRenewSignAndParentCheck(t *testing.T) {
	r := startRunning(t)
	a, b := r.attestAgent(t, "node-a"), r.attestAgent(t, "node-b")
	ea := r.parentedEntry(t, "spiffe://example.org/web-a", a.id)
	eb := r.parentedEntry(t, "spiffe://example.org/web-b", b.id)

	// Renewal: a fresh SVID, and the stored serial follows it.
	_, csr := newCSR(t)
	var renewed agentapi.SVIDResponse
	if code, doc := postJSON(t, a.client, r.adminURL+agentapi.PathRenew, agentapi.RenewRequest{CSR: csr}, &renewed); code != http.StatusOK {
		t.Fatalf("renew: %d %v", code, doc)
	}
	leaf, _ := x509.ParseCertificate(renewed.Chain[0])
	if stored, _ := r.store.GetAgent(t.Context(), "node-a"); stored.Serial != leaf.SerialNumber.Text(16) {
		t.Errorf("stored serial %s, renewed %s", stored.Serial, leaf.SerialNumber.Text(16))
	}

	_, wcsr := newCSR(t)
	var signed agentapi.SignResponse
	code, doc := postJSON(t, a.client, r.adminURL+agentapi.PathSign,
		agentapi.SignRequest{Requests: []agentapi.CSRForEntry{{EntryID: ea.ID, CSR: wcsr}}}, &signed)
	if code != http.StatusOK {
		t.Fatalf("sign for own entry: %d %v", code, doc)
	}
	cert, err := x509.ParseCertificate(signed.SVIDs[0].Chain[0])
	if err != nil {
		t.Fatal(err)
	}
	if cert.URIs[0].String() != ea.SPIFFEID {
		t.Errorf("signed for %s, want %s", cert.URIs[0], ea.SPIFFEID)
	}
	// Recorded, on the log, and noted under the agent before it was returned.
	if _, err := r.store.GetCertificate(t.Context(), cert.SerialNumber.Text(16)); err != nil {
		t.Errorf("workload SVID not on record: %v", err)
	}
	l, err := r.transparencyLog()
	if err != nil {
		t.Fatal(err)
	}
	if findIssuance(t, l, checkpointOf(t, r.Server, l).Size, cert.Raw) < 0 {
		t.Error("workload SVID not on the transparency log")
	}
	certs, err := r.store.AgentCertificates(t.Context(), "node-a", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(certs, func(c storage.AgentCertificate) bool { return c.Serial == cert.SerialNumber.Text(16) }) {
		t.Error("workload SVID not noted under node-a")
	}

	refused := []struct {
		name   string
		client *http.Client
		req    agentapi.SignRequest
		code   int
		errc   string
	}{
		{"another agent's entry", a.client, agentapi.SignRequest{Requests: []agentapi.CSRForEntry{{EntryID: eb.ID, CSR: wcsr}}}, http.StatusForbidden, agentapi.CodeNotParent},
		{"own and another's", a.client, agentapi.SignRequest{Requests: []agentapi.CSRForEntry{{EntryID: ea.ID, CSR: wcsr}, {EntryID: eb.ID, CSR: wcsr}}}, http.StatusForbidden, agentapi.CodeNotParent},
		{"unknown entry", a.client, agentapi.SignRequest{Requests: []agentapi.CSRForEntry{{EntryID: "00", CSR: wcsr}}}, http.StatusForbidden, agentapi.CodeNotParent},
		{"bad CSR", a.client, agentapi.SignRequest{Requests: []agentapi.CSRForEntry{{EntryID: ea.ID, CSR: []byte{1}}}}, http.StatusBadRequest, agentapi.CodeBadRequest},
		{"no requests", a.client, agentapi.SignRequest{}, http.StatusBadRequest, agentapi.CodeBadRequest},
		{"no client certificate", r.clientWith(tls.Certificate{}), agentapi.SignRequest{Requests: []agentapi.CSRForEntry{{EntryID: ea.ID, CSR: wcsr}}}, http.StatusUnauthorized, agentapi.CodeUnauthenticated},
		{"operator is not an agent", r.admin, agentapi.SignRequest{Requests: []agentapi.CSRForEntry{{EntryID: ea.ID, CSR: wcsr}}}, http.StatusForbidden, agentapi.CodeUnauthenticated},
	}
	before, err := r.store.AgentCertificates(t.Context(), "node-a", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range refused {
		code, doc := postJSON(t, tt.client, r.adminURL+agentapi.PathSign, tt.req, nil)
		if code != tt.code || doc.Code != tt.errc {
			t.Errorf("%s: %d %+v, want %d %s", tt.name, code, doc, tt.code, tt.errc)
		}
	}
	after, _ := r.store.AgentCertificates(t.Context(), "node-a", time.Now())
	if len(after) != len(before) {
		t.Errorf("refused requests signed %d certificates", len(after)-len(before))
	}

	var jwt agentapi.JWTResponse
	if code, doc := postJSON(t, a.client, r.adminURL+agentapi.PathJWT, agentapi.JWTRequest{EntryID: ea.ID, Audience: []string{"db"}}, &jwt); code != http.StatusOK || jwt.Token == "" {
		t.Errorf("JWT for own entry: %d %v", code, doc)
	}
	if code, _ := postJSON(t, a.client, r.adminURL+agentapi.PathJWT, agentapi.JWTRequest{EntryID: eb.ID, Audience: []string{"db"}}, nil); code != http.StatusForbidden {
		t.Errorf("JWT for another agent's entry: %d", code)
	}

	// Entries with a parent are not served by the server's own socket,
	// and a parent must be an agent ID.
	if code, _ := postJSON(t, r.admin, r.adminURL+"/v1/entries", EntryJSON{SPIFFEID: "spiffe://example.org/x",
		ParentID: "spiffe://example.org/not-an-agent", Selectors: []string{uidSelector()}}, nil); code != http.StatusBadRequest {
		t.Errorf("entry with a non-agent parent: %d", code)
	}
	got, err := workloadEntries{r.Server}.MatchingEntries(t.Context(), []string{uidSelector()})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("the server's socket would serve %d parented entries", len(got))
	}
}

// syncStream reads an agent's sync stream.
type syncStream struct {
	body io.Closer
	msgs chan *agentapi.SyncMessage
}

func openSync(t *testing.T, r *runningServer, a *testAgent) *syncStream {
	t.Helper()
	resp, err := a.client.Get(r.adminURL + agentapi.PathSync)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sync: %s", resp.Status)
	}
	s := &syncStream{body: resp.Body, msgs: make(chan *agentapi.SyncMessage, 64)}
	t.Cleanup(func() { resp.Body.Close() })
	go func() {
		defer close(s.msgs)
		dec := agentapi.NewDecoder(resp.Body)
		for {
			m, err := dec.Decode()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					t.Logf("sync stream: %v", err)
				}
				return
			}
			s.msgs <- m
		}
	}()
	return s
}

// next returns the next message that is not a reconcile, waiting up to
// 5 s (a liveness bound for a loaded machine; pushes take milliseconds).
func (s *syncStream) next(t *testing.T) *agentapi.SyncMessage {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m, ok := <-s.msgs:
			if !ok {
				t.Fatal("sync stream ended")
			}
			if m.Kind != agentapi.KindReconcile {
				return m
			}
		case <-deadline:
			t.Fatal("no sync message within 5s")
		}
	}
}

func TestAgentSyncStream(t *testing.T) {
	cfg := testConfig(t, "dev")
	cfg.Agents.SyncInterval = config.Duration(time.Second)
	r := startRunningWith(t, cfg)
	a, b := r.attestAgent(t, "node-a"), r.attestAgent(t, "node-b")
	first := r.parentedEntry(t, "spiffe://example.org/a/1", a.id)
	r.parentedEntry(t, "spiffe://example.org/b/1", b.id)

	s := openSync(t, r, a)
	full := s.next(t)
	if full.Kind != agentapi.KindFull || len(full.Upserts) != 1 || full.Upserts[0].ID != first.ID || full.Trust == nil {
		t.Fatalf("first message %+v, want a full set of one entry with trust", full)
	}
	revs := map[string]int64{first.ID: first.Revision}
	if full.Digest != agentapi.Digest(revs) {
		t.Error("full digest does not match the entries sent")
	}

	// A change to another agent's entries is not sent; one to ours is, alone.
	r.parentedEntry(t, "spiffe://example.org/b/2", b.id)
	second := r.parentedEntry(t, "spiffe://example.org/a/2", a.id)
	m := s.next(t)
	if m.Kind != agentapi.KindDelta || len(m.Upserts) != 1 || m.Upserts[0].ID != second.ID || len(m.Deleted) != 0 {
		t.Fatalf("after creating a/2: %+v, want a delta of that entry alone", m)
	}
	revs[second.ID] = second.Revision
	if m.Digest != agentapi.Digest(revs) {
		t.Error("delta digest does not match")
	}

	req, _ := http.NewRequest(http.MethodDelete, r.adminURL+"/v1/entries/"+first.ID, nil)
	resp, err := r.admin.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	m = s.next(t)
	if m.Kind != agentapi.KindDelta || len(m.Upserts) != 0 || !slices.Equal(m.Deleted, []string{first.ID}) {
		t.Fatalf("after deleting a/1: %+v", m)
	}
	delete(revs, first.ID)

	// An entry moved to another agent leaves this one's set; the other
	// agent's stream gets it.
	sb := openSync(t, r, b)
	if m := sb.next(t); m.Kind != agentapi.KindFull || len(m.Upserts) != 2 {
		t.Fatalf("B's first message: %+v", m)
	}
	moved := second
	moved.ParentID = b.id
	var after EntryJSON
	b2, _ := json.Marshal(moved)
	req, _ = http.NewRequest(http.MethodPut, r.adminURL+"/v1/entries/"+second.ID, bytes.NewReader(b2))
	resp, err = r.admin.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&after)
	resp.Body.Close()
	if m := s.next(t); m.Kind != agentapi.KindDelta || !slices.Equal(m.Deleted, []string{second.ID}) || len(m.Upserts) != 0 {
		t.Fatalf("A after the move: %+v", m)
	}
	if m := sb.next(t); m.Kind != agentapi.KindDelta || len(m.Upserts) != 1 || m.Upserts[0].ID != second.ID || m.Upserts[0].Revision != after.Revision {
		t.Fatalf("B after the move: %+v", m)
	}
	delete(revs, second.ID)

	// The periodic reconcile carries the same digest.
	deadline := time.After(3 * time.Second)
	for done := false; !done; {
		select {
		case m := <-s.msgs:
			if m.Kind == agentapi.KindReconcile {
				if m.Digest != agentapi.Digest(revs) {
					t.Error("reconcile digest differs from the entries held")
				}
				done = true
			}
		case <-deadline:
			t.Fatal("no reconcile within 3s at a 1s interval")
		}
	}

	// Eviction ends the stream with a notice, revokes what was signed,
	// and refuses the agent from then on.
	var ev AgentJSON
	if code, doc := postJSON(t, r.admin, r.adminURL+"/v1/agents/node-a/evict", struct{}{}, &ev); code != http.StatusOK || ev.EvictedAt == "" {
		t.Fatalf("evict: %d %v %+v", code, doc, ev)
	}
	if m := s.next(t); m.Kind != agentapi.KindEvicted {
		t.Fatalf("after eviction: %+v", m)
	}
	rec, err := r.store.GetCertificate(t.Context(), a.leaf.SerialNumber.Text(16))
	if err != nil || !rec.Revoked() {
		t.Errorf("agent SVID after eviction: %+v, %v; want revoked", rec, err)
	}
	_, csr := newCSR(t)
	if code, _ := postJSON(t, a.client, r.adminURL+agentapi.PathRenew, agentapi.RenewRequest{CSR: csr}, nil); code == http.StatusOK {
		t.Error("an evicted agent renewed its SVID")
	}
	// Its node comes back only with a new join token.
	r.attestAgent(t, "node-a")
	if got, _ := r.store.GetAgent(t.Context(), "node-a"); got.Evicted() {
		t.Error("re-attestation with a new token left the node evicted")
	}
}

// nodeCA makes a CA and returns its PEM and a function issuing node
// certificates with the given common name.
func nodeCA(t *testing.T) ([]byte, func(cn string) tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(der)
	issue := func(cn string) tls.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
			Subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{"web", "Not A Selector"}}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, caCert, key.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(der)
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), issue
}

func TestAgentAttestX509PoP(t *testing.T) {
	caPEM, issue := nodeCA(t)
	_, stranger := nodeCA(t)
	cfg := testConfig(t, "dev")
	cfg.Agents.X509PoPCAFile = filepath.Join(t.TempDir(), "nodes.pem")
	if err := os.WriteFile(cfg.Agents.X509PoPCAFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRunningWith(t, cfg)
	url := r.adminURL + agentapi.PathAttest
	_, csr := newCSR(t)
	tests := []struct {
		name string
		cert tls.Certificate
		req  agentapi.AttestRequest
		code int
		errc string
		node string
	}{
		{"node certificate", issue("node-x"), agentapi.AttestRequest{CSR: csr}, http.StatusOK, "", "node-x"},
		{"again, same node", issue("node-x"), agentapi.AttestRequest{CSR: csr}, http.StatusOK, "", "node-x"},
		{"another CA", stranger("node-y"), agentapi.AttestRequest{CSR: csr}, http.StatusUnauthorized, agentapi.CodeUnauthenticated, ""},
		{"common name not a node ID", issue("Node Y"), agentapi.AttestRequest{CSR: csr}, http.StatusBadRequest, agentapi.CodeBadRequest, ""},
		{"node ID in the request", issue("node-z"), agentapi.AttestRequest{NodeID: "node-z", CSR: csr}, http.StatusBadRequest, agentapi.CodeBadRequest, ""},
		{"no certificate", tls.Certificate{}, agentapi.AttestRequest{CSR: csr}, http.StatusUnauthorized, agentapi.CodeUnauthenticated, ""},
	}
	for _, tt := range tests {
		var out agentapi.SVIDResponse
		code, doc := postJSON(t, r.clientWith(tt.cert), url, tt.req, &out)
		if code != tt.code || doc.Code != tt.errc {
			t.Errorf("%s: %d %+v, want %d %s", tt.name, code, doc, tt.code, tt.errc)
			continue
		}
		if tt.node != "" && out.NodeID != tt.node {
			t.Errorf("%s: attested as %q, want %q", tt.name, out.NodeID, tt.node)
		}
	}
	a, err := r.store.GetAgent(t.Context(), "node-x")
	if err != nil || a.Attestation != agentapi.MethodX509PoP {
		t.Errorf("stored agent %+v, %v", a, err)
	}
	if len(a.Selectors) != 2 || !strings.HasPrefix(a.Selectors[0], "x509pop:ca:") || len(a.Selectors[0]) != len("x509pop:ca:")+32 || a.Selectors[1] != "x509pop:ou:web" {
		t.Errorf("node selectors %v, want the CA's fingerprint and the usable OU", a.Selectors)
	}
	// An evicted node does not come back by its certificate.
	if _, err := r.EvictAgent(t.Context(), "node-x"); err != nil {
		t.Fatal(err)
	}
	if code, doc := postJSON(t, r.clientWith(issue("node-x")), url, agentapi.AttestRequest{CSR: csr}, nil); code != http.StatusForbidden || doc.Code != agentapi.CodeEvicted {
		t.Errorf("evicted node by certificate: %d %+v", code, doc)
	}
}

// TestAgentNodeSelectorParent: an entry parented to a node selector goes
// to every agent with that selector (a join token's group), and to no
// other; each of them may have it signed.
func TestAgentNodeSelectorParent(t *testing.T) {
	r := startRunning(t)
	g1, g2, x := r.attestAgent(t, "node-g1", "web"), r.attestAgent(t, "node-g2", "web", "eu"), r.attestAgent(t, "node-x")
	if a, _ := r.store.GetAgent(t.Context(), "node-g2"); !slices.Equal(a.Selectors, []string{"group:web", "group:eu"}) {
		t.Errorf("node-g2's selectors %v", a.Selectors)
	}
	web := "spiffe://example.org/sigil/nodes/group/web"
	shared := r.parentedEntry(t, "spiffe://example.org/frontend", web)
	own := r.parentedEntry(t, "spiffe://example.org/g1-only", g1.id)

	s1, s2, sx := openSync(t, r, g1), openSync(t, r, g2), openSync(t, r, x)
	ids := func(m *agentapi.SyncMessage) []string {
		var out []string
		for _, e := range m.Upserts {
			out = append(out, e.ID)
		}
		slices.Sort(out)
		return out
	}
	want1 := []string{shared.ID, own.ID}
	slices.Sort(want1)
	if m := s1.next(t); !slices.Equal(ids(m), want1) || !slices.Equal(m.Parents, []string{g1.id, web}) {
		t.Errorf("g1's full set %v parents %v", ids(m), m.Parents)
	}
	if m := s2.next(t); !slices.Equal(ids(m), []string{shared.ID}) || len(m.Parents) != 3 {
		t.Errorf("g2's full set %v parents %v", ids(m), m.Parents)
	}
	if m := sx.next(t); len(m.Upserts) != 0 {
		t.Errorf("x's full set %v", ids(m))
	}

	_, csr := newCSR(t)
	sign := func(a *testAgent) int {
		code, _ := postJSON(t, a.client, r.adminURL+agentapi.PathSign, agentapi.SignRequest{Requests: []agentapi.CSRForEntry{{EntryID: shared.ID, CSR: csr}}}, nil)
		return code
	}
	if c1, c2, cx := sign(g1), sign(g2), sign(x); c1 != http.StatusOK || c2 != http.StatusOK || cx != http.StatusForbidden {
		t.Errorf("signing the group's entry: g1 %d, g2 %d, x %d; want 200, 200, 403", c1, c2, cx)
	}

	// A new group entry reaches both members, and only them.
	second := r.parentedEntry(t, "spiffe://example.org/frontend-2", web)
	for name, s := range map[string]*syncStream{"g1": s1, "g2": s2} {
		if m := s.next(t); m.Kind != agentapi.KindDelta || !slices.Equal(ids(m), []string{second.ID}) {
			t.Errorf("%s after a group entry: %+v", name, m)
		}
	}
	select {
	case m := <-sx.msgs:
		if m.Kind != agentapi.KindReconcile {
			t.Errorf("x received %+v for another group's entry", m)
		}
	case <-time.After(300 * time.Millisecond):
	}

	for _, bad := range []string{"spiffe://example.org/sigil/nodes/group", "spiffe://example.org/sigil/nodes/group/Web", "spiffe://example.org/sigil/other"} {
		if code, _ := postJSON(t, r.admin, r.adminURL+"/v1/entries", EntryJSON{SPIFFEID: "spiffe://example.org/y", ParentID: bad, Selectors: []string{uidSelector()}}, nil); code != http.StatusBadRequest {
			t.Errorf("parent %s: %d, want 400", bad, code)
		}
	}
	if code, _ := postJSON(t, r.admin, r.adminURL+"/v1/agents/join-tokens", JoinTokenRequest{Groups: []string{"Not OK"}}, nil); code != http.StatusBadRequest {
		t.Errorf("a token for a bad group name: %d", code)
	}

	// x attests again into the group: its open stream ends, and the next
	// one carries the group's entries.
	x2 := r.attestAgent(t, "node-x", "web")
	for deadline := time.After(2 * time.Second); ; {
		select {
		case _, open := <-sx.msgs:
			if open {
				continue
			}
		case <-deadline:
			t.Fatal("x's stream still open after it attested again")
		}
		break
	}
	if m := openSync(t, r, x2).next(t); len(m.Upserts) != 2 {
		t.Errorf("x's set after joining the group: %v", ids(m))
	}
}

// TestAgentSyncAcrossNodes: two servers on one PostgreSQL database; an
// agent attested through A keeps its stream on B. An entry created through
// A reaches it as a delta (B's watch loop notices A's change within half
// a second), and an eviction made on A ends B's stream.
func TestAgentSyncAcrossNodes(t *testing.T) {
	a, b := startTwoNodes(t, func(c *config.Config) { c.Agents.SyncInterval = config.Duration(time.Second) })
	ag := a.attestAgent(t, "node-ha")
	ag.client = b.clientWith(ag.client.Transport.(*http.Transport).TLSClientConfig.Certificates[0])
	s := openSync(t, b, ag)
	if m := s.next(t); m.Kind != agentapi.KindFull || len(m.Upserts) != 0 {
		t.Fatalf("first message on B: %+v", m)
	}
	e := a.parentedEntry(t, "spiffe://example.org/ha", ag.id)
	if m := s.next(t); m.Kind != agentapi.KindDelta || len(m.Upserts) != 1 || m.Upserts[0].ID != e.ID {
		t.Fatalf("B after a create on A: %+v", m)
	}
	if _, err := a.EvictAgent(t.Context(), "node-ha"); err != nil {
		t.Fatal(err)
	}
	if m := s.next(t); m.Kind != agentapi.KindEvicted {
		t.Fatalf("B after an eviction on A: %+v", m)
	}
}
