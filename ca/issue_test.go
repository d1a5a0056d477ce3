package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	rsaKeyOnce sync.Once
	rsaKey     *rsa.PrivateKey
)

// testRSAKey returns one shared 2048-bit key: generating them is slow.
func testRSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	rsaKeyOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return rsaKey
}

func TestIssueProfiles(t *testing.T) {
	e := newEnv(t, true, nil)
	in := e.a.Intermediates()[0]
	inID := IssuerID(in)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)

	tests := []struct {
		name     string
		req      Request
		profile  string
		ku       x509.KeyUsage
		eku      []x509.ExtKeyUsage
		uri      string
		dns      []string
		ips      int
		cn       string
		subject  string
		emptySub bool
	}{
		{
			name:     "svid EC",
			req:      Request{Profile: ProfileSVID, SPIFFEID: "spiffe://example.org/ns/a/sa/b"},
			profile:  ProfileSVID,
			ku:       x509.KeyUsageDigitalSignature,
			eku:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			uri:      "spiffe://example.org/ns/a/sa/b",
			subject:  "spiffe://example.org/ns/a/sa/b",
			emptySub: true,
		},
		{
			name:     "svid RSA with DNS",
			req:      Request{SPIFFEID: "spiffe://example.org/db", DNSNames: []string{"db.svc.internal"}, PublicKey: testRSAKey(t).Public()},
			profile:  ProfileSVID,
			ku:       x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			eku:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			uri:      "spiffe://example.org/db",
			dns:      []string{"db.svc.internal"},
			subject:  "spiffe://example.org/db",
			emptySub: true,
		},
		{
			name:    "tls-server inferred, names and IP",
			req:     Request{DNSNames: []string{"www.example.org", "example.org", "www.example.org"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("::1")}},
			profile: ProfileTLSServer,
			ku:      x509.KeyUsageDigitalSignature,
			eku:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			dns:     []string{"www.example.org", "example.org"},
			ips:     2,
			cn:      "www.example.org",
			subject: "www.example.org,example.org,10.0.0.1,::1",
		},
		{
			name:    "tls-server RSA wildcard",
			req:     Request{Profile: ProfileTLSServer, DNSNames: []string{"*.svc.internal"}, PublicKey: testRSAKey(t).Public()},
			profile: ProfileTLSServer,
			ku:      x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			eku:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			dns:     []string{"*.svc.internal"},
			cn:      "*.svc.internal",
			subject: "*.svc.internal",
		},
		{
			name:    "tls-server IP only, Ed25519",
			req:     Request{Profile: ProfileTLSServer, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, PublicKey: edPub},
			profile: ProfileTLSServer,
			ku:      x509.KeyUsageDigitalSignature,
			eku:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			ips:     1,
			subject: "127.0.0.1",
		},
		{
			name:     "svid Ed25519 private key's public half",
			req:      Request{SPIFFEID: "spiffe://example.org/ed", PublicKey: edKey.Public()},
			profile:  ProfileSVID,
			ku:       x509.KeyUsageDigitalSignature,
			eku:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			uri:      "spiffe://example.org/ed",
			subject:  "spiffe://example.org/ed",
			emptySub: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss := e.issue(t, tt.req)
			c := iss.Certificate
			if c.IsCA || !c.BasicConstraintsValid {
				t.Errorf("IsCA=%v BasicConstraintsValid=%v", c.IsCA, c.BasicConstraintsValid)
			}
			if c.KeyUsage != tt.ku {
				t.Errorf("KeyUsage = %b, want %b", c.KeyUsage, tt.ku)
			}
			if !slices.Equal(c.ExtKeyUsage, tt.eku) {
				t.Errorf("ExtKeyUsage = %v, want %v", c.ExtKeyUsage, tt.eku)
			}
			var uris []string
			for _, u := range c.URIs {
				uris = append(uris, u.String())
			}
			if tt.uri == "" && len(uris) != 0 || tt.uri != "" && !slices.Equal(uris, []string{tt.uri}) {
				t.Errorf("URIs = %q, want %q", uris, tt.uri)
			}
			if !slices.Equal(c.DNSNames, tt.dns) {
				t.Errorf("DNSNames = %q, want %q", c.DNSNames, tt.dns)
			}
			if len(c.IPAddresses) != tt.ips {
				t.Errorf("IPAddresses = %v", c.IPAddresses)
			}
			if c.Subject.CommonName != tt.cn {
				t.Errorf("CN = %q, want %q", c.Subject.CommonName, tt.cn)
			}
			if tt.emptySub && len(c.Subject.Names) != 0 {
				t.Errorf("subject = %v, want empty", c.Subject)
			}
			if want := []string{"http://ca.example.org:8080/ocsp"}; !slices.Equal(c.OCSPServer, want) {
				t.Errorf("OCSPServer = %q", c.OCSPServer)
			}
			if want := []string{"http://ca.example.org:8080/ca/" + inID + ".crt"}; !slices.Equal(c.IssuingCertificateURL, want) {
				t.Errorf("IssuingCertificateURL = %q", c.IssuingCertificateURL)
			}
			if want := []string{"http://ca.example.org:8080/crl/" + inID + ".crl"}; !slices.Equal(c.CRLDistributionPoints, want) {
				t.Errorf("CRLDistributionPoints = %q", c.CRLDistributionPoints)
			}
			if !bytes.Equal(c.AuthorityKeyId, in.SubjectKeyId) {
				t.Error("AuthorityKeyId is not the intermediate's key ID")
			}
			if len(iss.Chain) != 1 || !iss.Chain[0].Equal(in) {
				t.Error("Chain is not the intermediate")
			}
			r := iss.Record
			if r.Serial != Serial(c.SerialNumber) || r.IssuerID != inID || r.Profile != tt.profile || r.Subject != tt.subject ||
				!r.NotBefore.Equal(c.NotBefore) || !r.NotAfter.Equal(c.NotAfter) || !bytes.Equal(r.DER, c.Raw) {
				t.Errorf("Record = %+v", r)
			}
			stored, err := e.store.GetCertificate(t.Context(), r.Serial)
			if err != nil || !bytes.Equal(stored.DER, c.Raw) {
				t.Errorf("stored record: %v", err)
			}
			if err := e.verify(c); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

func TestIssuePolicy(t *testing.T) {
	e := newEnv(t, true, nil)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		req     Request
		wantErr error
		names   string // must appear in the error
	}{
		{"DNS outside", Request{DNSNames: []string{"evil.com"}}, ErrPolicy, "evil.com"},
		{"DNS suffix without dot", Request{DNSNames: []string{"badexample.org"}}, ErrPolicy, "badexample.org"},
		{"DNS uppercase", Request{DNSNames: []string{"WWW.example.org"}}, ErrPolicy, "WWW.example.org"},
		{"DNS trailing dot", Request{DNSNames: []string{"www.example.org."}}, ErrPolicy, "www.example.org."},
		{"DNS bad char", Request{DNSNames: []string{"a_b.example.org"}}, ErrPolicy, "a_b.example.org"},
		{"DNS leading hyphen", Request{DNSNames: []string{"-a.example.org"}}, ErrPolicy, "-a.example.org"},
		{"DNS long label", Request{DNSNames: []string{strings.Repeat("a", 64) + ".example.org"}}, ErrPolicy, "aaaa"},
		{"DNS empty", Request{DNSNames: []string{""}}, ErrPolicy, `""`},
		{"DNS is an IP", Request{DNSNames: []string{"10.0.0.1"}}, ErrPolicy, "10.0.0.1"},
		{"second name outside", Request{DNSNames: []string{"ok.example.org", "bad.example.net"}}, ErrPolicy, "bad.example.net"},
		{"wildcard outside", Request{DNSNames: []string{"*.example.net"}}, ErrPolicy, "*.example.net"},
		{"double wildcard", Request{DNSNames: []string{"*.*.example.org"}}, ErrPolicy, "*.*.example.org"},
		{"inner wildcard", Request{DNSNames: []string{"a.*.example.org"}}, ErrPolicy, "a.*.example.org"},
		{"bare wildcard", Request{DNSNames: []string{"*"}}, ErrPolicy, `"*"`},
		{"wildcard in svid", Request{SPIFFEID: "spiffe://example.org/a", DNSNames: []string{"*.example.org"}}, ErrPolicy, "*.example.org"},
		{"svid DNS outside", Request{SPIFFEID: "spiffe://example.org/a", DNSNames: []string{"evil.com"}}, ErrPolicy, "evil.com"},
		{"svid foreign domain", Request{SPIFFEID: "spiffe://evil.org/a"}, ErrPolicy, "spiffe://evil.org/a"},
		{"svid bad ID", Request{SPIFFEID: "spiffe://example.org/a/../b"}, ErrPolicy, "spiffe://example.org/a/../b"},
		{"svid without ID", Request{Profile: ProfileSVID, DNSNames: []string{"a.example.org"}}, ErrPolicy, "SPIFFE ID"},
		{"svid with IP", Request{SPIFFEID: "spiffe://example.org/a", IPAddresses: []net.IP{net.ParseIP("10.1.1.1")}}, ErrPolicy, "10.1.1.1"},
		{"tls-server with SPIFFE ID", Request{Profile: ProfileTLSServer, SPIFFEID: "spiffe://example.org/a", DNSNames: []string{"a.example.org"}}, ErrPolicy, "spiffe://example.org/a"},
		{"tls-server without names", Request{Profile: ProfileTLSServer}, ErrPolicy, "DNS name"},
		{"nothing at all", Request{}, ErrPolicy, "DNS name"},
		{"bad IP", Request{IPAddresses: []net.IP{{1, 2, 3}}}, ErrPolicy, "IP address"},
		{"unspecified IP", Request{IPAddresses: []net.IP{net.IPv4zero}}, ErrPolicy, "0.0.0.0"},
		{"unknown profile", Request{Profile: "code-signing", DNSNames: []string{"a.example.org"}}, ErrUnknownProfile, "code-signing"},
		{"P-224 key", Request{DNSNames: []string{"a.example.org"}, PublicKey: p224.Public()}, ErrPolicy, "P-224"},
		{"RSA 1024 key", Request{DNSNames: []string{"a.example.org"}, PublicKey: rsa1024.Public()}, ErrPolicy, "1024"},
		{"TTL above max", Request{DNSNames: []string{"a.example.org"}, TTL: 25 * time.Hour}, ErrTTL, "25h"},
		{"TTL negative", Request{DNSNames: []string{"a.example.org"}, TTL: -time.Second}, ErrTTL, "-1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.req.PublicKey == nil {
				tt.req.PublicKey = mustKey(t).Public()
			}
			before := e.store.certCount()
			iss, err := e.a.Issue(t.Context(), tt.req)
			if !errors.Is(err, tt.wantErr) || iss != nil {
				t.Fatalf("Issue = %v, %v; want %v", iss, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.names) {
				t.Errorf("error %q does not name %q", err, tt.names)
			}
			if e.store.certCount() != before {
				t.Error("a refused request stored a certificate")
			}
		})
	}
}

