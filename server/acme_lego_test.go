package server

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/acme/api"
	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/lego"
	legolog "github.com/go-acme/lego/v5/log"
	"github.com/go-acme/lego/v5/registration"
	"github.com/sigil-pki/sigil/ca/catest"
	"github.com/sigil-pki/sigil/config"
)

func init() {
	// lego logs every step at info level; tests want its warnings only.
	legolog.SetDefault(slog.New(slog.NewTextHandler(testLogWriter{}, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

// testLogWriter sends lego's warnings to stderr, where go test shows
// them for a failing test.
type testLogWriter struct{}

func (testLogWriter) Write(p []byte) (int, error) { return os.Stderr.Write(p) }

// legoUser is an ACME account as lego's library keeps it.
type legoUser struct {
	key crypto.Signer
	reg *acme.ExtendedAccount
}

func (u *legoUser) GetEmail() string                       { return "" }
func (u *legoUser) GetRegistration() *acme.ExtendedAccount { return u.reg }
func (u *legoUser) GetPrivateKey() crypto.Signer           { return u.key }

// Present and CleanUp make keyAuths lego's http-01 provider.
func (k *keyAuths) Present(_ context.Context, _, token, keyAuth string) error {
	k.mu.Lock()
	k.m[token] = keyAuth
	k.mu.Unlock()
	return nil
}

func (k *keyAuths) CleanUp(_ context.Context, _, token, _ string) error {
	k.mu.Lock()
	delete(k.m, token)
	k.mu.Unlock()
	return nil
}

// legoHTTP is an HTTP client that trusts the server's roots, as lego is
// told to with LEGO_CA_CERTIFICATES.
func (r *runningServer) legoHTTP() *http.Client {
	auth, _ := r.Authority()
	roots := x509.NewCertPool()
	for _, c := range auth.Roots() {
		roots.AddCert(c)
	}
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots, ServerName: "localhost"},
		MaxIdleConnsPerHost: 64,
	}}
}

// newLego returns a lego client for user (whose registration, when set,
// is used as is) answering http-01 from ka.
func (r *runningServer) newLego(tb testing.TB, user *legoUser, ka *keyAuths) *lego.Client {
	tb.Helper()
	cfg := lego.NewConfig(user)
	cfg.CADirURL = r.adminURL + "/acme/directory"
	cfg.HTTPClient = r.legoHTTP()
	cfg.UserAgent = "sigil-test"
	c, err := lego.NewClient(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := c.Challenge.SetHTTP01Provider(ka); err != nil {
		tb.Fatal(err)
	}
	return c
}

// legoAccount registers a new account (with an external account binding
// when eab is set) and returns it with its client.
func (r *runningServer) legoAccount(tb testing.TB, ka *keyAuths, eab *EABKey) (*legoUser, *lego.Client) {
	tb.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u := &legoUser{key: key}
	c := r.newLego(tb, u, ka)
	var err error
	if eab != nil {
		u.reg, err = c.Registration.RegisterWithExternalAccountBinding(tb.Context(), registration.RegisterEABOptions{
			TermsOfServiceAgreed: true, Kid: eab.KeyID, HmacEncoded: eab.HMACKey,
		})
	} else {
		u.reg, err = c.Registration.Register(tb.Context(), registration.RegisterOptions{TermsOfServiceAgreed: true})
	}
	if err != nil {
		tb.Fatal(err)
	}
	return u, r.newLego(tb, u, ka)
}

// leafOf parses the first certificate of a PEM chain.
func leafOf(tb testing.TB, chain []byte) *x509.Certificate {
	tb.Helper()
	blk, _ := pem.Decode(chain)
	if blk == nil {
		tb.Fatal("no certificate in the chain")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// TestLegoFiftyParallelOrders: lego's library obtains 50 certificates at
// once over 10 accounts; all succeed, every certificate verifies against
// the roots and is on the log.
func TestLegoFiftyParallelOrders(t *testing.T) {
	r, ka := startACME(t, nil)
	const accounts, orders = 10, 50
	users := make([]*legoUser, accounts)
	for i := range users {
		users[i], _ = r.legoAccount(t, ka, nil)
	}
	var wg sync.WaitGroup
	certs := make([]*certificate.Resource, orders)
	for o := range orders {
		c := r.newLego(t, users[o%accounts], ka)
		wg.Go(func() {
			res, err := c.Certificate.Obtain(t.Context(), certificate.ObtainRequest{
				Domains: []string{fmt.Sprintf("p%d.localhost", o)}, Bundle: true, KeyType: certcrypto.EC256,
			})
			if err != nil {
				t.Errorf("order %d: %v", o, err)
				return
			}
			certs[o] = res
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	auth, _ := r.Authority()
	roots := x509.NewCertPool()
	for _, c := range auth.Roots() {
		roots.AddCert(c)
	}
	l, err := r.transparencyLog()
	if err != nil {
		t.Fatal(err)
	}
	size := checkpointOf(t, r.Server, l).Size
	for o, res := range certs {
		leaf := leafOf(t, res.Certificate)
		inter := x509.NewCertPool()
		inter.AppendCertsFromPEM(res.IssuerCertificate)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: fmt.Sprintf("p%d.localhost", o)}); err != nil {
			t.Errorf("order %d: %v", o, err)
		}
		if findIssuance(t, l, size, leaf.Raw) < 0 {
			t.Errorf("order %d: certificate not on the log", o)
		}
	}
}

// TestLegoRenewalInfo: lego reads the ARI window of a fresh certificate
// (inside its life, not yet open), renews it with "replaces" naming the
// old one, and a replaces naming a certificate of names the order does
// not share is refused.
func TestLegoRenewalInfo(t *testing.T) {
	r, ka := startACME(t, nil)
	user, c := r.legoAccount(t, ka, nil)
	ctx := t.Context()
	res, err := c.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: []string{"ari.localhost"}, KeyType: certcrypto.EC256})
	if err != nil {
		t.Fatal(err)
	}
	leaf := leafOf(t, res.Certificate)
	info, err := c.Certificate.GetRenewalInfo(ctx, leaf)
	if err != nil {
		t.Fatal(err)
	}
	w := info.SuggestedWindow
	if !w.Start.After(time.Now()) || !w.End.After(w.Start) || !w.End.Before(leaf.NotAfter) || w.Start.Before(leaf.NotBefore) {
		t.Fatalf("window %v – %v for a certificate valid %v – %v", w.Start, w.End, leaf.NotBefore, leaf.NotAfter)
	}
	if info.RetryAfter <= 0 {
		t.Errorf("no Retry-After on renewal information")
	}
	if at := info.ShouldRenewAt(time.Now(), time.Minute); at != nil {
		t.Errorf("a fresh certificate should not be renewed now (lego says %v)", at)
	}

	certID, err := api.MakeARICertID(leaf)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := c.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: []string{"ari.localhost"}, KeyType: certcrypto.EC256, ReplacesCertID: certID})
	if err != nil {
		t.Fatal(err)
	}
	if next := leafOf(t, renewed.Certificate); next.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Fatal("renewal returned the old certificate")
	}
	order, err := c.Certificate.Get(ctx, renewed.CertURL, false)
	if err != nil || order == nil {
		t.Fatalf("fetching the renewed certificate: %v", err)
	}

	// A replaces that shares no identifier with the order is refused
	// (lego retries without it only on alreadyReplaced).
	core, err := api.New(r.legoHTTP(), "sigil-test", r.adminURL+"/acme/directory", user.reg.Location, user.key)
	if err != nil {
		t.Fatal(err)
	}
	_, err = core.Orders.New(ctx, []string{"other.localhost"}, &api.OrderOptions{ReplacesCertID: certID})
	var pd *acme.ProblemDetails
	if !errors.As(err, &pd) || pd.Type != "urn:ietf:params:acme:error:malformed" || !strings.Contains(pd.Detail, "shares no identifier") {
		t.Fatalf("replaces for other names: %v", err)
	}
}

