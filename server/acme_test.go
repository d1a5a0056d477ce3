package server

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/sigil-pki/sigil/acme/challenge/challengetest"
	"github.com/sigil-pki/sigil/acme/jws"
	"github.com/sigil-pki/sigil/config"
)

// acmeClient speaks ACME to a running server with one account key, so
// tests can send exactly the malformed requests they mean to.
type acmeClient struct {
	t     testing.TB
	r     *runningServer
	http  *http.Client
	key   crypto.Signer
	kid   string
	nonce string
	// profile, when set, is asked for in new orders; lastChain is the PEM
	// chain obtain downloaded last.
	profile   string
	lastChain []byte
}

func newACMEClient(t testing.TB, r *runningServer) *acmeClient {
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
	r, ka := startACME(t, nil)
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
	// Make the order ready by answering its http-01 challenge, then send
	// a CSR with an extra name: badCSR, and the order stays ready.
	authzURL := o["authorizations"].([]any)[0].(string)
	_, _, az, _ := c.post(authzURL, c.signed(authzURL, nil, c.freshNonce(), false, c.key))
	for _, ch := range az["challenges"].([]any) {
		if m := ch.(map[string]any); m["type"] == "http-01" {
			keyAuth, _ := jws.KeyAuthorization(m["token"].(string), &jose.JSONWebKey{Key: c.key.Public()})
			ka.Present(t.Context(), "b.localhost", m["token"].(string), keyAuth)
			chURL := m["url"].(string)
			if code, _, ch, _ := c.post(chURL, c.signed(chURL, map[string]any{}, c.freshNonce(), false, c.key)); code != http.StatusOK || ch["status"] != "valid" {
				t.Fatalf("challenge: %d %v", code, ch)
			}
		}
	}
	if _, _, o, _ := c.post(orderURL, c.signed(orderURL, nil, c.freshNonce(), false, c.key)); o["status"] != "ready" {
		t.Fatalf("order after its challenge: %v", o)
	}
	if code, typ, _, _ := c.post(finalize, c.signed(finalize, map[string]string{"csr": csr("b.localhost", "c.localhost")}, c.freshNonce(), false, c.key)); code != http.StatusBadRequest || typ != "badCSR" {
		t.Errorf("finalize with an extra name: %d %s, want 400 badCSR", code, typ)
	}
	if _, _, o, _ := c.post(orderURL, c.signed(orderURL, nil, c.freshNonce(), false, c.key)); o["status"] != "ready" || o["certificate"] != nil {
		t.Errorf("order after a refused CSR: %v", o)
	}
	if code, _, o, _ := c.post(finalize, c.signed(finalize, map[string]string{"csr": csr("b.localhost")}, c.freshNonce(), false, c.key)); code != http.StatusOK || o["status"] != "valid" {
		t.Errorf("finalize with the order's names after the refusal: %d %v", code, o)
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

// TestACMEKeyChangeAndRenewalInfo: a full order through http-01 in
// process; ARI suggests renewing in the last third of the certificate's
// life, and at once after a revocation; key-change moves the account to a
// new key.
func TestACMEKeyChangeAndRenewalInfo(t *testing.T) {
	r, ka := startACME(t, nil)
	c := newACMEClient(t, r)
	c.register()
	if err := c.obtain("ari.localhost", ka); err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(c.lastChain)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ari := func() (time.Time, time.Time) {
		t.Helper()
		id := base64.RawURLEncoding.EncodeToString(leaf.AuthorityKeyId) + "." + base64.RawURLEncoding.EncodeToString(leaf.SerialNumber.Bytes())
		resp, err := c.http.Get(c.url("renewal-info/" + id))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Window struct{ Start, End time.Time } `json:"suggestedWindow"`
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Retry-After") == "" || json.NewDecoder(resp.Body).Decode(&out) != nil {
			t.Fatalf("renewal-info: %d", resp.StatusCode)
		}
		return out.Window.Start, out.Window.End
	}
	start, end := ari()
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	if start.Before(leaf.NotBefore.Add(life/2)) || !end.After(start) || end.After(leaf.NotAfter) {
		t.Errorf("window %v to %v for a certificate valid %v to %v", start, end, leaf.NotBefore, leaf.NotAfter)
	}

	// Key change, then the old key finds no account and the new one the
	// same account.
	newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	oldJWK := jose.JSONWebKey{Key: c.key.Public()}
	inner := c.signedInner(c.url("key-change"), map[string]any{"account": c.kid, "oldKey": oldJWK}, newKey)
	var innerObj map[string]any
	json.Unmarshal(inner, &innerObj)
	if code, typ, _, _ := c.post(c.url("key-change"), c.signed(c.url("key-change"), innerObj, c.freshNonce(), false, c.key)); code != http.StatusOK {
		t.Fatalf("key-change: %d %s", code, typ)
	}
	if code, typ, _, _ := c.post(c.url("new-account"), c.signed(c.url("new-account"), map[string]any{"onlyReturnExisting": true}, c.freshNonce(), true, c.key)); code != http.StatusBadRequest || typ != "accountDoesNotExist" {
		t.Errorf("old key after key-change: %d %s", code, typ)
	}
	code, _, _, h := c.post(c.url("new-account"), c.signed(c.url("new-account"), map[string]any{"onlyReturnExisting": true}, c.freshNonce(), true, newKey))
	if code != http.StatusOK || h.Get("Location") != c.kid {
		t.Errorf("new key after key-change: %d %s, want the account %s", code, h.Get("Location"), c.kid)
	}

	// Revoked: renew now.
	c.key = newKey
	if code, typ, _, _ := c.post(c.url("revoke-cert"), c.signed(c.url("revoke-cert"), map[string]any{"certificate": base64.RawURLEncoding.EncodeToString(leaf.Raw), "reason": 1}, c.freshNonce(), false, c.key)); code != http.StatusOK {
		t.Fatalf("revoke-cert: %d %s", code, typ)
	}
	if start, _ := ari(); start.After(time.Now()) {
		t.Errorf("a revoked certificate's window starts %v, want now", start)
	}
}

// signedInner is a key-change inner JWS: the new key embedded, no nonce.
func (c *acmeClient) signedInner(url string, payload any, key crypto.Signer) []byte {
	c.t.Helper()
	opts := (&jose.SignerOptions{EmbedJWK: true}).WithHeader("url", url)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		c.t.Fatal(err)
	}
	body, _ := json.Marshal(payload)
	obj, err := s.Sign(body)
	if err != nil {
		c.t.Fatal(err)
	}
	return []byte(obj.FullSerialize())
}

