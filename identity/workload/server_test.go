package workload

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sigil-pki/sigil/identity/attest"
	"github.com/sigil-pki/sigil/identity/entry"
	"github.com/sigil-pki/sigil/identity/jwtsvid"
	"github.com/sigil-pki/sigil/identity/jwtsvid/jwtsvidtest"
)

const testTD = "example.org"

// fixedAttestor returns the selectors (or error) last set for every
// request and checks that it was handed a live Unix connection.
type fixedAttestor struct {
	sels []attest.Selector
	err  error

	mu    sync.Mutex
	calls int
}

func (a *fixedAttestor) Attest(_ context.Context, conn *net.UnixConn) ([]attest.Selector, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if conn == nil {
		return nil, errors.New("nil connection")
	}
	a.calls++
	return slices.Clone(a.sels), a.err
}

func (a *fixedAttestor) set(sels ...attest.Selector) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sels = sels
}

// entryList matches entries whose selectors are all among the workload's.
type entryList []entry.Entry

func (l entryList) MatchingEntries(_ context.Context, sels []string) ([]entry.Entry, error) {
	var out []entry.Entry
	for _, e := range l {
		all := true
		for _, s := range e.Selectors {
			if !slices.Contains(sels, s) {
				all = false
				break
			}
		}
		if all {
			out = append(out, e)
		}
	}
	return out, nil
}

// testCA is a root and an intermediate made with crypto/x509; SVIDs are
// signed by the intermediate.
type testCA struct {
	t       testing.TB
	root    *x509.Certificate
	rootKey *ecdsa.PrivateKey
	jwt     *jwtsvid.Issuer

	mu       sync.Mutex
	inter    *x509.Certificate
	interKey *ecdsa.PrivateKey
	trust    *Trust
	issued   []*x509.Certificate
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	now := time.Now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	root := mustCert(t, &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, rootKey.Public(), rootKey)
	ca := &testCA{t: t, root: root, rootKey: rootKey, jwt: jwtsvidtest.NewIssuer(t, testTD)}
	ca.inter, ca.interKey = ca.newIntermediate(t, 2)
	return ca
}

// newIntermediate makes an intermediate with the given serial under the
// root.
func (ca *testCA) newIntermediate(t testing.TB, serial int64) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	return mustCert(t, &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "test intermediate"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, ca.root, key.Public(), ca.rootKey), key
}

func mustCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatalf("creating certificate: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parsing certificate: %v", err)
	}
	return c
}

func (ca *testCA) IssueX509SVID(_ context.Context, e entry.Entry, key crypto.Signer) (*x509.Certificate, []*x509.Certificate, error) {
	u, err := url.Parse(e.SPIFFEID)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	ca.mu.Lock()
	inter, interKey := ca.inter, ca.interKey
	ca.mu.Unlock()
	leaf := mustCert(ca.t, &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now,
		NotAfter:              now.Add(e.X509SVIDTTL),
		URIs:                  []*url.URL{u},
		DNSNames:              e.DNSNames,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}, inter, key.Public(), interKey)
	ca.mu.Lock()
	ca.issued = append(ca.issued, leaf)
	ca.mu.Unlock()
	return leaf, []*x509.Certificate{inter}, nil
}

func (ca *testCA) MintJWTSVID(ctx context.Context, e entry.Entry, audience []string) (string, time.Time, error) {
	return ca.jwt.Mint(ctx, e.SPIFFEID, audience, e.JWTSVIDTTL)
}

func (ca *testCA) Trust() *Trust {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.trust == nil {
		ca.trust = &Trust{
			X509Authorities: []*x509.Certificate{ca.root},
			JWTAuthorities:  ca.jwt.PublicKeys(),
			X509Signer:      ca.inter.SerialNumber.String(),
		}
	}
	return ca.trust
}