func TestValidateSPIFFEID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"spiffe://example.org/workload", true},
		{"spiffe://example.org/ns/prod/sa/web-1_2.x", true},
		{"spiffe://example.org/A-Za-z0-9", true},
		{"spiffe://example.org", false},
		{"spiffe://example.org/", false},
		{"spiffe://example.org/a/", false},
		{"spiffe://example.org//a", false},
		{"spiffe://example.org/./a", false},
		{"spiffe://example.org/a/..", false},
		{"spiffe://example.org/a%20b", false},
		{"spiffe://example.org/a?b", false},
		{"spiffe://example.org/a#b", false},
		{"spiffe://example.org/a b", false},
		{"spiffe://example.org:443/a", false},
		{"spiffe://user@example.org/a", false},
		{"spiffe://Example.org/a", false},
		{"SPIFFE://example.org/a", false},
		{"https://example.org/a", false},
		{"spiffe:///a", false},
		{"spiffe://other.org/a", false},
		{"spiffe://sub.example.org/a", false},
		{"", false},
		{"spiffe://example.org/" + strings.Repeat("a", 2048), false},
	}
	for _, tt := range tests {
		err := validateSPIFFEID(tt.id, testTD)
		if (err == nil) != tt.ok {
			t.Errorf("validateSPIFFEID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
	}
}

func TestCheckPublicKey(t *testing.T) {
	big8193 := new(big.Int).Lsh(big.NewInt(1), 8192)
	big2047 := new(big.Int).Lsh(big.NewInt(1), 2046)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	tests := []struct {
		name string
		key  crypto.PublicKey
		ok   bool
	}{
		{"P-256", mustKey(t).Public(), true},
		{"P-384", p384.Public(), true},
		{"P-521", p521.Public(), false},
		{"RSA 2048", testRSAKey(t).Public(), true},
		{"RSA 8193 bits", &rsa.PublicKey{N: big8193, E: 65537}, false},
		{"RSA 2047 bits", &rsa.PublicKey{N: big2047, E: 65537}, false},
		{"RSA even exponent", &rsa.PublicKey{N: testRSAKey(t).N, E: 65536}, false},
		{"Ed25519 short", ed25519.PublicKey{1, 2, 3}, false},
		{"nil", nil, false},
		{"string", "key", false},
	}
	for _, tt := range tests {
		if err := checkPublicKey(tt.key); (err == nil) != tt.ok {
			t.Errorf("%s: checkPublicKey = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestIssueTTL(t *testing.T) {
	e := newEnv(t, true, nil)
	now := e.clock.Now()
	tests := []struct {
		name string
		ttl  time.Duration
		want time.Duration
	}{
		{"default", 0, time.Hour},
		{"explicit", 5 * time.Minute, 5 * time.Minute},
		{"max", 24 * time.Hour, 24 * time.Hour},
	}
	for _, tt := range tests {
		iss := e.issue(t, Request{SPIFFEID: "spiffe://example.org/ttl", TTL: tt.ttl})
		if got := iss.Certificate.NotAfter; !got.Equal(now.Add(tt.want)) {
			t.Errorf("%s: NotAfter = %v, want %v", tt.name, got, now.Add(tt.want))
		}
		if got := iss.Certificate.NotBefore; !got.Equal(now.Add(-time.Minute)) {
			t.Errorf("%s: NotBefore = %v, want a minute before now", tt.name, got)
		}
	}

	// Close to the intermediate's expiry (and outside the window in which
	// Issue would replace it), the leaf's life is cut at the intermediate's.
	e2 := newEnv(t, true, func(c *Config) {
		c.IntermediateTTL = 48 * time.Hour
		c.RotateBefore = time.Hour
	})
	in := e2.a.Intermediates()[0]
	e2.clock.Advance(40 * time.Hour)
	iss := e2.issue(t, Request{SPIFFEID: "spiffe://example.org/capped", TTL: 24 * time.Hour})
	if !iss.Certificate.NotAfter.Equal(in.NotAfter) {
		t.Fatalf("NotAfter = %v, want the intermediate's %v", iss.Certificate.NotAfter, in.NotAfter)
	}
}

// scriptedReader returns queued bytes first, then crypto/rand.
type scriptedReader struct {
	mu    sync.Mutex
	queue []byte
}

func (r *scriptedReader) push(b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queue = append(r.queue, b...)
}

func (r *scriptedReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) > 0 {
		n := copy(p, r.queue)
		r.queue = r.queue[n:]
		return n, nil
	}
	return io.ReadFull(rand.Reader, p)
}

func TestSerials(t *testing.T) {
	rnd := &scriptedReader{}
	e := newEnv(t, true, func(c *Config) { c.Rand = rnd })

	// The serial is the next 16 bytes of Config.Rand, and a zero draw is
	// retried.
	want := bytes.Repeat([]byte{0x80, 0x01}, 8)
	rnd.push(make([]byte, 16))
	rnd.push(want)
	iss := e.svid(t, "/scripted")
	if got := iss.Certificate.SerialNumber.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("serial = %x, want %x", got, want)
	}

	seen := map[string]bool{}
	key := mustKey(t).Public()
	for range 1000 {
		iss, err := e.a.Issue(t.Context(), Request{SPIFFEID: "spiffe://example.org/many", PublicKey: key})
		if err != nil {
			t.Fatal(err)
		}
		n := iss.Certificate.SerialNumber
		if n.Sign() <= 0 || n.BitLen() > 128 {
			t.Fatalf("serial %x is not a positive 128-bit number", n)
		}
		s := Serial(n)
		if s != iss.Record.Serial || seen[s] {
			t.Fatalf("serial %s repeated or recorded differently (%s)", s, iss.Record.Serial)
		}
		seen[s] = true
	}
	// 1000 draws of 128 bits: the top byte is non-zero in about 996 of them,
	// so serials of at most 120 bits should be rare.
	short := 0
	for s := range seen {
		if len(s) <= 30 {
			short++
		}
	}
	if short > 50 {
		t.Fatalf("%d of 1000 serials are 120 bits or shorter: not 128-bit random", short)
	}
}

func TestGroupCommit(t *testing.T) {
	e := newEnv(t, true, nil)
	key := mustKey(t).Public()
	issue := func(path string) (*Issued, error) {
		return e.a.Issue(context.Background(), Request{SPIFFEID: "spiffe://example.org/" + path, PublicKey: key})
	}
	e.store.mu.Lock()
	e.store.batches = nil
	gate := make(chan struct{})
	e.store.gate = gate
	e.store.mu.Unlock()

	// The first insert blocks; 300 more issuances queue behind it.
	var wg sync.WaitGroup
	errs := make(chan error, 301)
	wg.Go(func() {
		_, err := issue("first")
		errs <- err
	})
	pollUntil(t, "the first insert to block", func() bool { return e.store.blocked.Load() == 1 })
	for range 300 {
		wg.Go(func() {
			_, err := issue("queued")
			errs <- err
		})
	}
	pollUntil(t, "300 queued inserts", func() bool {
		e.a.commit.mu.Lock()
		defer e.a.commit.mu.Unlock()
		return len(e.a.commit.queue) == 300
	})
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	e.store.mu.Lock()
	batches := slices.Clone(e.store.batches)
	e.store.mu.Unlock()
	if !slices.Equal(batches, []int{1, maxBatch, 300 - maxBatch}) {
		t.Fatalf("batches = %v, want [1 %d %d]", batches, maxBatch, 300-maxBatch)
	}
	if got := e.store.certCount(); got != 302 {
		t.Fatalf("%d certificates stored, want 302 (intermediate and 301 leaves)", got)
	}

	// When a batch fails, each record is retried alone: only the bad one
	// fails.
	gate = make(chan struct{})
	e.store.mu.Lock()
	e.store.gate = gate
	e.store.reject = "spiffe://example.org/reject"
	e.store.mu.Unlock()
	wg.Go(func() {
		if _, err := issue("blocker"); err != nil {
			t.Error(err)
		}
	})
	pollUntil(t, "the blocker to block", func() bool { return e.store.blocked.Load() == 2 })
	results := make(chan error, 6)
	for i := range 6 {
		wg.Go(func() {
			path := "good"
			if i == 3 {
				path = "reject"
			}
			iss, err := issue(path)
			if err == nil && iss == nil {
				err = errors.New("nil certificate without error")
			}
			if path == "reject" {
				if err == nil {
					err = errors.New("the rejected record was issued")
				} else {
					err = nil
				}
			}
			results <- err
		})
	}
	pollUntil(t, "6 queued inserts", func() bool {
		e.a.commit.mu.Lock()
		defer e.a.commit.mu.Unlock()
		return len(e.a.commit.queue) == 6
	})
	close(gate)
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestIssueContextCancelled(t *testing.T) {
	e := newEnv(t, true, nil)
	gate := make(chan struct{})
	e.store.mu.Lock()
	e.store.gate = gate
	e.store.mu.Unlock()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := e.a.Issue(ctx, Request{SPIFFEID: "spiffe://example.org/cancel", PublicKey: mustKey(t).Public()})
		done <- err
	}()
	pollUntil(t, "the insert to block", func() bool { return e.store.blocked.Load() == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Issue = %v, want context.Canceled", err)
	}
	close(gate)
}
