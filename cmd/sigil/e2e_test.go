package main

// End-to-end tests: the real binary, as a new user runs it, checked with
// openssl and curl-shaped HTTP requests.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/crypto/ocsp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// sigilBinary builds cmd/sigil once per test run.
func sigilBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sigil-bin-")
		if err != nil {
			buildErr = err
			return
		}
		// Tests run the binary as other users too (workload attestation).
		if err := os.Chmod(dir, 0o755); err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "sigil")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// need fails under CI=true and skips elsewhere when a peer tool is missing.
func need(t *testing.T, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		msg := fmt.Sprintf("%s not found: apt-get install %s (make test installs it)", tool, pkg)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a running sigil process whose output is kept for failure reports.
type proc struct {
	cmd *exec.Cmd
	out *syncBuffer
	// exited is closed once the process has exited and been waited for.
	exited chan struct{}
}

// hasExited reports whether the process is gone.
func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(sigilBinary(t), args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, out: out, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (p *proc) stop(t *testing.T) {
	if p.hasExited() {
		return
	}
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
	if t.Failed() {
		t.Logf("sigil output:\n%s", p.out.String())
	}
}

// waitHealth polls /healthz until it answers want, or fails after 20 s.
func waitHealth(t *testing.T, httpURL string, want int, p *proc) {
	t.Helper()
	if !healthy(httpURL, want, p) {
		t.Fatalf("/healthz never answered %d; output:\n%s", want, p.out.String())
	}
}

// healthy polls /healthz until it answers want (true), or the process
// exits or 20 s pass (false).
func healthy(httpURL string, want int, p *proc) bool {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && !p.hasExited() {
		resp, err := http.Get(httpURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// run runs a command and returns its combined output; wantOK says whether
// it must succeed or fail.
func run(t *testing.T, wantOK bool, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if wantOK && err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	if !wantOK && err == nil {
		t.Fatalf("%s %s succeeded, want failure\n%s", name, strings.Join(args, " "), out)
	}
	return string(out)
}

type devJSON struct {
	TrustDomain   string `json:"trust_domain"`
	HTTPSURL      string `json:"https_url"`
	HTTPURL       string `json:"http_url"`
	RootCA        string `json:"root_ca"`
	Bundle        string `json:"bundle"`
	OperatorCert  string `json:"operator_cert"`
	OperatorKey   string `json:"operator_key"`
	ACMEDirectory string `json:"acme_directory"`
	ACMEHTTPPort  int    `json:"acme_http_port"`
	ACMETLSPort   int    `json:"acme_tls_port"`
}

func startDev(t *testing.T, dir string, extra ...string) (*proc, devJSON) {
	t.Helper()
	var p *proc
	for attempt := 1; ; attempt++ {
		httpsAddr, httpAddr := freePort(t), freePort(t)
		os.Remove(filepath.Join(dir, "dev.json"))
		p = start(t, nil, append([]string{"dev", "--data-dir", dir, "--https", httpsAddr, "--http", httpAddr}, extra...)...)
		if healthy("http://"+httpAddr, http.StatusOK, p) {
			break
		}
		// A port freed by freePort can be taken by an outgoing connection
		// before sigil binds it; pick others.
		if attempt < 3 && p.hasExited() && strings.Contains(p.out.String(), "address already in use") {
			continue
		}
		t.Fatalf("sigil dev never became healthy; output:\n%s", p.out.String())
	}
	var info devJSON
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(dir, "dev.json"))
		if err == nil && json.Unmarshal(b, &info) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev.json not written: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p, info
}

func (d devJSON) env() []string {
	return []string{"SIGIL_ADDR=" + d.HTTPSURL, "SIGIL_CACERT=" + d.RootCA,
		"SIGIL_CLIENT_CERT=" + d.OperatorCert, "SIGIL_CLIENT_KEY=" + d.OperatorKey}
}

var serialRE = regexp.MustCompile(`(?m)^Serial\s+([0-9a-f]+)$`)

// TestDevIssueVerifyRevoke is the README's walk-through: issue with the
// CLI, verify the chain with openssl, ask OCSP, revoke, ask again, and
// check the CRL with openssl verify -crl_check.
func TestDevIssueVerifyRevoke(t *testing.T) {
	openssl := need(t, "openssl", "openssl")
	dir := t.TempDir()
	p, info := startDev(t, dir)
	env := info.env()
	bin := sigilBinary(t)

	for _, k := range []string{info.RootCA, info.Bundle, info.OperatorCert, info.OperatorKey} {
		if !filepath.IsAbs(k) {
			t.Fatalf("dev.json path %q is not absolute", k)
		}
		if _, err := os.Stat(k); err != nil {
			t.Fatal(err)
		}
	}
	if out := run(t, true, env, bin, "operator", "status"); !strings.Contains(out, "Sealed        false") {
		t.Fatalf("status: %s", out)
	}

	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	out := run(t, true, env, bin, "ca", "issue", "--spiffe-id", "spiffe://sigil.test/demo/web", "--out-dir", good)
	goodSerial := serialRE.FindStringSubmatch(out)[1]
	out = run(t, true, env, bin, "ca", "issue", "--dns", "www.test", "--ttl", "2h", "--out-dir", bad)
	badSerial := serialRE.FindStringSubmatch(out)[1]

	for _, d := range []string{good, bad} {
		out := run(t, true, nil, openssl, "verify", "-CAfile", info.RootCA, "-untrusted", filepath.Join(d, "chain.pem"), filepath.Join(d, "cert.pem"))
		if !strings.Contains(out, ": OK") {
			t.Fatalf("openssl verify: %s", out)
		}
	}
	// A name outside the trust domain and the DNS domains is refused.
	if out := run(t, false, env, bin, "ca", "issue", "--dns", "www.example.com", "--out-dir", filepath.Join(dir, "x")); !strings.Contains(out, "Error:") || strings.Count(out, "\n") != 1 {
		t.Fatalf("want one error line, got %q", out)
	}
	if out := run(t, false, env, bin, "ca", "issue", "--spiffe-id", "spiffe://other.test/x", "--out-dir", filepath.Join(dir, "x")); !strings.Contains(out, "Error:") {
		t.Fatalf("foreign trust domain: %q", out)
	}

	ocspCheck := func(d, want string) {
		t.Helper()
		out := run(t, true, nil, openssl, "ocsp", "-issuer", filepath.Join(d, "chain.pem"), "-cert", filepath.Join(d, "cert.pem"),
			"-url", info.HTTPURL+"/ocsp", "-CAfile", info.RootCA, "-VAfile", filepath.Join(d, "chain.pem"))
		if !strings.Contains(out, "cert.pem: "+want) {
			t.Fatalf("openssl ocsp: want %q in\n%s", want, out)
		}
		if !strings.Contains(out, "Response verify OK") {
			t.Fatalf("openssl ocsp: response not verified:\n%s", out)
		}
	}
	ocspCheck(good, "good")
	ocspCheck(bad, "good")
	ocspGET(t, info.HTTPURL, good, ocsp.Good)

	out = run(t, true, env, bin, "ca", "revoke", "--serial", badSerial, "--reason", "keyCompromise")
	if !strings.Contains(out, "keyCompromise") {
		t.Fatalf("revoke: %s", out)
	}
	ocspCheck(bad, "revoked")
	outRev := run(t, true, nil, openssl, "ocsp", "-issuer", filepath.Join(bad, "chain.pem"), "-cert", filepath.Join(bad, "cert.pem"),
		"-url", info.HTTPURL+"/ocsp", "-CAfile", info.RootCA, "-VAfile", filepath.Join(bad, "chain.pem"))
	if !strings.Contains(outRev, "Reason: keyCompromise") || !strings.Contains(outRev, "Revocation Time:") {
		t.Fatalf("revoked OCSP answer lacks reason or time:\n%s", outRev)
	}
	ocspCheck(good, "good")
	if out := run(t, false, env, bin, "ca", "revoke", "--serial", badSerial); !strings.Contains(out, "Error:") {
		t.Fatalf("second revoke: %s", out)
	}

	// CRL: download from the URL in the certificate; verify -crl_check
	// fails for the revoked leaf only.
	cdp := run(t, true, nil, openssl, "x509", "-in", filepath.Join(bad, "cert.pem"), "-noout", "-ext", "crlDistributionPoints")
	url := regexp.MustCompile(`URI:(\S+)`).FindStringSubmatch(cdp)
	if url == nil {
		t.Fatalf("no CRL URL in certificate: %s", cdp)
	}
	resp, err := http.Get(url[1])
	if err != nil {
		t.Fatal(err)
	}
	var crl bytes.Buffer
	crl.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("CRL: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	crlDER := filepath.Join(dir, "crl.der")
	os.WriteFile(crlDER, crl.Bytes(), 0o644)
	crlPEM := filepath.Join(dir, "crl.pem")
	run(t, true, nil, openssl, "crl", "-inform", "DER", "-in", crlDER, "-out", crlPEM)
	text := run(t, true, nil, openssl, "crl", "-in", crlPEM, "-noout", "-text")
	if !strings.Contains(strings.ToLower(strings.ReplaceAll(text, ":", "")), badSerial) || !strings.Contains(text, "Key Compromise") {
		t.Fatalf("CRL does not list %s with its reason:\n%s", badSerial, text)
	}
	// openssl -crl_check checks the leaf against its issuer's CRL.
	verifyCRL := func(d string) (string, bool) {
		cmd := exec.Command(openssl, "verify", "-crl_check", "-CAfile", info.RootCA, "-untrusted", filepath.Join(d, "chain.pem"),
			"-CRLfile", crlPEM, filepath.Join(d, "cert.pem"))
		out, err := cmd.CombinedOutput()
		return string(out), err == nil
	}
	if out, ok := verifyCRL(good); !ok {
		t.Fatalf("good leaf fails -crl_check: %s", out)
	}
	if out, ok := verifyCRL(bad); ok || !strings.Contains(out, "certificate revoked") {
		t.Fatalf("revoked leaf passes -crl_check: %s", out)
	}
	_ = goodSerial

	// The listing shows both, the revoked one marked.
	out = run(t, true, env, bin, "ca", "list")
	if !strings.Contains(out, badSerial) || !strings.Contains(out, "keyCompromise") || !strings.Contains(out, goodSerial) {
		t.Fatalf("list: %s", out)
	}
	// Metrics are exported.
	resp, err = http.Get(info.HTTPURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var m bytes.Buffer
	m.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(m.String(), `sigil_certificates_issued_total{profile="x509-svid"}`) || !strings.Contains(m.String(), "sigil_sealed 0") {
		t.Fatalf("metrics lack Sigil's series:\n%.2000s", m.String())
	}

	// A second dev run on the same dir reuses its state.
	p.stop(t)
	rootBefore, _ := os.ReadFile(info.RootCA)
	_, info2 := startDev(t, dir)
	rootAfter, _ := os.ReadFile(info2.RootCA)
	if !bytes.Equal(rootBefore, rootAfter) {
		t.Fatal("second sigil dev made a new root")
	}
	out = run(t, true, info2.env(), bin, "ca", "list", "--revoked")
	if !strings.Contains(out, badSerial) {
		t.Fatalf("state lost across restart: %s", out)
	}
}

// TestShamirSealLifecycle: init with shamir shares, start sealed, refuse
// work while sealed, take shares one at a time (a wrong or repeated share is
// refused without losing progress), serve, then seal on request.
func TestShamirSealLifecycle(t *testing.T) {
	dir := t.TempDir()
	bin := sigilBinary(t)
	httpsAddr, httpAddr := freePort(t), freePort(t)
	cfgPath := filepath.Join(dir, "sigil.yaml")
	cfg := fmt.Sprintf(`trust_domain: example.org
data_dir: %s
listen:
  https: %s
  http: %s
seal:
  type: shamir
  shamir:
    shares: 5
    threshold: 3
ca:
  dns_domains: [localhost, example.org]
`, filepath.Join(dir, "data"), httpsAddr, httpAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out := run(t, true, nil, bin, "operator", "init", "--config", cfgPath, "--shares", "3", "--threshold", "2")
	shares := regexp.MustCompile(`Share \d+: ([0-9a-f]+)`).FindAllStringSubmatch(out, -1)
	if len(shares) != 3 {
		t.Fatalf("want 3 shares in init output:\n%s", out)
	}
	if out := run(t, false, nil, bin, "operator", "init", "--config", cfgPath); !strings.Contains(out, "already initialized") {
		t.Fatalf("second init: %s", out)
	}
	data := filepath.Join(dir, "data")
	env := []string{"SIGIL_ADDR=https://" + httpsAddr, "SIGIL_CACERT=" + filepath.Join(data, "root.pem"),
		"SIGIL_CLIENT_CERT=" + filepath.Join(data, "operator.pem"), "SIGIL_CLIENT_KEY=" + filepath.Join(data, "operator-key.pem")}

	p := start(t, nil, "server", "--config", cfgPath)
	waitHealth(t, "http://"+httpAddr, http.StatusServiceUnavailable, p)

	issue := func(wantOK bool) string {
		return run(t, wantOK, env, bin, "ca", "issue", "--spiffe-id", "spiffe://example.org/app", "--out-dir", filepath.Join(dir, "out"))
	}
	if out := issue(false); !strings.Contains(out, "Sigil is sealed") {
		t.Fatalf("issue while sealed: %q", out)
	}
	// OCSP while sealed: the unsigned tryLater status.
	resp, err := http.Post("http://"+httpAddr+"/ocsp", "application/ocsp-request", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(body.Bytes(), []byte{0x30, 0x03, 0x0a, 0x01, 0x03}) {
		t.Fatalf("sealed OCSP answer = % x, want tryLater", body.Bytes())
	}

	out = run(t, true, env, bin, "operator", "unseal", shares[0][1])
	if !strings.Contains(out, "Progress      1/2") {
		t.Fatalf("first share: %s", out)
	}
	if out := run(t, false, env, bin, "operator", "unseal", shares[0][1]); !strings.Contains(out, "already given") {
		t.Fatalf("duplicate share accepted: %s", out)
	}
	wrong := strings.Repeat("ab", len(shares[1][1])/2)
	if out := run(t, false, env, bin, "operator", "unseal", wrong); !strings.Contains(out, "not one of the shares") {
		t.Fatalf("wrong share accepted: %s", out)
	}
	if out := run(t, true, env, bin, "operator", "status"); !strings.Contains(out, "Progress      1/2") {
		t.Fatalf("progress lost after bad shares: %s", out)
	}
	// The share may also come on standard input.
	cmd := exec.Command(bin, "operator", "unseal")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(shares[2][1] + "\n")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Sealed        false") {
		t.Fatalf("unseal from stdin: %v %s", err, out)
	}
	waitHealth(t, "http://"+httpAddr, http.StatusOK, p)
	issue(true)

	// Rotation of the keyring keeps old data readable: issuing still works
	// (the intermediate key is read back from the barrier after a reseal).
	if out := run(t, true, env, bin, "operator", "rotate"); !strings.Contains(out, "key term 2") {
		t.Fatalf("rotate: %s", out)
	}
	run(t, true, env, bin, "operator", "seal")
	if out := issue(false); !strings.Contains(out, "Sigil is sealed") {
		t.Fatalf("issue after seal: %q", out)
	}
	run(t, true, env, bin, "operator", "unseal", shares[1][1])
	run(t, true, env, bin, "operator", "unseal", shares[2][1])
	issue(true)

	// Without an operator certificate the admin API refuses.
	noCert := env[:2]
	if out := run(t, false, noCert, bin, "ca", "list"); !strings.Contains(out, "client certificate is required") {
		t.Fatalf("list without client cert: %s", out)
	}
}

// TestConfigErrorsAtStart: a bad config stops the server with the file,
// the line and the key.
func TestConfigErrorsAtStart(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.yaml")
	os.WriteFile(p, []byte("trust_domain: example.org\nseal:\n  type: shamir\n  shamir:\n    shares: 2\n    threshold: 3\nbogus: 1\n"), 0o600)
	out := run(t, false, nil, sigilBinary(t), "server", "--config", p)
	for _, want := range []string{"bad.yaml:7", "bogus", "seal.shamir.threshold"} {
		if !strings.Contains(out, want) {
			t.Errorf("config error lacks %q: %s", want, out)
		}
	}
}

// ocspGET asks by GET (RFC 6960 A.1, base64 in the path) and checks the
// status, the signature and the caching headers.
func ocspGET(t *testing.T, httpURL, dir string, want int) {
	t.Helper()
	leaf, err := readCert(filepath.Join(dir, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := readCert(filepath.Join(dir, "chain.pem"))
	if err != nil {
		t.Fatal(err)
	}
	req, err := ocsp.CreateRequest(leaf, issuer, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(httpURL + "/ocsp/" + base64.StdEncoding.EncodeToString(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	if resp.Header.Get("Content-Type") != "application/ocsp-response" || !strings.Contains(resp.Header.Get("Cache-Control"), "max-age=") {
		t.Fatalf("OCSP GET headers: %v", resp.Header)
	}
	parsed, err := ocsp.ParseResponseForCert(body.Bytes(), leaf, issuer)
	if err != nil {
		t.Fatalf("OCSP GET response: %v", err)
	}
	if parsed.Status != want {
		t.Fatalf("OCSP GET status %d, want %d", parsed.Status, want)
	}
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return firstCert(b)
}

// TestDevSoftHSM: `sigil dev --hsm softhsm` keeps the root key and the seal
// key in a SoftHSM2 token; pkcs11-tool sees them sensitive and never
// extractable, and a restart unseals from the token by itself.
func TestDevSoftHSM(t *testing.T) {
	need(t, "softhsm2-util", "softhsm2")
	tool := need(t, "pkcs11-tool", "opensc")
	dir := t.TempDir()
	p, info := startDev(t, dir, "--hsm", "softhsm")
	run(t, true, info.env(), sigilBinary(t), "ca", "issue", "--spiffe-id", "spiffe://sigil.test/hsm", "--out-dir", filepath.Join(dir, "leaf"))
	p.stop(t)

	pin, err := os.ReadFile(filepath.Join(dir, "softhsm", "pin"))
	if err != nil {
		t.Fatal(err)
	}
	module := ""
	for _, m := range []string{"/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"} {
		if _, err := os.Stat(m); err == nil {
			module = m
			break
		}
	}
	out := run(t, true, []string{"SOFTHSM2_CONF=" + filepath.Join(dir, "softhsm", "softhsm2.conf")}, tool,
		"--module", module, "--token-label", "sigil-dev", "--login", "--pin", strings.TrimSpace(string(pin)), "--list-objects")
	// pkcs11-tool prints one block per object; check the private and
	// secret keys, not the root's public half.
	blocks := regexp.MustCompile(`(?m)^(Private|Secret) Key Object[^\n]*\n(?:  [^\n]*\n?)*`).FindAllString(out, -1)
	for _, label := range []string{"sigil-root", "sigil-seal"} {
		found := false
		for _, b := range blocks {
			if !strings.Contains(b, "label:      "+label+"\n") {
				continue
			}
			found = true
			access := regexp.MustCompile(`Access:\s+([^\n]*)`).FindStringSubmatch(b)
			if access == nil || !strings.Contains(access[1], "sensitive") || !strings.Contains(access[1], "never extractable") {
				t.Fatalf("%s access: %v\n%s", label, access, out)
			}
		}
		if !found {
			t.Fatalf("no private or secret key %s in the token:\n%s", label, out)
		}
	}
	// The pkcs11 seal unseals at start: the server is ready without shares.
	_, info = startDev(t, dir, "--hsm", "softhsm")
	run(t, true, info.env(), sigilBinary(t), "ca", "list")
}

// TestEntryLifecycle: registration entries through the CLI, refused when
// outside the trust domain or malformed, and every change on the log.
func TestEntryLifecycle(t *testing.T) {
	dir := t.TempDir()
	_, info := startDev(t, dir)
	env := append(info.env(), "SIGIL_LOG_KEY="+logKeyOf(t, dir))
	bin := sigilBinary(t)

	out := run(t, true, env, bin, "entry", "create", "--spiffe-id", "spiffe://sigil.test/web",
		"--selector", "unix:uid:1000", "--selector", "unix:path:/usr/bin/web", "--x509-ttl", "10m", "--dns", "web.test")
	id := entryIDRE.FindStringSubmatch(out)
	if id == nil || !strings.Contains(out, "X509-SVID TTL 10m0s") || !strings.Contains(out, "Revision      1") {
		t.Fatalf("create: %s", out)
	}
	for _, bad := range [][]string{
		{"--spiffe-id", "spiffe://other.test/web", "--selector", "unix:uid:1"},
		{"--spiffe-id", "spiffe://sigil.test/web2", "--selector", "unix:uid:abc"},
		{"--spiffe-id", "spiffe://sigil.test/sigil/operator", "--selector", "unix:uid:1"},
		{"--spiffe-id", "not a spiffe id", "--selector", "unix:uid:1"},
		{"--spiffe-id", "spiffe://sigil.test/web3"},
	} {
		out := run(t, false, env, bin, append([]string{"entry", "create"}, bad...)...)
		if !strings.HasPrefix(out, "Error: ") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("create %v: want one error line, got %q", bad, out)
		}
	}
	if out := run(t, false, env, bin, "entry", "create", "--spiffe-id", "spiffe://sigil.test/web",
		"--selector", "unix:path:/usr/bin/web", "--selector", "unix:uid:1000"); !strings.Contains(out, "exists already") {
		t.Fatalf("duplicate entry: %s", out)
	}
	out = run(t, true, env, bin, "entry", "update", id[1], "--selector", "unix:uid:1001")
	if !strings.Contains(out, "unix:uid:1001") || strings.Contains(out, "unix:path") || !strings.Contains(out, "Revision      2") || !strings.Contains(out, "DNS name      web.test") {
		t.Fatalf("update: %s", out)
	}
	out = run(t, true, env, bin, "entry", "list", "--selector", "unix:uid:1001")
	if !strings.Contains(out, id[1]) {
		t.Fatalf("list: %s", out)
	}
	run(t, true, env, bin, "entry", "show", id[1])
	run(t, true, env, bin, "entry", "delete", id[1])
	if out := run(t, false, env, bin, "entry", "show", id[1]); !strings.Contains(out, "not found") {
		t.Fatalf("show after delete: %s", out)
	}
	out = run(t, true, env, bin, "log", "show")
	for _, kind := range []string{"entry.create", "entry.update", "entry.delete"} {
		if !strings.Contains(out, kind+" by spiffe://sigil.test/sigil/operator") {
			t.Errorf("%s not on the log:\n%s", kind, out)
		}
	}
}

// TestWorkloadAPIThroughDev: an entry for this test's uid, then go-spiffe's
// client on dev's socket gets that SVID, which chains to dev's root and is
// on the log.
func TestWorkloadAPIThroughDev(t *testing.T) {
	dir := t.TempDir()
	_, info := startDev(t, dir)
	env := append(info.env(), "SIGIL_LOG_KEY="+logKeyOf(t, dir))
	bin := sigilBinary(t)
	var dj struct {
		Socket string `json:"workload_socket"`
	}
	b, _ := os.ReadFile(filepath.Join(dir, "dev.json"))
	if err := json.Unmarshal(b, &dj); err != nil || !filepath.IsAbs(dj.Socket) {
		t.Fatalf("dev.json workload_socket: %q %v", dj.Socket, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	// No entry yet: permission denied, as SPIRE answers.
	if _, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+dj.Socket)); err == nil || status.Code(err) != codes.PermissionDenied {
		t.Fatalf("no entry: %v", err)
	}
	run(t, true, env, bin, "entry", "create", "--spiffe-id", "spiffe://sigil.test/e2e", "--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()))
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+dj.Socket))
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID.String() != "spiffe://sigil.test/e2e" {
		t.Fatalf("SVID for %s", svid.ID)
	}
	rootPEM, _ := os.ReadFile(info.RootCA)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	inters := x509.NewCertPool()
	for _, c := range svid.Certificates[1:] {
		inters.AddCert(c)
	}
	if _, err := svid.Certificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("SVID does not chain to dev's root: %v", err)
	}
	leaf := filepath.Join(dir, "svid.pem")
	os.WriteFile(leaf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: svid.Certificates[0].Raw}), 0o644)
	if out := run(t, true, env, bin, "log", "verify", "--state", "", "--cert", leaf); !strings.Contains(out, "by spiffe://sigil.test/e2e") {
		t.Fatalf("SVID issuance not on the log as the workload's: %s", out)
	}
}
