package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"go/parser"
	"go/token"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/storage"
)

func TestBootstrapHierarchy(t *testing.T) {
	e := newEnv(t, true, nil)
	now := e.clock.Now()

	roots := e.a.Roots()
	if len(roots) != 1 {
		t.Fatalf("Roots() = %d certificates, want 1", len(roots))
	}
	root := roots[0]
	if err := root.CheckSignatureFrom(root); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
	if !root.IsCA || !root.BasicConstraintsValid || root.MaxPathLen != 1 {
		t.Errorf("root constraints: IsCA=%v valid=%v pathlen=%d", root.IsCA, root.BasicConstraintsValid, root.MaxPathLen)
	}
	if root.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("root key usage = %b", root.KeyUsage)
	}
	if root.Subject.CommonName != "Test Root" {
		t.Errorf("root CN = %q", root.Subject.CommonName)
	}
	if want := now.Add(e.cfg.RootTTL); !root.NotAfter.Equal(want) {
		t.Errorf("root NotAfter = %v, want %v", root.NotAfter, want)
	}
	if len(root.SubjectKeyId) == 0 {
		t.Error("root has no subject key ID")
	}

	inters := e.a.Intermediates()
	if len(inters) != 1 {
		t.Fatalf("Intermediates() = %d certificates, want 1", len(inters))
	}
	in := inters[0]
	if err := in.CheckSignatureFrom(root); err != nil {
		t.Errorf("intermediate not signed by the root: %v", err)
	}
	if !in.IsCA || in.MaxPathLen != 0 || !in.MaxPathLenZero {
		t.Errorf("intermediate constraints: IsCA=%v pathlen=%d zero=%v", in.IsCA, in.MaxPathLen, in.MaxPathLenZero)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature; in.KeyUsage != want {
		t.Errorf("intermediate key usage = %b, want %b", in.KeyUsage, want)
	}
	if !in.PermittedDNSDomainsCritical {
		t.Error("name constraints are not critical")
	}
	if !slices.Equal(in.PermittedURIDomains, []string{testTD}) {
		t.Errorf("PermittedURIDomains = %q", in.PermittedURIDomains)
	}
	if !slices.Equal(in.PermittedDNSDomains, []string{"example.org", "svc.internal"}) {
		t.Errorf("PermittedDNSDomains = %q", in.PermittedDNSDomains)
	}
	rootID := IssuerID(root)
	if want := []string{"http://ca.example.org:8080/ca/" + rootID + ".crt"}; !slices.Equal(in.IssuingCertificateURL, want) {
		t.Errorf("intermediate AIA = %q, want %q", in.IssuingCertificateURL, want)
	}
	if want := []string{"http://ca.example.org:8080/crl/" + rootID + ".crl"}; !slices.Equal(in.CRLDistributionPoints, want) {
		t.Errorf("intermediate CDP = %q, want %q", in.CRLDistributionPoints, want)
	}
	if want := now.Add(e.cfg.IntermediateTTL); !in.NotAfter.Equal(want) {
		t.Errorf("intermediate NotAfter = %v, want %v", in.NotAfter, want)
	}
	if in.Subject.CommonName != "Test Intermediate" || in.Subject.SerialNumber != IssuerID(in) {
		t.Errorf("intermediate subject = %v", in.Subject)
	}
	if len(in.SubjectKeyId) == 0 || !bytes.Equal(in.AuthorityKeyId, root.SubjectKeyId) {
		t.Error("intermediate key IDs not set")
	}
	if got, ok := e.a.IssuerCert(IssuerID(in)); !ok || !got.Equal(in) {
		t.Error("IssuerCert does not return the intermediate")
	}
	if _, ok := e.a.IssuerCert("nope"); ok {
		t.Error("IssuerCert found an unknown ID")
	}
	if b := e.a.Bundle(); len(b) != 2 || !b[0].Equal(root) || !b[1].Equal(in) {
		t.Errorf("Bundle() = %d certificates, want root then intermediate", len(b))
	}

	// The intermediate is on the record as a certificate the root issued.
	rec, err := e.a.Certificate(t.Context(), Serial(in.SerialNumber))
	if err != nil {
		t.Fatalf("intermediate record: %v", err)
	}
	if rec.IssuerID != rootID || rec.Profile != ProfileIntermediate || !bytes.Equal(rec.DER, in.Raw) {
		t.Errorf("intermediate record = %+v", rec)
	}

	// Leaves of both profiles verify, name constraints included.
	for _, iss := range []*Issued{
		e.svid(t, "/ns/prod/sa/web"),
		e.issue(t, Request{Profile: ProfileTLSServer, DNSNames: []string{"api.example.org", "*.svc.internal"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}),
	} {
		if err := e.verify(iss.Certificate, iss.Chain...); err != nil {
			t.Errorf("leaf %s does not verify: %v", iss.Record.Subject, err)
		}
	}
}

func TestBootstrapStates(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := t.Context()
	if e.a.Initialized() {
		t.Fatal("Initialized before Bootstrap")
	}
	if _, err := e.a.Issue(ctx, Request{SPIFFEID: "spiffe://example.org/a", PublicKey: mustKey(t).Public()}); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("Issue before Bootstrap: %v, want ErrNotInitialized", err)
	}
	if _, err := e.a.Rotate(ctx, true); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("Rotate before Bootstrap: %v, want ErrNotInitialized", err)
	}
	if err := e.a.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if !e.a.Initialized() {
		t.Fatal("not Initialized after Bootstrap")
	}
	if err := e.a.Bootstrap(ctx); !errors.Is(err, ErrAlreadyInitialized) {
		t.Fatalf("second Bootstrap: %v, want ErrAlreadyInitialized", err)
	}

	// A second authority over the same store sees the issuers, refuses to
	// bootstrap, and issues.
	b, err := New(ctx, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Initialized() || !b.Roots()[0].Equal(e.a.Roots()[0]) || !b.Intermediates()[0].Equal(e.a.Intermediates()[0]) {
		t.Fatal("a reloaded authority does not hold the same issuers")
	}
	if err := b.Bootstrap(ctx); !errors.Is(err, ErrAlreadyInitialized) {
		t.Fatalf("Bootstrap on reload: %v", err)
	}
	iss, err := b.Issue(ctx, Request{SPIFFEID: "spiffe://example.org/a", PublicKey: mustKey(t).Public()})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.verify(iss.Certificate); err != nil {
		t.Fatal(err)
	}
}

func TestNewConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{"no store", func(c *Config) { c.Store = nil }},
		{"no keys", func(c *Config) { c.Keys = nil }},
		{"no trust domain", func(c *Config) { c.TrustDomain = "" }},
		{"bad trust domain", func(c *Config) { c.TrustDomain = "exa mple.org" }},
		{"no public URL", func(c *Config) { c.PublicURL = "" }},
		{"bad DNS domain", func(c *Config) { c.DNSDomains = []string{"-bad.org"} }},
		{"default above max", func(c *Config) { c.DefaultTTL, c.MaxTTL = 2*time.Hour, time.Hour }},
		{"rotate before TTL", func(c *Config) { c.RotateBefore = c.IntermediateTTL }},
		{"CRL refresh", func(c *Config) { c.CRLRefresh = c.CRLValidity }},
		{"OCSP refresh", func(c *Config) { c.OCSPRefreshBefore = c.OCSPValidity }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(newMemStore(), newMemKeys(), newFakeClock(), t)
			tt.mutate(&cfg)
			if _, err := New(t.Context(), cfg); err == nil {
				t.Fatal("New accepted the config")
			}
		})
	}
}

func TestNameConstraintsHold(t *testing.T) {
	e := newEnv(t, true, nil)
	in := e.a.Intermediates()[0]
	inSigner := e.a.set.Load().active(e.clock.Now()).signer
	now := e.clock.Now()

	tests := []struct {
		name string
		dns  []string
		uri  string
	}{
		{name: "DNS outside", dns: []string{"evil.com"}},
		{name: "DNS suffix trick", dns: []string{"notexample.org"}},
		{name: "foreign trust domain", uri: "spiffe://other.org/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := mustKey(t)
			tmpl := &x509.Certificate{
				SerialNumber: bigOne(),
				NotBefore:    now.Add(-time.Minute),
				NotAfter:     now.Add(time.Hour),
				DNSNames:     tt.dns,
				ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}
			if tt.uri != "" {
				u, _ := url.Parse(tt.uri)
				tmpl.URIs = []*url.URL{u}
			}
			der, err := x509.CreateCertificate(nil, tmpl, in, key.Public(), inSigner)
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			var cie x509.CertificateInvalidError
			if err := e.verify(leaf); !errors.As(err, &cie) || cie.Reason != x509.CANotAuthorizedForThisName {
				t.Fatalf("Verify = %v, want CANotAuthorizedForThisName", err)
			}
			req := Request{PublicKey: key.Public(), DNSNames: tt.dns, SPIFFEID: tt.uri}
			if _, err := e.a.Issue(t.Context(), req); !errors.Is(err, ErrPolicy) {
				t.Fatalf("Issue = %v, want ErrPolicy", err)
			}
		})
	}
}