// TestACMERateLimits: past the per-account cap, newOrder answers
// rateLimited with Retry-After and makes no order.
func TestACMERateLimits(t *testing.T) {
	cfg := testConfig(t, "dev")
	cfg.ACME.OrdersPerAccount = 2
	r := startRunningWith(t, cfg)
	c := newACMEClient(t, r)
	c.register()
	order := map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "rl.localhost"}}}
	for i := range 3 {
		code, typ, _, h := c.post(c.url("new-order"), c.signed(c.url("new-order"), order, c.freshNonce(), false, c.key))
		switch {
		case i < 2 && code != http.StatusCreated:
			t.Fatalf("order %d: %d %s", i, code, typ)
		case i == 2 && (code != http.StatusTooManyRequests || typ != "rateLimited" || h.Get("Retry-After") == "" || h.Get("Location") != ""):
			t.Fatalf("order past the cap: %d %s, Retry-After %q", code, typ, h.Get("Retry-After"))
		}
	}
}

// TestACMEDNS01Wildcard: a wildcard order is offered dns-01 only, which
// validates against the configured resolver (the test's own DNS server).
func TestACMEDNS01Wildcard(t *testing.T) {
	dnsSrv := challengetest.NewDNSServer(t)
	cfg := testConfig(t, "dev")
	cfg.ACME.DNSResolver = dnsSrv.Addr()
	r := startRunningWith(t, cfg)
	c := newACMEClient(t, r)
	c.register()
	pag := func(u string) map[string]any {
		t.Helper()
		code, typ, m, _ := c.post(u, c.signed(u, nil, c.freshNonce(), false, c.key))
		if code != http.StatusOK {
			t.Fatalf("POST-as-GET %s: %d %s", u, code, typ)
		}
		return m
	}
	code, typ, o, h := c.post(c.url("new-order"), c.signed(c.url("new-order"), map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "*.wild.localhost"}}}, c.freshNonce(), false, c.key))
	if code != http.StatusCreated {
		t.Fatalf("new-order: %d %s", code, typ)
	}
	orderURL := h.Get("Location")
	authzURL := o["authorizations"].([]any)[0].(string)
	az := pag(authzURL)
	chs := az["challenges"].([]any)
	if az["wildcard"] != true || len(chs) != 1 || chs[0].(map[string]any)["type"] != "dns-01" {
		t.Fatalf("wildcard authorization %v", az)
	}
	ch := chs[0].(map[string]any)
	thumb, _ := (&jose.JSONWebKey{Key: c.key.Public()}).Thumbprint(crypto.SHA256)
	sum := sha256.Sum256([]byte(ch["token"].(string) + "." + base64.RawURLEncoding.EncodeToString(thumb)))
	dnsSrv.SetTXT("_acme-challenge.wild.localhost", base64.RawURLEncoding.EncodeToString(sum[:]))
	chURL := ch["url"].(string)
	if code, typ, _, _ := c.post(chURL, c.signed(chURL, map[string]any{}, c.freshNonce(), false, c.key)); code != http.StatusOK {
		t.Fatalf("challenge: %d %s", code, typ)
	}
	deadline := time.Now().Add(10 * time.Second)
	for pag(orderURL)["status"] != "ready" {
		if time.Now().After(deadline) {
			t.Fatalf("order never ready: %v", pag(authzURL))
		}
		time.Sleep(50 * time.Millisecond)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"*.wild.localhost"}}, k)
	finalize := o["finalize"].(string)
	code, typ, fin, _ := c.post(finalize, c.signed(finalize, map[string]string{"csr": base64.RawURLEncoding.EncodeToString(der)}, c.freshNonce(), false, c.key))
	if code != http.StatusOK || fin["status"] != "valid" {
		t.Fatalf("finalize: %d %s %v", code, typ, fin)
	}
}

