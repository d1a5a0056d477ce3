package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/sigil-pki/sigil/ca"
	"github.com/sigil-pki/sigil/config"
	"github.com/sigil-pki/sigil/storage/storagetest"
	"github.com/sigil-pki/sigil/tlog"
)

// putPolicy writes a policy through the admin API.
func (r *runningServer) putPolicy(tb testing.TB, name, doc string) {
	tb.Helper()
	body, _ := json.Marshal(PolicyJSON{Policy: doc})
	req, _ := http.NewRequest(http.MethodPut, r.adminURL+"/v1/policies/"+name, bytes.NewReader(body))
	resp, err := r.admin.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("writing policy %s: %s %s", name, resp.Status, b)
	}
}

// svidClient returns an HTTPS client presenting a certificate issued by the
// server's CA for id.
func (r *runningServer) svidClient(tb testing.TB, id string, ttl time.Duration) (*http.Client, *ca.Issued) {
	tb.Helper()
	auth, err := r.Authority()
	if err != nil {
		tb.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := auth.Issue(tb.Context(), ca.Request{Profile: ca.ProfileSVID, SPIFFEID: id, PublicKey: key.Public(), TTL: ttl})
	if err != nil {
		tb.Fatal(err)
	}
	cert := tls.Certificate{PrivateKey: key, Leaf: iss.Certificate}
	cert.Certificate = append(cert.Certificate, iss.Certificate.Raw)
	for _, c := range iss.Chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return r.clientWith(cert), iss
}

func (r *runningServer) clientWith(cert tls.Certificate) *http.Client {
	auth, _ := r.Authority()
	roots := x509.NewCertPool()
	for _, c := range auth.Roots() {
		roots.AddCert(c)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "localhost",
	}}}
}