func TestEmptyDNSDomainsPermitNothing(t *testing.T) {
	e := newEnv(t, true, func(c *Config) { c.DNSDomains = nil })
	in := e.a.Intermediates()[0]
	if !slices.Equal(in.PermittedDNSDomains, []string{"invalid"}) {
		t.Fatalf("PermittedDNSDomains = %q", in.PermittedDNSDomains)
	}
	if _, err := e.a.Issue(t.Context(), Request{PublicKey: mustKey(t).Public(), DNSNames: []string{"localhost"}}); !errors.Is(err, ErrPolicy) {
		t.Fatalf("Issue = %v, want ErrPolicy", err)
	}
}

func TestIntermediateCappedAtRootExpiry(t *testing.T) {
	e := newEnv(t, true, func(c *Config) {
		c.RootTTL = 50 * 24 * time.Hour
		c.IntermediateTTL = 90 * 24 * time.Hour
	})
	if got, want := e.a.Intermediates()[0].NotAfter, e.a.Roots()[0].NotAfter; !got.Equal(want) {
		t.Fatalf("intermediate NotAfter = %v, want the root's %v", got, want)
	}
	// Rotation cannot do better than the root's expiry, so it declines.
	e.clock.Advance(40 * 24 * time.Hour)
	if rotated, err := e.a.Rotate(t.Context(), false); err != nil || rotated {
		t.Fatalf("Rotate = %v, %v; want false, nil", rotated, err)
	}
}

