package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/ca"
	"github.com/sigil-pki/sigil/config"
	"github.com/sigil-pki/sigil/hsm/hsmtest"
	"github.com/sigil-pki/sigil/storage/storagetest"
)

func testConfig(t testing.TB, seal string) config.Config {
	t.Helper()
	var cfg config.Config
	cfg.TrustDomain = "example.org"
	cfg.DataDir = t.TempDir()
	cfg.Seal.Type = seal
	cfg.Listen.HTTPS, cfg.Listen.HTTP = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Listen.PublicURL = "http://127.0.0.1:1"
	cfg.Listen.HTTPSURL = "https://127.0.0.1:2"
	cfg.CA.DNSDomains = []string{"localhost", "example.org"}
	cfg.ApplyDefaults()
	if seal != "pkcs11" {
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	return cfg
}

func newServer(t *testing.T, cfg config.Config, opts Options) *Server {
	t.Helper()
	s, err := New(t.Context(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func issueSVID(t *testing.T, s *Server, id string) *ca.Issued {
	t.Helper()
	auth, err := s.Authority()
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := auth.Issue(t.Context(), ca.Request{Profile: ca.ProfileSVID, PublicKey: key.Public(), SPIFFEID: id})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// TestNothingReadableOnDisk: after init and issuance, neither the SQLite
// file nor its WAL holds a CA private key or the barrier's plaintext.
func TestNothingReadableOnDisk(t *testing.T) {
	cfg := testConfig(t, "shamir")
	s := newServer(t, cfg, Options{})
	if _, err := s.Initialize(t.Context(), InitOptions{Shares: 3, Threshold: 2}); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		issueSVID(t, s, "spiffe://example.org/app")
	}
	issuers, err := s.store.ListIssuers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var secrets [][]byte
	for _, iss := range issuers {
		signer, err := s.keys.Signer(t.Context(), iss.KeyRef)
		if err != nil {
			t.Fatal(err)
		}
		k := signer.(*ecdsa.PrivateKey)
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		raw, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, der, raw)
	}
	if err := s.barrier.Put(t.Context(), "test/plain", []byte("this plaintext must never reach the disk")); err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, []byte("this plaintext must never reach the disk"))
	var disk []byte
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(cfg.Storage.SQLite.Path + suffix)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		disk = append(disk, b...)
	}
	if len(disk) == 0 {
		t.Fatal("database file is empty")
	}
	for i, sec := range secrets {
		if bytes.Contains(disk, sec) {
			t.Errorf("secret %d (%d bytes) found in the database file", i, len(sec))
		}
	}
}

// TestNameConstraintsWithOpenSSL: openssl refuses a leaf outside the
// intermediate's name constraints even when the intermediate's own key
// signed it, and accepts one inside.
func TestNameConstraintsWithOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl not found: apt-get install openssl")
		}
		t.Skip("openssl not found")
	}
	cfg := testConfig(t, "dev")
	s := newServer(t, cfg, Options{})
	if _, err := s.Initialize(t.Context(), InitOptions{}); err != nil {
		t.Fatal(err)
	}
	auth, _ := s.Authority()
	inter := auth.Intermediates()[0]
	issuers, _ := s.store.ListIssuers(t.Context())
	var ref string
	for _, iss := range issuers {
		if iss.Kind == "intermediate" {
			ref = iss.KeyRef
		}
	}
	signer, err := s.keys.Signer(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, certs ...*x509.Certificate) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, encodeCerts(certs), 0o644)
		return p
	}
	rootPEM := write("root.pem", auth.Roots()...)
	interPEM := write("inter.pem", inter)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name   string
		dns    string
		uri    string
		wantOK bool
	}{
		{"dns inside", "api.example.org", "", true},
		{"dns outside", "www.evil.com", "", false},
		{"spiffe inside", "", "spiffe://example.org/x", true},
		{"spiffe outside", "", "spiffe://evil.org/x", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := &x509.Certificate{
				SerialNumber: big.NewInt(time.Now().UnixNano()),
				Subject:      pkix.Name{CommonName: "leaf"},
				NotBefore:    time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
				KeyUsage:    x509.KeyUsageDigitalSignature,
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}
			if tc.dns != "" {
				tmpl.DNSNames = []string{tc.dns}
			}
			if tc.uri != "" {
				u, _ := url.Parse(tc.uri)
				tmpl.URIs = append(tmpl.URIs, u)
				tmpl.Subject = pkix.Name{}
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, inter, leafKey.Public(), signer)
			if err != nil {
				t.Fatal(err)
			}
			leaf := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".pem")
			os.WriteFile(leaf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
			out, err := exec.Command(openssl, "verify", "-CAfile", rootPEM, "-untrusted", interPEM, leaf).CombinedOutput()
			if tc.wantOK && err != nil {
				t.Fatalf("openssl rejected a leaf inside the constraints: %s", out)
			}
			if !tc.wantOK && (err == nil || !strings.Contains(string(out), "subtree violation")) {
				t.Fatalf("openssl accepted a leaf outside the constraints: %s", out)
			}
		})
	}
}