// rotate replaces the intermediate and the JWT key, as the server's CA and
// key maintenance do; the next Trust differs.
func (ca *testCA) rotate(t *testing.T) {
	t.Helper()
	if _, err := ca.jwt.Rotate(t.Context()); err != nil {
		t.Fatal(err)
	}
	ca.mu.Lock()
	serial := ca.inter.SerialNumber.Int64() + 1
	ca.mu.Unlock()
	inter, key := ca.newIntermediate(t, serial)
	ca.mu.Lock()
	defer ca.mu.Unlock()
	ca.inter, ca.interKey, ca.trust = inter, key, nil
}

func (ca *testCA) issuedCount() int {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return len(ca.issued)
}

var webSelectors = []attest.Selector{{Type: "unix", Value: "uid:1000"}, {Type: "unix", Value: "user:web"}}

func webEntry(ttl time.Duration) entry.Entry {
	return entry.Entry{
		SPIFFEID:    "spiffe://example.org/web",
		Selectors:   []string{"unix:uid:1000"},
		X509SVIDTTL: ttl,
		DNSNames:    []string{"web.example.org"},
		Hint:        "internal",
	}
}

// startServer serves the Workload API on a socket in a temp dir and returns
// the socket's address for go-spiffe's client.
func startServer(t *testing.T, att Attestor, entries Entries, ca *testCA, updates Updates, opts ...func(*Config)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "workload.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatalf("listening on %s: %v", path, err)
	}
	cfg := Config{
		TrustDomain: testTD,
		Attestor:    att,
		Entries:     entries,
		Authority:   ca,
		Updates:     updates,
		Logger:      slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v after cancel, want nil", err)
		}
	})
	return "unix://" + path
}

func newClient(t *testing.T, addr string) *workloadapi.Client {
	t.Helper()
	c, err := workloadapi.New(t.Context(), workloadapi.WithAddr(addr))
	if err != nil {
		t.Fatalf("creating Workload API client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestFetchX509SVID(t *testing.T) {
	ca := newTestCA(t)
	att := &fixedAttestor{sels: webSelectors}
	other := entry.Entry{SPIFFEID: "spiffe://example.org/db", Selectors: []string{"unix:uid:2000"}, X509SVIDTTL: time.Hour}
	addr := startServer(t, att, entryList{other, webEntry(time.Hour)}, ca, nil)
	client := newClient(t, addr)

	svid, err := client.FetchX509SVID(t.Context())
	if err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	if got, want := svid.ID.String(), "spiffe://example.org/web"; got != want {
		t.Errorf("SVID ID = %q, want %q", got, want)
	}
	if svid.Hint != "internal" {
		t.Errorf("SVID hint = %q, want %q", svid.Hint, "internal")
	}
	if len(svid.Certificates) != 2 || !svid.Certificates[1].Equal(ca.inter) {
		t.Errorf("SVID chain has %d certificates, want leaf + the intermediate", len(svid.Certificates))
	}
	leaf := svid.Certificates[0]
	if !slices.Equal(leaf.DNSNames, []string{"web.example.org"}) {
		t.Errorf("leaf DNS names = %v, want [web.example.org]", leaf.DNSNames)
	}
	if lifetime := leaf.NotAfter.Sub(leaf.NotBefore); lifetime != time.Hour {
		t.Errorf("leaf lifetime = %v, want the entry's TTL 1h", lifetime)
	}
	key, ok := svid.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Fatalf("SVID key is %T, want a P-256 *ecdsa.PrivateKey", svid.PrivateKey)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		t.Error("SVID private key does not match the leaf's public key")
	}

	bundles, err := client.FetchX509Bundles(t.Context())
	if err != nil {
		t.Fatalf("FetchX509Bundles: %v", err)
	}
	td := spiffeid.RequireTrustDomainFromString(testTD)
	b, err := bundles.GetX509BundleForTrustDomain(td)
	if err != nil {
		t.Fatalf("bundle for %s: %v", td, err)
	}
	if auth := b.X509Authorities(); len(auth) != 1 || !auth[0].Equal(ca.root) {
		t.Fatalf("bundle authorities = %d certificates, want the test root", len(auth))
	}
	id, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.root}))
	if err != nil {
		t.Fatalf("verifying SVID against the bundle: %v", err)
	}
	if id != svid.ID {
		t.Errorf("verified ID = %s, want %s", id, svid.ID)
	}
	att.mu.Lock()
	defer att.mu.Unlock()
	if att.calls == 0 {
		t.Error("attestor was never called")
	}
}