func TestRotate(t *testing.T) {
	e := newEnv(t, true, nil)
	ctx := t.Context()
	old := e.a.Intermediates()[0]
	oldLeaf := e.svid(t, "/old")

	if rotated, err := e.a.Rotate(ctx, false); err != nil || rotated {
		t.Fatalf("Rotate on a fresh intermediate = %v, %v", rotated, err)
	}

	// Inside the rotation window, many concurrent calls rotate once.
	e.clock.Advance(e.cfg.IntermediateTTL - e.cfg.RotateBefore + time.Hour)
	var wg sync.WaitGroup
	var mu sync.Mutex
	rotations := 0
	for range 8 {
		wg.Go(func() {
			rotated, err := e.a.Rotate(ctx, false)
			if err != nil {
				t.Error(err)
			}
			if rotated {
				mu.Lock()
				rotations++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if rotations != 1 {
		t.Fatalf("%d rotations, want 1", rotations)
	}

	inters := e.a.Intermediates()
	if len(inters) != 2 || !inters[1].Equal(old) {
		t.Fatalf("Intermediates() = %d, want the new one then the old one", len(inters))
	}
	cur := inters[0]
	if b := e.a.Bundle(); len(b) != 3 {
		t.Fatalf("Bundle() has %d certificates, want root and both intermediates", len(b))
	}

	newLeaf := e.svid(t, "/new")
	if !newLeaf.Chain[0].Equal(cur) || !bytes.Equal(newLeaf.Certificate.AuthorityKeyId, cur.SubjectKeyId) {
		t.Fatal("a new leaf is not issued by the new intermediate")
	}
	if newLeaf.Record.IssuerID != IssuerID(cur) {
		t.Fatalf("record issuer = %s", newLeaf.Record.IssuerID)
	}
	// Both verify against the bundle, each within its own lifetime.
	for _, l := range []*Issued{oldLeaf, newLeaf} {
		if err := e.verifyAt(l.Certificate, l.Certificate.NotBefore.Add(2*time.Minute)); err != nil {
			t.Errorf("leaf under %s does not verify: %v", l.Record.IssuerID, err)
		}
	}

	// Forced rotation always rotates.
	if rotated, err := e.a.Rotate(ctx, true); err != nil || !rotated {
		t.Fatalf("forced Rotate = %v, %v", rotated, err)
	}

	// Once the old one has expired it leaves the bundle.
	e.clock.Advance(e.cfg.RotateBefore)
	for _, c := range e.a.Intermediates() {
		if c.Equal(old) {
			t.Fatal("the expired intermediate is still listed")
		}
	}
	if _, ok := e.a.IssuerCert(IssuerID(old)); !ok {
		t.Fatal("the expired intermediate's certificate is no longer served")
	}

	// A reload sees every intermediate and loads no key for the expired one.
	b, err := New(ctx, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(b.Intermediates()); got != 2 {
		t.Fatalf("reloaded authority lists %d intermediates, want 2", got)
	}
	if is := b.set.Load().byID[IssuerID(old)]; is == nil || is.signer != nil {
		t.Fatal("expired intermediate: want its certificate without its key")
	}
}

func TestIssueMakesIntermediateWhenNoneActive(t *testing.T) {
	e := newEnv(t, true, nil)
	old := e.a.Intermediates()[0]
	e.clock.Advance(e.cfg.IntermediateTTL + time.Hour)
	iss := e.svid(t, "/after-expiry")
	if iss.Chain[0].Equal(old) {
		t.Fatal("issued with the expired intermediate")
	}
	if err := e.verify(iss.Certificate); err != nil {
		t.Fatal(err)
	}
}

func TestRecorder(t *testing.T) {
	var mu sync.Mutex
	var recorded []storage.Certificate
	fail := false
	e := newEnv(t, false, func(c *Config) {
		c.Recorder = recorderFunc(func(_ context.Context, cert storage.Certificate) error {
			mu.Lock()
			defer mu.Unlock()
			if fail {
				return errTest
			}
			recorded = append(recorded, cert)
			return nil
		})
	})
	if err := e.a.Bootstrap(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(recorded) != 1 || recorded[0].Profile != ProfileIntermediate {
		t.Fatalf("recorded after Bootstrap: %+v, want the intermediate", recorded)
	}
	iss := e.svid(t, "/recorded")
	if len(recorded) != 2 || recorded[1].Serial != iss.Record.Serial || !bytes.Equal(recorded[1].DER, iss.Certificate.Raw) {
		t.Fatal("the issued certificate was not recorded")
	}
	// The recorder sees a stored certificate.
	if _, err := e.store.GetCertificate(t.Context(), recorded[1].Serial); err != nil {
		t.Fatalf("recorded certificate not stored: %v", err)
	}

	fail = true
	got, err := e.a.Issue(t.Context(), Request{SPIFFEID: "spiffe://example.org/refused", PublicKey: mustKey(t).Public()})
	if !errors.Is(err, errTest) || got != nil {
		t.Fatalf("Issue with a failing recorder = %v, %v; want no certificate and the error", got, err)
	}
}

func TestRun(t *testing.T) {
	e := newEnv(t, true, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.a.Run(ctx)
	}()
	// The first pass publishes a CRL for the root and the intermediate.
	pollUntil(t, "CRLs from Run", func() bool {
		e.store.mu.Lock()
		defer e.store.mu.Unlock()
		return len(e.store.crls) == 2
	})
	cancel()
	<-done
}

func TestSerialHelpers(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"0aBc", "abc", true},
		{"abc", "abc", true},
		{"0", "", false},
		{"", "", false},
		{"-1", "", false},
		{"xyz", "", false},
		{"0x12", "", false},
		{strings.Repeat("f", 65), "", false},
	}
	for _, tt := range tests {
		got, ok := parseSerial(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseSerial(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	if got := Serial(bigOne()); got != "1" {
		t.Errorf("Serial(1) = %q", got)
	}
	e := newEnv(t, true, nil)
	in := e.a.Intermediates()[0]
	if id := IssuerID(in); len(id) != 32 || strings.ToLower(id) != id {
		t.Errorf("IssuerID = %q", id)
	}
	if _, err := e.a.Certificate(t.Context(), "ffff"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Certificate(unknown) = %v", err)
	}
	certs, err := e.a.Certificates(t.Context(), storage.CertificateFilter{})
	if err != nil || len(certs) != 1 {
		t.Errorf("Certificates() = %d, %v; want the intermediate", len(certs), err)
	}
}

// TestImports keeps the package free of protocol and driver imports.
func TestImports(t *testing.T) {
	forbidden := []string{"net/http", "google.golang.org/grpc", "database/sql", "github.com/mattn/go-sqlite3", "github.com/jackc/pgx"}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		af, err := parser.ParseFile(fset, f, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if p == bad || strings.HasPrefix(p, bad+"/") {
					t.Errorf("%s imports %s", f, p)
				}
			}
		}
	}
}

func bigOne() *big.Int { return big.NewInt(1) }