// TestHSMRoot: with an HSM configured, the root key is made inside the
// token, sensitive and not extractable, and the pkcs11 seal unseals by
// itself on the next start.
func TestHSMRoot(t *testing.T) {
	hc := hsmtest.NewToken(t)
	cfg := testConfig(t, "pkcs11")
	cfg.HSM = config.HSM{Module: hc.Module, TokenLabel: hc.TokenLabel, PINEnv: "UNUSED", RootKeyLabel: "sigil-root"}
	s, err := New(t.Context(), cfg, Options{HSMPIN: hc.PIN})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Initialize(t.Context(), InitOptions{}); err != nil {
		t.Fatal(err)
	}
	attrs, err := s.token.KeyAttributes(t.Context(), "sigil-root")
	if err != nil {
		t.Fatal(err)
	}
	if !attrs.Sensitive || attrs.Extractable {
		t.Fatalf("root key attributes %+v: want sensitive and not extractable", attrs)
	}
	issuers, _ := s.store.ListIssuers(t.Context())
	for _, iss := range issuers {
		if iss.Kind == "root" && iss.KeyRef != "pkcs11:sigil-root" {
			t.Fatalf("root key ref %q, want the token", iss.KeyRef)
		}
	}
	leaf := issueSVID(t, s, "spiffe://example.org/a")
	s.Close()

	s2 := newServer(t, cfg, Options{HSMPIN: hc.PIN})
	if _, err := s2.Authority(); err != nil {
		t.Fatalf("pkcs11 seal did not unseal at start: %v", err)
	}
	auth, _ := s2.Authority()
	// The root in the token still signs: rotate the intermediate.
	if _, err := auth.Rotate(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	if n := len(auth.Intermediates()); n != 2 {
		t.Fatalf("%d intermediates after rotation, want 2", n)
	}
	roots := x509.NewCertPool()
	for _, r := range auth.Roots() {
		roots.AddCert(r)
	}
	inters := x509.NewCertPool()
	for _, c := range leaf.Chain {
		inters.AddCert(c)
	}
	if _, err := leaf.Certificate.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("old leaf no longer verifies after restart and rotation: %v", err)
	}
}

// TestPostgresBackend runs the server's init and issuance on PostgreSQL,
// and a second server on the same database sees the same CA unsealed.
func TestPostgresBackend(t *testing.T) {
	dsn := storagetest.PostgresDSN(t)
	cfg := testConfig(t, "dev")
	cfg.Storage.Type = "postgres"
	cfg.Storage.Postgres.DSN = dsn
	s := newServer(t, cfg, Options{})
	if _, err := s.Initialize(t.Context(), InitOptions{}); err != nil {
		t.Fatal(err)
	}
	leaf := issueSVID(t, s, "spiffe://example.org/pg")
	s2 := newServer(t, cfg, Options{})
	rec, err := s2.store.GetCertificate(context.Background(), leaf.Record.Serial)
	if err != nil || rec.Subject != "spiffe://example.org/pg" {
		t.Fatalf("second node: %+v %v", rec, err)
	}
	auth2, err := s2.Authority()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ca.IssuerID(auth2.Intermediates()[0]), leaf.Record.IssuerID; got != want {
		t.Fatalf("second node's active intermediate %s, want %s", got, want)
	}
}
