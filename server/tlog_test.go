package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	_ "github.com/mattn/go-sqlite3"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/sigil-pki/sigil/ca"
	"github.com/sigil-pki/sigil/storage/storagetest"
	"github.com/sigil-pki/sigil/tlog"
)

// TestIssuanceFailsClosed: when the log's storage cannot commit, the
// certificate is refused, and the admin API hands out nothing.
func TestIssuanceFailsClosed(t *testing.T) {
	cfg := testConfig(t, "dev")
	s := newServer(t, cfg, Options{})
	if _, err := s.Initialize(t.Context(), InitOptions{}); err != nil {
		t.Fatal(err)
	}
	before := issueSVID(t, s, "spiffe://example.org/before")

	// Break the log's table from outside, as a failing disk or a dropped
	// table would.
	db, err := sql.Open("sqlite3", cfg.Storage.SQLite.Path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`ALTER TABLE tlog_tiles RENAME TO tlog_tiles_gone`); err != nil {
		t.Fatal(err)
	}
	auth, _ := s.Authority()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := auth.Issue(t.Context(), ca.Request{Profile: ca.ProfileSVID, PublicKey: key.Public(), SPIFFEID: "spiffe://example.org/during"})
	if err == nil || iss != nil {
		t.Fatalf("issuance succeeded while the log could not commit: %v", err)
	}

	// Through the admin API: an error body, no certificate.
	srv := httptest.NewUnstartedServer(s.AdminHandler())
	srv.TLS = s.TLSConfig()
	srv.StartTLS()
	defer srv.Close()
	client := operatorClient(t, s, cfg.DataDir)
	body := `{"csr":` + jsonString(csrPEM(t, key, "spiffe://example.org/during")) + `}`
	resp, err := client.Post(srv.URL+"/v1/ca/issue", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	out.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || strings.Contains(out.String(), "BEGIN CERTIFICATE") {
		t.Fatalf("admin issue while the log is broken: %d %s", resp.StatusCode, out.String())
	}

	// Repair: issuance works again and the tree still proves consistent
	// with the checkpoint from before the failure.
	if _, err := db.Exec(`ALTER TABLE tlog_tiles_gone RENAME TO tlog_tiles`); err != nil {
		t.Fatal(err)
	}
	l, _ := s.transparencyLog()
	cpBefore := checkpointOf(t, s, l)
	issueSVID(t, s, "spiffe://example.org/after")
	cpAfter := checkpointOf(t, s, l)
	pr, err := l.ConsistencyProof(t.Context(), cpBefore.Size, cpAfter.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(cpBefore.Size), uint64(cpAfter.Size), hashes(pr), cpBefore.Root[:], cpAfter.Root[:]); err != nil {
		t.Fatalf("tree not consistent across the failure: %v", err)
	}
	if idx := findIssuance(t, l, cpAfter.Size, before.Certificate.Raw); idx < 0 {
		t.Fatal("the certificate issued before the failure is not in the log")
	}
}

// TestTwoServersOneLog: two servers on one PostgreSQL database issue
// concurrently; the log holds every certificate exactly once in one tree.
func TestTwoServersOneLog(t *testing.T) {
	dsn := storagetest.PostgresDSN(t)
	cfg := testConfig(t, "dev")
	cfg.Storage.Type = "postgres"
	cfg.Storage.Postgres.DSN = dsn
	a := newServer(t, cfg, Options{})
	if _, err := a.Initialize(t.Context(), InitOptions{}); err != nil {
		t.Fatal(err)
	}
	b := newServer(t, cfg, Options{})
	const each = 60
	var (
		mu    sync.Mutex
		certs [][]byte
		wg    sync.WaitGroup
	)
	for _, s := range []*Server{a, b} {
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				auth, err := s.Authority()
				if err != nil {
					t.Error(err)
					return
				}
				key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				for range each / 4 {
					iss, err := auth.Issue(t.Context(), ca.Request{Profile: ca.ProfileSVID, PublicKey: key.Public(), SPIFFEID: "spiffe://example.org/w"})
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					certs = append(certs, iss.Certificate.Raw)
					mu.Unlock()
				}
				_ = w
			}()
		}
	}
	wg.Wait()
	la, _ := a.transparencyLog()
	cp := checkpointOf(t, a, la)
	seen := map[[32]byte]int{}
	for i := int64(0); i < cp.Size; i++ {
		e, raw, err := la.Entry(t.Context(), i)
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == tlog.KindX509Issue {
			seen[e.Subject.CertSHA256]++
		}
		pr, err := la.InclusionProof(t.Context(), i, cp.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(i), uint64(cp.Size), rfc6962.DefaultHasher.HashLeaf(raw), hashes(pr), cp.Root[:]); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	if len(certs) != 2*each {
		t.Fatalf("%d certificates issued, want %d", len(certs), 2*each)
	}
	for _, c := range certs {
		if n := seen[sha256.Sum256(c)]; n != 1 {
			t.Fatalf("a certificate appears %d times in the log", n)
		}
	}
	// Both servers serve the same checkpoint.
	lb, _ := b.transparencyLog()
	if got := checkpointOf(t, b, lb); got != cp {
		t.Fatalf("servers disagree: %+v vs %+v", got, cp)
	}
}

