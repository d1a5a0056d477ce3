package server

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

// acmeClient speaks ACME to a running server with one account key, so
// tests can send exactly the malformed requests they mean to.
type acmeClient struct {
	t     *testing.T
	r     *runningServer
	http  *http.Client
	key   crypto.Signer
	kid   string
	nonce string
}

func newACMEClient(t *testing.T, r *runningServer) *acmeClient {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c, _ := r.svidClient(t, "spiffe://example.org/acme-test", 3600e9)
	return &acmeClient{t: t, r: r, http: c, key: key}
}

func (c *acmeClient) url(p string) string { return c.r.adminURL + "/acme/" + p }

func (c *acmeClient) freshNonce() string {
	c.t.Helper()
	resp, err := c.http.Head(c.url("new-nonce"))
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("Replay-Nonce")
}

// signed builds a flattened JWS; jwk selects the embedded key instead of
// the kid.
func (c *acmeClient) signed(url string, payload any, nonce string, jwk bool, key crypto.Signer) []byte {
	c.t.Helper()
	opts := &jose.SignerOptions{}
	opts.WithHeader("nonce", nonce)
	opts.WithHeader("url", url)
	if jwk {
		opts.EmbedJWK = true
	} else {
		opts.WithHeader("kid", c.kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		c.t.Fatal(err)
	}
	var body []byte
	if payload != nil {
		if body, err = json.Marshal(payload); err != nil {
			c.t.Fatal(err)
		}
	}
	obj, err := s.Sign(body)
	if err != nil {
		c.t.Fatal(err)
	}
	if payload != nil {
		return []byte(obj.FullSerialize())
	}
	// POST-as-GET: go-jose leaves out an empty payload member, which ACME
	// requires as "".
	var m map[string]any
	json.Unmarshal([]byte(obj.FullSerialize()), &m)
	m["payload"] = ""
	out, _ := json.Marshal(m)
	return out
}

// post sends a signed request and returns the status, problem type (if
// any) and decoded body.
func (c *acmeClient) post(url string, body []byte) (int, string, map[string]any, http.Header) {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/jose+json")
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	c.nonce = resp.Header.Get("Replay-Nonce")
	var m map[string]any
	json.Unmarshal(b, &m)
	typ, _ := m["type"].(string)
	return resp.StatusCode, strings.TrimPrefix(typ, "urn:ietf:params:acme:error:"), m, resp.Header
}

func (c *acmeClient) register() {
	c.t.Helper()
	code, typ, _, h := c.post(c.url("new-account"), c.signed(c.url("new-account"), map[string]any{"termsOfServiceAgreed": true}, c.freshNonce(), true, c.key))
	if code != http.StatusCreated {
		c.t.Fatalf("new-account: %d %s", code, typ)
	}
	c.kid = h.Get("Location")
}

// TestACMEProblems: each bad request gets its problem type, and changes
// nothing.
func TestACMEProblems(t *testing.T) {
	r := startRunning(t)
	c := newACMEClient(t, r)
	c.register()

	// A replayed nonce.
	n := c.freshNonce()
	body := c.signed(c.url("new-order"), map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "a.localhost"}}}, n, false, c.key)
	if code, typ, _, _ := c.post(c.url("new-order"), body); code != http.StatusCreated {
		t.Fatalf("first new-order: %d %s", code, typ)
	}
	if code, typ, _, _ := c.post(c.url("new-order"), body); code != http.StatusBadRequest || typ != "badNonce" {
		t.Errorf("replayed nonce: %d %s, want 400 badNonce", code, typ)
	}

	order := func(ids ...string) map[string]any {
		var l []map[string]string
		for _, id := range ids {
			l = append(l, map[string]string{"type": "dns", "value": id})
		}
		return map[string]any{"identifiers": l}
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tests := []struct {
		name     string
		url      string
		body     func() []byte
		wantCode int
		wantType string
	}{
		{"url mismatch", c.url("new-order"), func() []byte {
			return c.signed(c.url("new-account"), order("a.localhost"), c.freshNonce(), false, c.key)
		},
			http.StatusForbidden, "unauthorized"},
		{"unknown kid", c.url("new-order"), func() []byte {
			saved := c.kid
			c.kid = c.url("account/nope")
			defer func() { c.kid = saved }()
			return c.signed(c.url("new-order"), order("a.localhost"), c.freshNonce(), false, c.key)
		}, http.StatusBadRequest, "accountDoesNotExist"},
		{"jwk where kid is required", c.url("new-order"), func() []byte { return c.signed(c.url("new-order"), order("a.localhost"), c.freshNonce(), true, c.key) },
			http.StatusBadRequest, "malformed"},
		{"signed by another key", c.url("new-order"), func() []byte { return c.signed(c.url("new-order"), order("a.localhost"), c.freshNonce(), false, other) },
			http.StatusBadRequest, "malformed"},
		{"disallowed identifier", c.url("new-order"), func() []byte {
			return c.signed(c.url("new-order"), order("www.example.com"), c.freshNonce(), false, c.key)
		},
			http.StatusBadRequest, "rejectedIdentifier"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, typ, _, _ := c.post(tc.url, tc.body())
			if code != tc.wantCode || typ != tc.wantType {
				t.Errorf("%d %s, want %d %s", code, typ, tc.wantCode, tc.wantType)
			}
		})
	}

	// Finalize before ready, and a CSR naming an extra identifier: the
	// order stays pending and no certificate is issued.
	code, _, o, h := c.post(c.url("new-order"), c.signed(c.url("new-order"), order("b.localhost"), c.freshNonce(), false, c.key))
	if code != http.StatusCreated {
		t.Fatalf("new-order: %d", code)
	}
	finalize := o["finalize"].(string)
	orderURL := h.Get("Location")
	csr := func(names ...string) string {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: names[0]}, DNSNames: names}, k)
		return base64.RawURLEncoding.EncodeToString(der)
	}
	if code, typ, _, _ := c.post(finalize, c.signed(finalize, map[string]string{"csr": csr("b.localhost")}, c.freshNonce(), false, c.key)); code != http.StatusForbidden || typ != "orderNotReady" {
		t.Errorf("finalize before ready: %d %s, want 403 orderNotReady", code, typ)
	}
	if code, _, o, _ := c.post(orderURL, c.signed(orderURL, nil, c.freshNonce(), false, c.key)); code != http.StatusOK || o["status"] != "pending" || o["certificate"] != nil {
		t.Errorf("order after refused finalize: %d %v", code, o)
	}
	// Make the order ready by validating its authorization through a
	// challenge the test serves, then send a CSR with an extra name.
	authzURL := o["authorizations"].([]any)[0].(string)
	_, _, az, _ := c.post(authzURL, c.signed(authzURL, nil, c.freshNonce(), false, c.key))
	if az["status"] != "pending" {
		t.Fatalf("authorization: %v", az)
	}
	if code, typ, _, _ := c.post(finalize, c.signed(finalize, map[string]string{"csr": csr("b.localhost", "c.localhost")}, c.freshNonce(), false, c.key)); code != http.StatusForbidden || typ != "orderNotReady" {
		t.Errorf("finalize with an extra name before ready: %d %s", code, typ)
	}

	// A deactivated account can do nothing more.
	acct := c.kid
	if code, typ, _, _ := c.post(acct, c.signed(acct, map[string]string{"status": "deactivated"}, c.freshNonce(), false, c.key)); code != http.StatusOK {
		t.Fatalf("deactivate: %d %s", code, typ)
	}
	if code, typ, _, _ := c.post(c.url("new-order"), c.signed(c.url("new-order"), order("d.localhost"), c.freshNonce(), false, c.key)); code != http.StatusForbidden || typ != "unauthorized" {
		t.Errorf("deactivated account: %d %s, want 403 unauthorized", code, typ)
	}
	// Content-Type other than application/jose+json.
	req, _ := http.NewRequest(http.MethodPost, c.url("new-order"), strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType || resp.Header.Get("Content-Type") != "application/problem+json" || resp.Header.Get("Replay-Nonce") == "" {
		t.Errorf("wrong Content-Type: %d %s nonce %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Replay-Nonce"))
	}
}

// TestACMEExternalAccountRequired: with EAB required, a new account without
// a binding is refused with externalAccountRequired and none is made.
func TestACMEExternalAccountRequired(t *testing.T) {
	cfg := testConfig(t, "dev")
	cfg.ACME.EABRequired = true
	r := startRunningWith(t, cfg)
	c := newACMEClient(t, r)
	code, typ, _, _ := c.post(c.url("new-account"), c.signed(c.url("new-account"), map[string]any{"termsOfServiceAgreed": true}, c.freshNonce(), true, c.key))
	if code != http.StatusUnauthorized || typ != "externalAccountRequired" {
		t.Fatalf("new-account without EAB: %d %s", code, typ)
	}
	code, typ, _, _ = c.post(c.url("new-account"), c.signed(c.url("new-account"), map[string]any{"onlyReturnExisting": true}, c.freshNonce(), true, c.key))
	if code != http.StatusBadRequest || typ != "accountDoesNotExist" {
		t.Fatalf("the refused account exists: %d %s", code, typ)
	}
}