// TestLegoProfiles: the directory lists the profiles; an account bound
// to a SPIFFE ID by its EAB key obtains an x509-svid (the ID beside the
// DNS name) or a tls-server certificate through lego's profile option;
// a plain account asking for x509-svid is refused.
func TestLegoProfiles(t *testing.T) {
	r, ka := startACME(t, nil)
	code, body := call(t, r.admin, "POST", r.adminURL+"/v1/acme/eab", `{"spiffe_id":"spiffe://example.org/ingress"}`)
	if code != http.StatusOK {
		t.Fatalf("eab: %d %s", code, body)
	}
	var eab EABKey
	if err := json.Unmarshal([]byte(body), &eab); err != nil {
		t.Fatal(err)
	}
	_, bound := r.legoAccount(t, ka, &eab)
	profiles := bound.GetServerMetadata().Profiles
	if profiles["tls-server"] == "" || profiles["x509-svid"] == "" {
		t.Fatalf("directory profiles: %v", profiles)
	}
	ctx := t.Context()
	for _, tc := range []struct {
		profile string
		uris    []string
	}{
		{"x509-svid", []string{"spiffe://example.org/ingress"}},
		{"tls-server", nil},
		{"", nil},
	} {
		res, err := bound.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: []string{"svid.localhost"}, KeyType: certcrypto.EC256, Profile: tc.profile})
		if err != nil {
			t.Fatalf("profile %q: %v", tc.profile, err)
		}
		leaf := leafOf(t, res.Certificate)
		var uris []string
		for _, u := range leaf.URIs {
			uris = append(uris, u.String())
		}
		if !slices.Equal(uris, tc.uris) || !slices.Equal(leaf.DNSNames, []string{"svid.localhost"}) {
			t.Errorf("profile %q: URIs %v, DNS %v", tc.profile, uris, leaf.DNSNames)
		}
	}
	_, err := bound.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: []string{"svid.localhost"}, KeyType: certcrypto.EC256, Profile: "gold"})
	var pd *acme.ProblemDetails
	if !errors.As(err, &pd) || pd.Type != "urn:ietf:params:acme:error:invalidProfile" {
		t.Fatalf("an unknown profile: %v", err)
	}
	_, plain := r.legoAccount(t, ka, nil)
	_, err = plain.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: []string{"svid.localhost"}, KeyType: certcrypto.EC256, Profile: "x509-svid"})
	if !errors.As(err, &pd) || pd.Type != "urn:ietf:params:acme:error:unauthorized" {
		t.Fatalf("x509-svid for an unbound account: %v", err)
	}
}