func checkpointOf(t *testing.T, s *Server, l *tlog.Log) tlog.Checkpoint {
	t.Helper()
	text, err := l.Checkpoint(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	key, err := s.LogVerifierKey()
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(key)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := tlog.VerifyCheckpoint(text, v)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func hashes(in [][32]byte) [][]byte {
	out := make([][]byte, len(in))
	for i := range in {
		out[i] = in[i][:]
	}
	return out
}

func findIssuance(t *testing.T, l *tlog.Log, size int64, der []byte) int64 {
	t.Helper()
	want := sha256.Sum256(der)
	for i := int64(0); i < size; i++ {
		e, _, err := l.Entry(t.Context(), i)
		if err != nil {
			t.Fatal(err)
		}
		if e.Subject.CertSHA256 == want && e.Kind == tlog.KindX509Issue {
			return i
		}
	}
	return -1
}

// operatorClient is an HTTPS client holding the operator identity that
// Initialize wrote into dir.
func operatorClient(t testing.TB, s *Server, dir string) *http.Client {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "operator.pem"), filepath.Join(dir, "operator-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	auth, err := s.Authority()
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	for _, r := range auth.Roots() {
		roots.AddCert(r)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "localhost",
	}}}
}

func csrPEM(t *testing.T, key *ecdsa.PrivateKey, spiffeID string) string {
	t.Helper()
	u, err := url.Parse(spiffeID)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestCRLPublicationLogged: a revocation publishes a CRL, and the CRL's
// hash is on the log before it is served.
func TestCRLPublicationLogged(t *testing.T) {
	cfg := testConfig(t, "dev")
	s := newServer(t, cfg, Options{})
	if _, err := s.Initialize(t.Context(), InitOptions{}); err != nil {
		t.Fatal(err)
	}
	leaf := issueSVID(t, s, "spiffe://example.org/crl")
	auth, _ := s.Authority()
	if _, err := auth.Revoke(t.Context(), leaf.Record.Serial, 1); err != nil {
		t.Fatal(err)
	}
	der, err := auth.CRL(t.Context(), leaf.Record.IssuerID)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	l, _ := s.transparencyLog()
	cp := checkpointOf(t, s, l)
	for i := int64(0); i < cp.Size; i++ {
		e, _, err := l.Entry(t.Context(), i)
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == tlog.KindCRLPublish && e.Subject.Path == "crl/"+leaf.Record.IssuerID && e.Subject.Detail == "sha256="+hex.EncodeToString(sum[:]) {
			return
		}
	}
	t.Fatal("the served CRL is not on the log")
}