// startACME runs a server whose http-01 validation reaches the returned
// in-memory responder, with names under localhost on loopback; adjust
// may change the configuration first.
func startACME(tb testing.TB, adjust func(*config.Config)) (*runningServer, *keyAuths) {
	tb.Helper()
	ka := &keyAuths{m: map[string]string{}}
	responder := httptest.NewServer(ka)
	tb.Cleanup(responder.Close)
	port, _ := strconv.Atoi(responder.URL[strings.LastIndex(responder.URL, ":")+1:])
	cfg := testConfig(tb, "dev")
	cfg.ACME.HTTPPort = port
	cfg.ACME.LoopbackNames = []string{"localhost"}
	if adjust != nil {
		adjust(&cfg)
	}
	return startRunningWith(tb, cfg), ka
}

// TestLoopbackLookup: without loopback suffixes the validator resolves on
// its own (no hook); with them, other names still resolve through the
// configured DNS server.
func TestLoopbackLookup(t *testing.T) {
	if loopbackLookup(nil, "") != nil {
		t.Fatal("a lookup hook without loopback suffixes would replace real resolution")
	}
	dnsSrv := challengetest.NewDNSServer(t)
	dnsSrv.SetAddrs("www.example.test", netip.MustParseAddr("192.0.2.7"))
	lookup := loopbackLookup([]string{"localhost"}, dnsSrv.Addr())
	if got, err := lookup(t.Context(), "a.localhost"); err != nil || len(got) != 1 || got[0] != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("a.localhost = %v, %v", got, err)
	}
	if got, err := lookup(t.Context(), "www.example.test"); err != nil || len(got) != 1 || got[0] != netip.MustParseAddr("192.0.2.7") {
		t.Errorf("www.example.test = %v, %v; want the DNS server's answer", got, err)
	}
}

// keyAuths serves http-01 key authorizations from memory, each after
// delay.
type keyAuths struct {
	mu    sync.Mutex
	m     map[string]string
	delay time.Duration
}

func (k *keyAuths) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	v := k.m[strings.TrimPrefix(r.URL.Path, "/.well-known/acme-challenge/")]
	delay := k.delay
	k.mu.Unlock()
	time.Sleep(delay)
	io.WriteString(w, v)
}

// obtain runs one whole order for name: new-order, authorization,
// http-01, polling, finalize, certificate download.
func (c *acmeClient) obtain(name string, ka *keyAuths) error {
	post := func(u string, payload any) (int, map[string]any, http.Header) {
		code, _, m, h := c.post(u, c.signed(u, payload, c.nonceOrFresh(), false, c.key))
		return code, m, h
	}
	newOrder := map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": name}}}
	if c.profile != "" {
		newOrder["profile"] = c.profile
	}
	code, o, h := post(c.url("new-order"), newOrder)
	if code != http.StatusCreated {
		return fmt.Errorf("new-order: %d %v", code, o)
	}
	orderURL := h.Get("Location")
	authzURL := o["authorizations"].([]any)[0].(string)
	_, az, _ := post(authzURL, nil)
	var chURL, token string
	for _, ch := range az["challenges"].([]any) {
		if m := ch.(map[string]any); m["type"] == "http-01" {
			chURL, token = m["url"].(string), m["token"].(string)
		}
	}
	thumb, _ := (&jose.JSONWebKey{Key: c.key.Public()}).Thumbprint(crypto.SHA256)
	ka.mu.Lock()
	ka.m[token] = token + "." + base64.RawURLEncoding.EncodeToString(thumb)
	ka.mu.Unlock()
	if code, m, _ := post(chURL, map[string]any{}); code != http.StatusOK {
		return fmt.Errorf("challenge: %d %v", code, m)
	}
	for {
		_, az, _ := post(authzURL, nil)
		if az["status"] == "valid" {
			break
		}
		if az["status"] != "pending" {
			return fmt.Errorf("authorization %v", az)
		}
		time.Sleep(20 * time.Millisecond)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{name}}, k)
	code, fin, _ := post(o["finalize"].(string), map[string]string{"csr": base64.RawURLEncoding.EncodeToString(der)})
	if code != http.StatusOK || fin["status"] != "valid" {
		return fmt.Errorf("finalize: %d %v (order %s)", code, fin, orderURL)
	}
	certURL := fin["certificate"].(string)
	req, _ := http.NewRequest(http.MethodPost, certURL, strings.NewReader(string(c.signed(certURL, nil, c.nonceOrFresh(), false, c.key))))
	req.Header.Set("Content-Type", "application/jose+json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	c.lastChain, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	c.nonce = resp.Header.Get("Replay-Nonce")
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("certificate: %d", resp.StatusCode)
	}
	return nil
}

// nonceOrFresh uses the nonce of the last answer, as clients do.
func (c *acmeClient) nonceOrFresh() string {
	if n := c.nonce; n != "" {
		c.nonce = ""
		return n
	}
	return c.freshNonce()
}