// TestACMEValidationWait: a challenge request waits for a quick
// validation and answers "valid" at once; a validation slower than
// acme.validation_wait is answered "processing" with Retry-After, and
// the authorization turns valid later.
func TestACMEValidationWait(t *testing.T) {
	r, ka := startACME(t, func(c *config.Config) { c.ACME.ValidationWait = config.Duration(time.Second) })
	user, _ := r.legoAccount(t, ka, nil)
	core, err := api.New(r.legoHTTP(), "sigil-test", r.adminURL+"/acme/directory", user.reg.Location, user.key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	challenge := func(name string) (acme.ExtendedChallenge, string) {
		o, err := core.Orders.New(ctx, []string{name}, nil)
		if err != nil {
			t.Fatal(err)
		}
		az, err := core.Authorizations.Get(ctx, o.Authorizations[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range az.Challenges {
			if ch.Type == "http-01" {
				keyAuth, _ := core.GetKeyAuthorization(ch.Token)
				ka.Present(ctx, name, ch.Token, keyAuth)
				done, err := core.Challenges.New(ctx, ch.URL)
				if err != nil {
					t.Fatal(err)
				}
				return done, o.Authorizations[0]
			}
		}
		t.Fatal("no http-01 challenge")
		return acme.ExtendedChallenge{}, ""
	}
	if done, _ := challenge("quick.localhost"); done.Status != acme.StatusValid || done.Validated.IsZero() {
		t.Fatalf("a quick validation: %+v", done.Challenge)
	}
	ka.mu.Lock()
	ka.delay = 3 * time.Second
	ka.mu.Unlock()
	done, azURL := challenge("slow.localhost")
	if done.Status != acme.StatusProcessing || done.RetryAfter != time.Second {
		t.Fatalf("a slow validation: status %s, Retry-After %v", done.Status, done.RetryAfter)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		az, err := core.Authorizations.Get(ctx, azURL)
		if err != nil {
			t.Fatal(err)
		}
		if az.Status == acme.StatusValid {
			break
		}
		if az.Status != acme.StatusPending || time.Now().After(deadline) {
			t.Fatalf("authorization after a slow validation: %s", az.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestLegoEABDomains: an EAB key may limit its accounts to domains; such
// an account obtains names inside them (a wildcard's base counts) and is
// refused anything else, each identifier named in a subproblem; the key's
// domains must be DNS names inside ca.dns_domains.
func TestLegoEABDomains(t *testing.T) {
	r, ka := startACME(t, nil)
	for body, want := range map[string]string{
		`{"domains":["*.shop.localhost"]}`: "give it without",
		`{"domains":["example.com"]}`:      "outside ca.dns_domains",
		`{"domains":["Shop.localhost"]}`:   "not a lowercase DNS name",
	} {
		if code, out := call(t, r.admin, "POST", r.adminURL+"/v1/acme/eab", body); code != http.StatusBadRequest || !strings.Contains(out, want) {
			t.Errorf("%s: %d %s", body, code, out)
		}
	}
	code, body := call(t, r.admin, "POST", r.adminURL+"/v1/acme/eab", `{"domains":["shop.localhost","shop.localhost."]}`)
	if code != http.StatusOK {
		t.Fatalf("eab: %d %s", code, body)
	}
	var eab EABKey
	if err := json.Unmarshal([]byte(body), &eab); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(eab.Domains, []string{"shop.localhost"}) {
		t.Fatalf("domains %v", eab.Domains)
	}
	_, c := r.legoAccount(t, ka, &eab)
	ctx := t.Context()
	for _, names := range [][]string{{"shop.localhost"}, {"www.shop.localhost", "api.shop.localhost"}} {
		if _, err := c.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: names, KeyType: certcrypto.EC256}); err != nil {
			t.Errorf("%v: %v", names, err)
		}
	}
	_, err := c.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: []string{"www.shop.localhost", "blog.localhost", "shop.localhost.evil.localhost"}, KeyType: certcrypto.EC256})
	var pd *acme.ProblemDetails
	if !errors.As(err, &pd) || pd.Type != "urn:ietf:params:acme:error:rejectedIdentifier" || len(pd.SubProblems) != 2 {
		t.Fatalf("names outside the binding: %v", err)
	}
	for i, want := range []string{"blog.localhost", "shop.localhost.evil.localhost"} {
		if pd.SubProblems[i].Identifier.Value != want {
			t.Errorf("subproblem %d names %v, want %s", i, pd.SubProblems[i].Identifier, want)
		}
	}
	// The same names are fine for an account without the binding.
	_, free := r.legoAccount(t, ka, nil)
	if _, err := free.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: []string{"blog.localhost"}, KeyType: certcrypto.EC256}); err != nil {
		t.Fatal(err)
	}
}

// TestLegoAlternateChain: after an operator records another CA's
// certificate for the root, certificate downloads link to the chain
// through it (rel="alternate"); lego's preferred-chain option picks it,
// and it verifies against that CA alone, while the default chain stays
// Sigil's own. Bad cross-certificates are refused.
func TestLegoAlternateChain(t *testing.T) {
	r, ka := startACME(t, nil)
	auth, _ := r.Authority()
	root := auth.Roots()[0]
	now := time.Now()
	cross, corp, err := catest.CrossSign(root, "Corp Root", now.Add(-time.Hour), now.Add(365*24*time.Hour), true)
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(c *x509.Certificate) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	add := func(p string) (int, string) {
		b, _ := json.Marshal(CrossRequest{Certificate: p})
		return call(t, r.admin, "POST", r.adminURL+"/v1/ca/cross", string(b))
	}
	for name, tc := range map[string]struct {
		pem  string
		code int
		want string
	}{
		"not PEM":        {"hello", http.StatusBadRequest, "PEM"},
		"the root":       {pemOf(root), http.StatusBadRequest, "self-issued"},
		"two blocks":     {pemOf(cross) + pemOf(corp), http.StatusBadRequest, "exactly one"},
		"another CA's":   {pemOf(corp), http.StatusBadRequest, "match no root"},
		"cross":          {pemOf(cross), http.StatusOK, "Corp Root"},
		"the same again": {pemOf(cross), http.StatusConflict, ""},
	} {
		if code, body := add(tc.pem); code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s", name, code, body)
		}
	}
	var logged bool
	for _, e := range r.logEntries(t, 0) {
		logged = logged || e.Kind == "ca.cross" && strings.Contains(e.Subject.Detail, "Corp Root")
	}
	if !logged {
		t.Error("the cross-certificate is not on the log")
	}

	_, c := r.legoAccount(t, ka, nil)
	ctx := t.Context()
	for _, tc := range []struct {
		preferred string
		anchor    *x509.Certificate
		top       *x509.Certificate
	}{
		{"", root, auth.Intermediates()[0]},
		{"Corp Root", corp, cross},
	} {
		res, err := c.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: []string{"alt.localhost"}, KeyType: certcrypto.EC256, PreferredChain: tc.preferred})
		if err != nil {
			t.Fatal(err)
		}
		chain, err := certcrypto.ParsePEMBundle(res.IssuerCertificate)
		if err != nil {
			t.Fatal(err)
		}
		if last := chain[len(chain)-1]; !last.Equal(tc.top) {
			t.Errorf("preferred %q: the chain ends with %s", tc.preferred, last.Subject)
		}
		anchors, inter := x509.NewCertPool(), x509.NewCertPool()
		anchors.AddCert(tc.anchor)
		for _, ic := range chain {
			inter.AddCert(ic)
		}
		if _, err := leafOf(t, res.Certificate).Verify(x509.VerifyOptions{Roots: anchors, Intermediates: inter, DNSName: "alt.localhost"}); err != nil {
			t.Errorf("preferred %q: %v", tc.preferred, err)
		}
	}
}