func TestDenied(t *testing.T) {
	tests := []struct {
		name     string
		attestor *fixedAttestor
		want     codes.Code
	}{
		{"no matching entry", &fixedAttestor{sels: []attest.Selector{{Type: "unix", Value: "uid:4242"}}}, codes.PermissionDenied},
		{"attestation failed", &fixedAttestor{err: attest.ErrPeerGone}, codes.Unauthenticated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ca := newTestCA(t)
			addr := startServer(t, tc.attestor, entryList{webEntry(time.Hour)}, ca, nil)
			client := newClient(t, addr)
			_, err := client.FetchX509SVID(t.Context())
			if got := status.Code(err); got != tc.want {
				t.Errorf("FetchX509SVID error = %v (code %v), want code %v", err, got, tc.want)
			}
			_, err = client.FetchX509Bundles(t.Context())
			if got := status.Code(err); got != tc.want {
				t.Errorf("FetchX509Bundles error = %v (code %v), want code %v", err, got, tc.want)
			}
			if n := ca.issuedCount(); n != 0 {
				t.Errorf("%d SVIDs issued, want none", n)
			}
		})
	}
}

func TestSecurityHeader(t *testing.T) {
	ca := newTestCA(t)
	addr := startServer(t, &fixedAttestor{sels: webSelectors}, entryList{webEntry(time.Hour)}, ca, nil)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	api := workload.NewSpiffeWorkloadAPIClient(conn)

	tests := []struct {
		name string
		md   metadata.MD
		want codes.Code
	}{
		{"missing", nil, codes.InvalidArgument},
		{"false", metadata.Pairs(MetadataKey, "false"), codes.InvalidArgument},
		{"twice", metadata.Pairs(MetadataKey, "true", MetadataKey, "true"), codes.InvalidArgument},
		{"present", metadata.Pairs(MetadataKey, "true"), codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tc.md != nil {
				ctx = metadata.NewOutgoingContext(ctx, tc.md)
			}
			svids, err := api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
			if err == nil {
				_, err = svids.Recv()
			}
			if got := status.Code(err); got != tc.want {
				t.Errorf("FetchX509SVID: %v (code %v), want code %v", err, got, tc.want)
			}
			bundles, err := api.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
			if err == nil {
				_, err = bundles.Recv()
			}
			if got := status.Code(err); got != tc.want {
				t.Errorf("FetchX509Bundles: %v (code %v), want code %v", err, got, tc.want)
			}
			want := tc.want
			_, err = api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"x"}})
			if got := status.Code(err); got != want {
				t.Errorf("FetchJWTSVID: %v (code %v), want code %v", err, got, want)
			}
		})
	}
	if n := ca.issuedCount(); n != 1 {
		t.Errorf("%d SVIDs issued, want 1 (only the request with the header)", n)
	}
}