// call sends one request and returns the status and body.
func call(tb testing.TB, c *http.Client, method, u, body string) (int, string) {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// logEntries returns the log's entries from index from on.
func (r *runningServer) logEntries(tb testing.TB, from int64) []tlog.Entry {
	tb.Helper()
	l, err := r.transparencyLog()
	if err != nil {
		tb.Fatal(err)
	}
	cp := checkpointOf(tb.(*testing.T), r.Server, l)
	var out []tlog.Entry
	for i := from; i < cp.Size; i++ {
		e, _, err := l.Entry(tb.Context(), i)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func (r *runningServer) logSize(tb testing.TB) int64 {
	tb.Helper()
	l, err := r.transparencyLog()
	if err != nil {
		tb.Fatal(err)
	}
	return checkpointOf(tb.(*testing.T), r.Server, l).Size
}

// TestVaultClientWithWorkloadSVID: a workload gets its SVID from the
// Workload API (go-spiffe X509Source) and uses Vault's own Go client,
// unchanged but for the TLS client certificate, on every KV v2 operation;
// curl does the same with the SVID written to files. Every access is in
// the log, no value is.
func TestVaultClientWithWorkloadSVID(t *testing.T) {
	r := startRunning(t)
	r.addEntries(t, "app", 1) // spiffe://example.org/app/0 for this process
	r.putPolicy(t, "app", `
rules:
  - spiffe_id: spiffe://example.org/app/*
    paths: ["secret/team-a/*"]
    capabilities: [read, create, update, delete, list]
`)
	src, err := workloadapi.NewX509Source(t.Context(), workloadapi.WithClientOptions(workloadapi.WithAddr(r.socket)))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bundle, err := src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("example.org"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	for _, c := range bundle.X509Authorities() {
		roots.AddCert(c)
	}
	cfg := vault.DefaultConfig()
	cfg.Address = r.adminURL
	cfg.HttpClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, ServerName: "localhost",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			svid, err := src.GetX509SVID()
			if err != nil {
				return nil, err
			}
			c := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
			for _, x := range svid.Certificates {
				c.Certificate = append(c.Certificate, x.Raw)
			}
			return c, nil
		},
	}}}
	vc, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	vc.ClearToken()
	ctx := t.Context()
	before := r.logSize(t)
	kv := vc.KVv2("secret")

	if _, err := kv.Put(ctx, "team-a/db", map[string]any{"user": "app", "password": "pw-one-7f3a"}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	v2, err := kv.Put(ctx, "team-a/db", map[string]any{"user": "app", "password": "pw-two-91cc"}, vault.WithCheckAndSet(1))
	if err != nil || v2.VersionMetadata.Version != 2 {
		t.Fatalf("Put with cas: %+v %v", v2, err)
	}
	if _, err := kv.Put(ctx, "team-a/db", map[string]any{"x": "y"}, vault.WithCheckAndSet(1)); err == nil {
		t.Error("Put with a stale cas succeeded")
	}
	got, err := kv.Get(ctx, "team-a/db")
	if err != nil || got.Data["password"] != "pw-two-91cc" || got.VersionMetadata.Version != 2 {
		t.Fatalf("Get: %+v %v", got, err)
	}
	old, err := kv.GetVersion(ctx, "team-a/db", 1)
	if err != nil || old.Data["password"] != "pw-one-7f3a" {
		t.Fatalf("GetVersion 1: %+v %v", old, err)
	}
	patched, err := kv.Patch(ctx, "team-a/db", map[string]any{"password": "pw-three-0d21"})
	if err != nil || patched.VersionMetadata.Version != 3 {
		t.Fatalf("Patch: %+v %v", patched, err)
	}
	if got, _ := kv.Get(ctx, "team-a/db"); got.Data["user"] != "app" || got.Data["password"] != "pw-three-0d21" {
		t.Fatalf("after Patch: %+v", got.Data)
	}
	if err := kv.Delete(ctx, "team-a/db"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if got, err := kv.Get(ctx, "team-a/db"); err != nil || got.Data != nil || got.VersionMetadata.DeletionTime.IsZero() {
		t.Fatalf("Get after Delete: %+v %v; want metadata with a deletion time and no data", got, err)
	}
	if err := kv.Undelete(ctx, "team-a/db", []int{3}); err != nil {
		t.Fatalf("Undelete: %v", err)
	}
	if err := kv.Destroy(ctx, "team-a/db", []int{1}); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if err := kv.PutMetadata(ctx, "team-a/db", vault.KVMetadataPutInput{MaxVersions: 3, CustomMetadata: map[string]any{"owner": "team-a"}}); err != nil {
		t.Fatalf("PutMetadata: %v", err)
	}
	meta, err := kv.GetMetadata(ctx, "team-a/db")
	if err != nil || meta.CurrentVersion != 3 || len(meta.Versions) != 3 || !meta.Versions["1"].Destroyed || meta.CustomMetadata["owner"] != "team-a" {
		t.Fatalf("GetMetadata: %+v %v", meta, err)
	}
	if _, err := kv.Put(ctx, "team-a/api/key", map[string]any{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	list, err := vc.Logical().ListWithContext(ctx, "secret/metadata/team-a")
	if err != nil || list == nil {
		t.Fatalf("List: %v %v", list, err)
	}
	keys := fmt.Sprint(list.Data["keys"])
	if keys != "[api/ db]" {
		t.Errorf("List keys = %s, want [api/ db]", keys)
	}
	// Outside the policy: denied, with Vault's 403.
	if _, err := kv.Get(ctx, "team-b/db"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("Get outside the policy: %v", err)
	}

	// curl, with the SVID as files.
	dir := t.TempDir()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var rootPEM []byte
	for _, c := range bundle.X509Authorities() {
		rootPEM = append(rootPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	for name, b := range map[string][]byte{"svid.pem": certPEM, "svid.key": keyPEM, "root.pem": rootPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	u, _ := url.Parse(r.adminURL)
	out, err := exec.CommandContext(ctx, curlPath(t), "-sS", "--fail-with-body",
		"--cert", filepath.Join(dir, "svid.pem"), "--key", filepath.Join(dir, "svid.key"), "--cacert", filepath.Join(dir, "root.pem"),
		"--resolve", "localhost:"+u.Port()+":127.0.0.1", "https://localhost:"+u.Port()+"/v1/secret/data/team-a/db").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "pw-three-0d21") {
		t.Fatalf("curl: %v\n%s", err, out)
	}

	// Every access is on the log, by the workload, and no value is.
	entries := r.logEntries(t, before)
	var reads, writes, denied int
	for _, e := range entries {
		enc, _ := e.MarshalBinary()
		for _, v := range []string{"pw-one-7f3a", "pw-two-91cc", "pw-three-0d21"} {
			if bytes.Contains(enc, []byte(v)) {
				t.Fatalf("log entry %s holds a secret value", e.Kind)
			}
		}
		if !strings.HasPrefix(e.Kind, "secret.") {
			continue
		}
		if e.Actor != "spiffe://example.org/app/0" {
			t.Errorf("%s entry by %q", e.Kind, e.Actor)
		}
		switch {
		case e.Outcome.Denied:
			denied++
		case e.Kind == "secret.read":
			reads++
		case e.Kind == "secret.write":
			writes++
		}
	}
	if reads < 5 || writes < 5 || denied != 1 {
		t.Errorf("log has %d reads, %d writes, %d denials; want at least 5, 5 and exactly 1", reads, writes, denied)
	}
}

func curlPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl is required under CI=true")
		}
		t.Skip("curl not installed")
	}
	return p
}

// TestSecretAccessMatrix: three identities, four paths, five capabilities
// against one policy set; exactly the expected cells are allowed, and
// every denial is on the log as denied.
func TestSecretAccessMatrix(t *testing.T) {
	r := startRunning(t)
	r.putPolicy(t, "admin", `
rules:
  - spiffe_id: spiffe://example.org/admin
    paths: ["secret/*"]
    capabilities: [read, create, update, delete, list]
`)
	r.putPolicy(t, "teams", `
rules:
  - spiffe_id: spiffe://example.org/ns/{ns}/sa/*
    paths: ["secret/{ns}/*"]
    capabilities: [read, list]
  - spiffe_id: spiffe://example.org/ns/{ns}/sa/writer
    paths: ["secret/{ns}/*"]
    capabilities: [create, update]
  - spiffe_id: spiffe://example.org/billing
    paths: ["secret/payments/*", "secret/shared/config"]
    capabilities: [read, create, update, delete, list]
`)
	// Deny wins over billing's allow on secret/payments/*.
	r.putPolicy(t, "lockdown", `
rules:
  - spiffe_id: spiffe://example.org/billing
    paths: ["secret/payments/root"]
    capabilities: [deny]
`)
	admin, _ := r.svidClient(t, "spiffe://example.org/admin", time.Hour)
	ids := []string{"spiffe://example.org/ns/team-a/sa/web", "spiffe://example.org/ns/team-a/sa/writer", "spiffe://example.org/billing"}
	paths := []string{"team-a/db", "team-b/db", "payments/card", "payments/root"}
	caps := []string{"read", "create", "update", "delete", "list"}
	// want[id][path] is the allowed capabilities, in caps order: r c u d l;
	// list is asked of the path's directory.
	want := map[string]map[string]string{
		ids[0]: {"team-a/db": "r---l", "team-b/db": "-----", "payments/card": "-----", "payments/root": "-----"},
		ids[1]: {"team-a/db": "rcu-l", "team-b/db": "-----", "payments/card": "-----", "payments/root": "-----"},
		// Listing is asked of the directory (secret/payments), which the
		// deny on secret/payments/root does not cover.
		ids[2]: {"team-a/db": "-----", "team-b/db": "-----", "payments/card": "rcudl", "payments/root": "----l"},
	}
	base := r.adminURL + "/v1/secret/"
	mustOK := func(code int, body, what string) {
		t.Helper()
		if code/100 != 2 && code != http.StatusNotFound {
			t.Fatalf("%s: %d %s", what, code, body)
		}
	}
	before := r.logSize(t)
	deniedWant := 0
	for _, id := range ids {
		c, _ := r.svidClient(t, id, time.Hour)
		for _, p := range paths {
			got := []byte("-----")
			dir := p[:strings.LastIndex(p, "/")]
			for i, cp := range caps {
				// Set the state each capability is tested in.
				if cp == "create" {
					code, body := call(t, admin, "DELETE", base+"metadata/"+p, "")
					mustOK(code, body, "admin clears "+p)
				} else {
					code, body := call(t, admin, "POST", base+"data/"+p, `{"data":{"v":"x"}}`)
					mustOK(code, body, "admin writes "+p)
				}
				var code int
				var body string
				switch cp {
				case "read":
					code, body = call(t, c, "GET", base+"data/"+p, "")
				case "create", "update":
					code, body = call(t, c, "POST", base+"data/"+p, `{"data":{"v":"by `+id+`"}}`)
				case "delete":
					code, body = call(t, c, "DELETE", base+"data/"+p, "")
				case "list":
					code, body = call(t, c, "GET", base+"metadata/"+dir+"?list=true", "")
				}
				switch code {
				case http.StatusOK, http.StatusNoContent:
					got[i] = cp[0]
				case http.StatusForbidden:
					if !strings.Contains(body, "permission denied") {
						t.Errorf("%s %s %s: 403 without Vault's message: %s", id, cp, p, body)
					}
					deniedWant++
				default:
					t.Errorf("%s %s %s: unexpected %d %s", id, cp, p, code, body)
				}
			}
			if string(got) != want[id][p] {
				t.Errorf("%s on %s: allowed %s, want %s", id, p, got, want[id][p])
			}
		}
	}
	denied := 0
	for _, e := range r.logEntries(t, before) {
		if strings.HasPrefix(e.Kind, "secret.") && e.Outcome.Denied {
			denied++
			if !slices.Contains(ids, e.Actor) || e.Outcome.Reason == "" {
				t.Errorf("denial entry by %q, reason %q", e.Actor, e.Outcome.Reason)
			}
		}
	}
	if denied != deniedWant {
		t.Errorf("%d denials on the log, want %d", denied, deniedWant)
	}
}

// TestSecretCallerChecks: a revoked SVID is refused at once, an expired one
// and one from another CA are refused, a sealed server says so.
func TestSecretCallerChecks(t *testing.T) {
	r := startRunning(t)
	r.putPolicy(t, "all", `
rules:
  - spiffe_id: spiffe://example.org/*
    paths: ["secret/*"]
    capabilities: [read, create, update, list]
`)
	u := r.adminURL + "/v1/secret/data/x"
	good, iss := r.svidClient(t, "spiffe://example.org/good", time.Hour)
	if code, body := call(t, good, "POST", u, `{"data":{"a":"b"}}`); code != http.StatusOK {
		t.Fatalf("write: %d %s", code, body)
	}
	// Revoked: refused on the same keep-alive connection, at once.
	code, body := call(t, r.admin, "POST", r.adminURL+"/v1/ca/revoke", `{"serial":"`+ca.Serial(iss.Certificate.SerialNumber)+`","reason":"keyCompromise"}`)
	if code != http.StatusOK {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if code, body := call(t, good, "GET", u, ""); code != http.StatusUnauthorized || !strings.Contains(body, "revoked") {
		t.Errorf("revoked SVID: %d %s", code, body)
	}
	// Expired.
	short, _ := r.svidClient(t, "spiffe://example.org/short", 2*time.Second)
	if code, _ := call(t, short, "GET", u, ""); code != http.StatusOK {
		t.Fatalf("short-lived SVID before expiry: %d", code)
	}
	time.Sleep(2100 * time.Millisecond)
	if code, body := call(t, short, "GET", u, ""); code != http.StatusUnauthorized || !strings.Contains(body, "expired") {
		t.Errorf("expired SVID: %d %s", code, body)
	}
	// Another CA, same trust domain name, and a foreign trust domain.
	for _, id := range []string{"spiffe://example.org/good", "spiffe://other.org/good"} {
		c := r.clientWith(foreignSVID(t, id))
		if code, body := call(t, c, "GET", u, ""); code != http.StatusUnauthorized {
			t.Errorf("SVID %s from another CA: %d %s", id, code, body)
		}
	}
	// No certificate at all.
	if code, body := call(t, r.clientWith(tls.Certificate{}), "GET", u, ""); code != http.StatusUnauthorized {
		t.Errorf("no client certificate: %d %s", code, body)
	}
	// Sealed: 503 with the reason, nothing served.
	other, _ := r.svidClient(t, "spiffe://example.org/other", time.Hour)
	r.Seal()
	if code, body := call(t, other, "GET", u, ""); code != http.StatusServiceUnavailable || !strings.Contains(body, `"Sigil is sealed"`) {
		t.Errorf("sealed: %d %s", code, body)
	}
}

// foreignSVID is an X.509-SVID for id from a CA Sigil has never seen.
func foreignSVID(t *testing.T, id string) tls.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "impostor"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, caCert, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}
}

// TestSecretReadFailsClosed: when the log cannot commit, a read returns
// an error and no value.
func TestSecretReadFailsClosed(t *testing.T) {
	r := startRunning(t)
	r.putPolicy(t, "all", `
rules:
  - spiffe_id: spiffe://example.org/app
    paths: ["secret/*"]
    capabilities: [read, create]
`)
	c, _ := r.svidClient(t, "spiffe://example.org/app", time.Hour)
	u := r.adminURL + "/v1/secret/data/db"
	if code, body := call(t, c, "POST", u, `{"data":{"password":"never-leaks-4b1d"}}`); code != http.StatusOK {
		t.Fatalf("write: %d %s", code, body)
	}
	db, err := sql.Open("sqlite3", r.cfg.Storage.SQLite.Path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`ALTER TABLE tlog_tiles RENAME TO tlog_tiles_gone`); err != nil {
		t.Fatal(err)
	}
	code, body := call(t, c, "GET", u, "")
	if code == http.StatusOK || strings.Contains(body, "never-leaks-4b1d") {
		t.Fatalf("read while the log is broken: %d %s", code, body)
	}
	if _, err := db.Exec(`ALTER TABLE tlog_tiles_gone RENAME TO tlog_tiles`); err != nil {
		t.Fatal(err)
	}
	if code, body := call(t, c, "GET", u, ""); code != http.StatusOK || !strings.Contains(body, "never-leaks-4b1d") {
		t.Fatalf("read after repair: %d %s", code, body)
	}
}

// TestNoSecretPlaintextInPostgres: after writes through the API on
// PostgreSQL, a pg_dump of the schema holds no value, data key or custom
// metadata in the clear.
func TestNoSecretPlaintextInPostgres(t *testing.T) {
	dsn := storagetest.PostgresDSN(t)
	pgDump, err := exec.LookPath("pg_dump")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("pg_dump is required under CI=true")
		}
		t.Skip("pg_dump not installed")
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	schema := u.Query().Get("search_path")
	q := u.Query()
	q.Del("search_path")
	u.RawQuery = q.Encode()

	cfg := testConfig(t, "dev")
	cfg.Storage.Type = "postgres"
	cfg.Storage.Postgres.DSN = dsn
	r := startRunningWith(t, cfg)
	r.putPolicy(t, "all", `
rules:
  - spiffe_id: spiffe://example.org/app
    paths: ["secret/*"]
    capabilities: [read, create, update]
`)
	c, _ := r.svidClient(t, "spiffe://example.org/app", time.Hour)
	markers := []string{"PG-VALUE-6a2e", "PG-KEY-b19f", "PG-CUSTOM-33d0"}
	for i := range 3 {
		body := fmt.Sprintf(`{"data":{%q:"%s-%d"}}`, markers[1], markers[0], i)
		if code, out := call(t, c, "POST", r.adminURL+"/v1/secret/data/scan/me", body); code != http.StatusOK {
			t.Fatalf("write: %d %s", code, out)
		}
	}
	if code, out := call(t, c, "POST", r.adminURL+"/v1/secret/metadata/scan/me", `{"custom_metadata":{"note":"`+markers[2]+`"}}`); code != http.StatusNoContent {
		t.Fatalf("metadata: %d %s", code, out)
	}
	if code, out := call(t, c, "GET", r.adminURL+"/v1/secret/data/scan/me", ""); code != http.StatusOK || !strings.Contains(out, markers[0]) {
		t.Fatalf("read back: %d %s", code, out)
	}
	dump, err := exec.CommandContext(t.Context(), pgDump, "--data-only", "--schema", schema, u.String()).Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	if !bytes.Contains(dump, []byte("kv_versions")) || !bytes.Contains(dump, []byte("scan/me")) {
		t.Fatalf("the dump does not hold the secret store's rows:\n%.2000s", dump)
	}
	for _, m := range markers {
		if bytes.Contains(dump, []byte(m)) {
			t.Errorf("pg_dump holds %s in the clear", m)
		}
	}
}

// TestRevocationReachesOtherNode: two servers on one PostgreSQL database;
// a certificate revoked through one is refused by the other within a
// second, on a connection that was already open.
func TestRevocationReachesOtherNode(t *testing.T) {
	a, b := startTwoNodes(t)
	a.putPolicy(t, "all", `
rules:
  - spiffe_id: spiffe://example.org/app
    paths: ["secret/*"]
    capabilities: [read, create]
`)
	c, iss := a.svidClient(t, "spiffe://example.org/app", time.Hour)
	if code, body := call(t, c, "POST", a.adminURL+"/v1/secret/data/x", `{"data":{"k":"v"}}`); code != http.StatusOK {
		t.Fatalf("write on A: %d %s", code, body)
	}
	// B learns the policy from storage within its watch interval.
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := call(t, c, "GET", b.adminURL+"/v1/secret/data/x", "")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("read on B: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, body := call(t, a.admin, "POST", a.adminURL+"/v1/ca/revoke", `{"serial":"`+ca.Serial(iss.Certificate.SerialNumber)+`","reason":"keyCompromise"}`)
	if code != http.StatusOK {
		t.Fatalf("revoke on A: %d %s", code, body)
	}
	revoked := time.Now()
	for {
		code, body := call(t, c, "GET", b.adminURL+"/v1/secret/data/x", "")
		if code == http.StatusUnauthorized && strings.Contains(body, "revoked") {
			t.Logf("B refused the revoked SVID %v after the revocation", time.Since(revoked).Round(time.Millisecond))
			return
		}
		if time.Since(revoked) > time.Second {
			t.Fatalf("B still answers %d a second after the revocation: %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startTwoNodes runs two servers on one PostgreSQL database sharing the
// dev seal's key; the first initialises it.
func startTwoNodes(t *testing.T, opts ...func(*config.Config)) (*runningServer, *runningServer) {
	t.Helper()
	cfgA := testConfig(t, "dev")
	cfgA.Storage.Type, cfgA.Storage.Postgres.DSN = "postgres", storagetest.PostgresDSN(t)
	for _, o := range opts {
		o(&cfgA)
	}
	a := startRunningWith(t, cfgA)
	cfgB := testConfig(t, "dev")
	for _, o := range opts {
		o(&cfgB)
	}
	cfgB.Storage = cfgA.Storage
	cfgB.Seal.Dev.KeyFile = cfgA.Seal.Dev.KeyFile
	return a, startRunningWith(t, cfgB)
}