// TestACMEOrdersList: the account's orders URL lists its live orders a
// page at a time, follows rel="next", and is the account's alone.
func TestACMEOrdersList(t *testing.T) {
	r, _ := startACME(t, nil)
	c := newACMEClient(t, r)
	c.register()
	want := map[string]bool{}
	for i := range ordersPageForTest + 5 {
		code, _, _, h := c.post(c.url("new-order"), c.signed(c.url("new-order"), map[string]any{
			"identifiers": []map[string]string{{"type": "dns", "value": fmt.Sprintf("l%d.localhost", i)}}}, c.freshNonce(), false, c.key))
		if code != http.StatusCreated {
			t.Fatalf("new-order %d: %d", i, code)
		}
		want[h.Get("Location")] = true
	}
	_, _, acct, _ := c.post(c.kid, c.signed(c.kid, nil, c.freshNonce(), false, c.key))
	next, _ := acct["orders"].(string)
	got := map[string]bool{}
	pages := 0
	for next != "" {
		code, _, page, h := c.post(next, c.signed(next, nil, c.freshNonce(), false, c.key))
		if code != http.StatusOK {
			t.Fatalf("orders page %s: %d %v", next, code, page)
		}
		pages++
		for _, u := range page["orders"].([]any) {
			got[u.(string)] = true
		}
		next = ""
		for _, l := range h.Values("Link") {
			if u, ok := strings.CutSuffix(l, `>;rel="next"`); ok {
				next = strings.TrimPrefix(u, "<")
			}
		}
	}
	if pages != 2 || len(got) != len(want) {
		t.Fatalf("%d pages, %d orders listed of %d", pages, len(got), len(want))
	}
	for u := range want {
		if !got[u] {
			t.Errorf("order %s not listed", u)
		}
	}
	other := newACMEClient(t, r)
	other.register()
	ordersURL := acct["orders"].(string)
	if code, typ, _, _ := other.post(ordersURL, other.signed(ordersURL, nil, other.freshNonce(), false, other.key)); code != http.StatusForbidden || typ != "unauthorized" {
		t.Fatalf("another account's orders: %d %s", code, typ)
	}
}

// ordersPageForTest is the acme package's page size of orders lists.
const ordersPageForTest = 100