func TestRotation(t *testing.T) {
	ca := newTestCA(t)
	addr := startServer(t, &fixedAttestor{sels: webSelectors}, entryList{webEntry(2 * time.Second)}, ca, nil)
	src, err := workloadapi.NewX509Source(t.Context(), workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
	if err != nil {
		t.Fatalf("NewX509Source: %v", err)
	}
	t.Cleanup(func() { src.Close() })
	first, err := src.GetX509SVID()
	if err != nil {
		t.Fatalf("GetX509SVID: %v", err)
	}
	firstLeaf := first.Certificates[0]
	deadline := firstLeaf.NotAfter
	for {
		cur, err := src.GetX509SVID()
		if err != nil {
			t.Fatalf("GetX509SVID: %v", err)
		}
		leaf := cur.Certificates[0]
		if leaf.SerialNumber.Cmp(firstLeaf.SerialNumber) != 0 {
			if cur.ID != first.ID {
				t.Errorf("rotated SVID ID = %s, want %s", cur.ID, first.ID)
			}
			if !leaf.NotAfter.After(firstLeaf.NotAfter) {
				t.Errorf("rotated SVID expires %v, not after the first's %v", leaf.NotAfter, firstLeaf.NotAfter)
			}
			return
		}
		if !time.Now().Before(deadline) {
			t.Fatalf("no new SVID before the first expired at %v", deadline)
		}
		pollPause(t.Context())
	}
}

// pollPause yields between polls without sleeping the test outright: it
// waits on a short timer or the test's end.
func pollPause(ctx context.Context) {
	t := time.NewTimer(20 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func TestServeRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"bad trust domain", Config{TrustDomain: "Not A Domain", Attestor: &fixedAttestor{}, Entries: entryList{}, Authority: &testCA{}}},
		{"missing authority", Config{TrustDomain: testTD, Attestor: &fixedAttestor{}, Entries: entryList{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.sock")
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if err := New(tc.cfg).Serve(t.Context(), l); err == nil {
				t.Error("Serve returned nil, want a configuration error")
			}
		})
	}
}

func TestRotationTime(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		notBefore time.Time
		notAfter  time.Time
		at        float64
		want      time.Time
	}{
		{"fresh, half", now, now.Add(time.Hour), 0.5, now.Add(30 * time.Minute)},
		{"backdated, half", now.Add(-time.Hour), now.Add(time.Hour), 0.5, now.Add(30 * time.Minute)},
		{"future start, half", now.Add(time.Minute), now.Add(3 * time.Minute), 0.5, now.Add(2 * time.Minute)},
		{"fresh, two thirds", now, now.Add(90 * time.Minute), 2.0 / 3, now.Add(time.Hour)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := rotationTime(&x509.Certificate{NotBefore: tc.notBefore, NotAfter: tc.notAfter}, now, tc.at)
			if !got.Equal(tc.want) {
				t.Errorf("rotationTime = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFetchX509SVIDsAllEntries(t *testing.T) {
	ca := newTestCA(t)
	second := entry.Entry{SPIFFEID: "spiffe://example.org/web-admin", Selectors: []string{"unix:user:web"}, X509SVIDTTL: 30 * time.Minute}
	addr := startServer(t, &fixedAttestor{sels: webSelectors}, entryList{webEntry(time.Hour), second}, ca, nil)
	svids, err := newClient(t, addr).FetchX509SVIDs(t.Context())
	if err != nil {
		t.Fatalf("FetchX509SVIDs: %v", err)
	}
	var ids []string
	for _, s := range svids {
		ids = append(ids, s.ID.String())
	}
	if want := []string{"spiffe://example.org/web", "spiffe://example.org/web-admin"}; !slices.Equal(ids, want) {
		t.Fatalf("SVID IDs = %v, want %v", ids, want)
	}
	k0, k1 := svids[0].PrivateKey.(*ecdsa.PrivateKey), svids[1].PrivateKey.(*ecdsa.PrivateKey)
	if k0.Equal(k1) {
		t.Error("two SVIDs share a private key, want a fresh key per SVID")
	}
	if lifetime := svids[1].Certificates[0].NotAfter.Sub(svids[1].Certificates[0].NotBefore); lifetime != 30*time.Minute {
		t.Errorf("second SVID lifetime = %v, want its entry's TTL 30m", lifetime)
	}
}

func TestServeStopsOpenStreams(t *testing.T) {
	ca := newTestCA(t)
	path := filepath.Join(t.TempDir(), "workload.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Config{TrustDomain: testTD, Attestor: &fixedAttestor{sels: webSelectors}, Entries: entryList{webEntry(time.Hour)}, Authority: ca})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()

	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sctx := metadata.NewOutgoingContext(t.Context(), metadata.Pairs(MetadataKey, "true"))
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(sctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("first response: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve = %v after cancel, want nil", err)
	}
	if _, err := stream.Recv(); err == nil {
		t.Error("stream still delivers after the server stopped")
	}
}
