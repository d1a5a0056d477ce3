package main

import (
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/acme/challenge/challengetest"
	"github.com/sigil-pki/sigil/ca/catest"
)

// portOf returns the port of a free loopback address.
func portOf(t *testing.T) int {
	t.Helper()
	addr := freePort(t)
	p, err := strconv.Atoi(addr[strings.LastIndex(addr, ":")+1:])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// readLeaf returns the first certificate of a PEM file.
func readLeaf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s holds no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// runTool runs a peer tool with env and returns its combined output.
func runTool(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestCertbot: certbot, unchanged, in standalone mode against sigil dev:
// register, certonly with http-01 for two names, renew --force-renewal,
// revoke; then OCSP says revoked.
func TestCertbot(t *testing.T) {
	certbot := need(t, "certbot", "certbot")
	openssl := need(t, "openssl", "openssl")
	dir := t.TempDir()
	httpPort := portOf(t)
	_, info := startDev(t, dir, "--acme-http-port", strconv.Itoa(httpPort))
	cb := filepath.Join(dir, "certbot")
	common := []string{"--config-dir", cb + "/config", "--work-dir", cb + "/work", "--logs-dir", cb + "/logs",
		"--server", info.ACMEDirectory, "--non-interactive"}
	env := []string{"REQUESTS_CA_BUNDLE=" + info.RootCA}

	out, err := runTool(t, env, certbot, append([]string{"register", "--agree-tos", "--email", "ops@example.com", "--no-eff-email"}, common...)...)
	if err != nil {
		t.Fatalf("certbot register: %v\n%s", err, out)
	}
	out, err = runTool(t, env, certbot, append([]string{"certonly", "--standalone", "--http-01-port", strconv.Itoa(httpPort),
		"--http-01-address", "127.0.0.1", "-d", "a.localhost", "-d", "b.localhost", "--cert-name", "ab"}, common...)...)
	if err != nil {
		t.Fatalf("certbot certonly: %v\n%s", err, out)
	}
	live := filepath.Join(cb, "config/live/ab")
	leaf := readLeaf(t, filepath.Join(live, "cert.pem"))
	names := slices.Clone(leaf.DNSNames)
	slices.Sort(names)
	if !slices.Equal(names, []string{"a.localhost", "b.localhost"}) || time.Until(leaf.NotAfter) > 25*time.Hour {
		t.Fatalf("certificate names %v, expires %v", leaf.DNSNames, leaf.NotAfter)
	}
	if out, err := exec.Command(openssl, "verify", "-CAfile", info.RootCA, "-untrusted", filepath.Join(live, "chain.pem"), filepath.Join(live, "cert.pem")).CombinedOutput(); err != nil {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}

	out, err = runTool(t, env, certbot, append([]string{"renew", "--cert-name", "ab", "--force-renewal", "--no-random-sleep-on-renew",
		"--http-01-port", strconv.Itoa(httpPort), "--http-01-address", "127.0.0.1"}, common...)...)
	if err != nil {
		t.Fatalf("certbot renew: %v\n%s", err, out)
	}
	renewed := readLeaf(t, filepath.Join(live, "cert.pem"))
	if renewed.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Fatal("renew --force-renewal kept the old certificate")
	}

	out, err = runTool(t, env, certbot, append([]string{"revoke", "--cert-path", filepath.Join(live, "cert.pem"),
		"--reason", "keycompromise", "--no-delete-after-revoke"}, common...)...)
	if err != nil {
		t.Fatalf("certbot revoke: %v\n%s", err, out)
	}
	ocsp, err := exec.Command(openssl, "ocsp", "-issuer", filepath.Join(live, "chain.pem"), "-cert", filepath.Join(live, "cert.pem"),
		"-url", info.HTTPURL+"/ocsp", "-CAfile", info.RootCA).CombinedOutput()
	if err != nil || !strings.Contains(string(ocsp), "revoked") {
		t.Fatalf("openssl ocsp after revoke: %v\n%s", err, ocsp)
	}
}

// TestLegoCLI: the lego command (Debian's package) against sigil dev:
// run with http-01, with tls-alpn-01, renew, and revoke; every
// certificate chains to the root and OCSP knows the revocation.
func TestLegoCLI(t *testing.T) {
	lego := need(t, "lego", "lego")
	openssl := need(t, "openssl", "openssl")
	dir := t.TempDir()
	httpPort, tlsPort := portOf(t), portOf(t)
	_, info := startDev(t, dir, "--acme-http-port", strconv.Itoa(httpPort), "--acme-tls-port", strconv.Itoa(tlsPort))
	env := []string{"LEGO_CA_CERTIFICATES=" + info.RootCA}
	path := filepath.Join(dir, "lego")
	base := []string{"--server", info.ACMEDirectory, "--accept-tos", "--email", "ops@example.com", "--path", path}

	for _, tc := range []struct {
		name, domain string
		flags        []string
	}{
		{"http-01", "http.localhost", []string{"--http", "--http.port", "127.0.0.1:" + strconv.Itoa(httpPort)}},
		{"tls-alpn-01", "tls.localhost", []string{"--tls", "--tls.port", "127.0.0.1:" + strconv.Itoa(tlsPort)}},
	} {
		args := append(append(slices.Clone(base), tc.flags...), "--domains", tc.domain, "run")
		if out, err := runTool(t, env, lego, args...); err != nil {
			t.Fatalf("lego run with %s: %v\n%s", tc.name, err, out)
		}
		crt := filepath.Join(path, "certificates", tc.domain+".crt")
		leaf := readLeaf(t, crt)
		if !slices.Equal(leaf.DNSNames, []string{tc.domain}) {
			t.Fatalf("%s: certificate for %v", tc.name, leaf.DNSNames)
		}
		if out, err := exec.Command(openssl, "verify", "-CAfile", info.RootCA, "-untrusted", crt, crt).CombinedOutput(); err != nil {
			t.Fatalf("%s: openssl verify: %v\n%s", tc.name, err, out)
		}
	}
	// A cross-certificate from another CA makes an alternate chain, which
	// lego's --preferred-chain picks; it verifies against that CA alone.
	rootPEM, err := os.ReadFile(info.RootCA)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(rootPEM)
	root, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	cross, corp, err := catest.CrossSign(root, "Corp Root", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), true)
	if err != nil {
		t.Fatal(err)
	}
	crossFile, corpFile := filepath.Join(dir, "cross.pem"), filepath.Join(dir, "corp.pem")
	os.WriteFile(crossFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cross.Raw}), 0o644)
	os.WriteFile(corpFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: corp.Raw}), 0o644)
	if out := run(t, true, info.env(), sigilBinary(t), "ca", "cross", "add", crossFile); !strings.Contains(out, "Corp Root") {
		t.Fatalf("sigil ca cross add: %s", out)
	}
	args := append(slices.Clone(base), "--http", "--http.port", "127.0.0.1:"+strconv.Itoa(httpPort), "--domains", "alt.localhost", "run", "--preferred-chain", "Corp Root")
	if out, err := runTool(t, env, lego, args...); err != nil {
		t.Fatalf("lego run --preferred-chain: %v\n%s", err, out)
	}
	altIssuer := filepath.Join(path, "certificates", "alt.localhost.issuer.crt")
	if out, err := exec.Command(openssl, "verify", "-CAfile", corpFile, "-untrusted", altIssuer, filepath.Join(path, "certificates", "alt.localhost.crt")).CombinedOutput(); err != nil {
		t.Fatalf("the preferred chain does not reach the other CA: %v\n%s", err, out)
	}

	crt := filepath.Join(path, "certificates", "http.localhost.crt")
	before := readLeaf(t, crt)
	args = append(append(slices.Clone(base), "--http", "--http.port", "127.0.0.1:"+strconv.Itoa(httpPort)), "--domains", "http.localhost", "renew", "--days", "10000", "--no-random-sleep")
	if out, err := runTool(t, env, lego, args...); err != nil {
		t.Fatalf("lego renew: %v\n%s", err, out)
	}
	if after := readLeaf(t, crt); after.SerialNumber.Cmp(before.SerialNumber) == 0 {
		t.Fatal("lego renew kept the old certificate")
	}
	args = append(slices.Clone(base), "--domains", "http.localhost", "revoke", "--reason", "1", "--keep")
	if out, err := runTool(t, env, lego, args...); err != nil {
		t.Fatalf("lego revoke: %v\n%s", err, out)
	}
	issuer := filepath.Join(path, "certificates", "http.localhost.issuer.crt")
	ocsp, err := exec.Command(openssl, "ocsp", "-issuer", issuer, "-cert", crt, "-url", info.HTTPURL+"/ocsp", "-CAfile", info.RootCA).CombinedOutput()
	if err != nil || !strings.Contains(string(ocsp), "revoked") {
		t.Fatalf("openssl ocsp after lego revoke: %v\n%s", err, ocsp)
	}
}

// TestLegoEAB: with EAB required, lego without a binding is refused with
// externalAccountRequired, and with a key from 'sigil acme eab create' it
// registers and gets its certificate.
func TestLegoEAB(t *testing.T) {
	lego := need(t, "lego", "lego")
	dir := t.TempDir()
	httpPort := portOf(t)
	_, info := startDev(t, dir, "--acme-http-port", strconv.Itoa(httpPort), "--acme-eab")
	out := run(t, true, info.env(), sigilBinary(t), "acme", "eab", "create", "--domain", "eab.localhost")
	kid := regexpField(t, out, "Key ID")
	hmac := regexpField(t, out, "HMAC key")
	env := []string{"LEGO_CA_CERTIFICATES=" + info.RootCA}
	base := []string{"--server", info.ACMEDirectory, "--accept-tos", "--email", "ops@example.com",
		"--http", "--http.port", "127.0.0.1:" + strconv.Itoa(httpPort), "--domains", "eab.localhost"}
	// lego reads externalAccountRequired from the directory and refuses on
	// its own; the server's refusal is tested in the server package.
	if out, err := runTool(t, env, lego, append(append(slices.Clone(base), "--path", filepath.Join(dir, "noeab")), "run")...); err == nil || !strings.Contains(out, "External Account Binding") {
		t.Fatalf("lego without EAB: %v\n%s", err, out)
	}
	path := filepath.Join(dir, "lego")
	if out, err := runTool(t, env, lego, append(append(slices.Clone(base), "--path", path, "--eab", "--kid", kid, "--hmac", hmac), "run")...); err != nil {
		t.Fatalf("lego with EAB: %v\n%s", err, out)
	}
	if leaf := readLeaf(t, filepath.Join(path, "certificates", "eab.localhost.crt")); leaf.DNSNames[0] != "eab.localhost" {
		t.Fatalf("certificate for %v", leaf.DNSNames)
	}
	// The key limits its accounts to eab.localhost and the names under it.
	other := slices.Clone(base)
	other[len(other)-1] = "www.eab.localhost"
	if out, err := runTool(t, env, lego, append(other, "--path", path, "--eab", "--kid", kid, "--hmac", hmac, "run")...); err != nil {
		t.Fatalf("lego for a name under the bound domain: %v\n%s", err, out)
	}
	other[len(other)-1] = "other.localhost"
	if out, err := runTool(t, env, lego, append(other, "--path", path, "--eab", "--kid", kid, "--hmac", hmac, "run")...); err == nil || !strings.Contains(out, "rejectedIdentifier") {
		t.Fatalf("lego for a name outside the bound domain: %v\n%s", err, out)
	}
}

func regexpField(t *testing.T, out, label string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, label); ok {
			return strings.TrimSpace(rest)
		}
	}
	t.Fatalf("no %q in %q", label, out)
	return ""
}

// TestLegoDNS01: lego's dns-01 with its exec provider, whose script puts
// the TXT record into a DNS server this test runs on loopback; Sigil's
// validation asks that server (sigil dev --acme-dns-resolver). A wildcard
// name needs dns-01.
func TestLegoDNS01(t *testing.T) {
	lego := need(t, "lego", "lego")
	curl := need(t, "curl", "curl")
	dnsSrv := challengetest.NewDNSServer(t)
	control := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fqdn := strings.TrimSuffix(r.URL.Query().Get("fqdn"), ".")
		switch r.URL.Path {
		case "/present":
			dnsSrv.AddTXT(fqdn, r.URL.Query().Get("value"))
		case "/cleanup":
			dnsSrv.RemoveTXT(fqdn, r.URL.Query().Get("value"))
		}
	}))
	defer control.Close()
	dir := t.TempDir()
	script := filepath.Join(dir, "dns.sh")
	body := "#!/bin/sh\nexec " + curl + " -sf --get --data-urlencode \"fqdn=$2\" --data-urlencode \"value=$3\" " + control.URL + "/$1\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	_, info := startDev(t, dir, "--acme-dns-resolver", dnsSrv.Addr())
	env := []string{"LEGO_CA_CERTIFICATES=" + info.RootCA, "EXEC_PATH=" + script, "EXEC_PROPAGATION_TIMEOUT=10", "EXEC_POLLING_INTERVAL=1",
		"EXEC_SEQUENCE_INTERVAL=1"} // the wildcard and the name share one TXT name: lego solves them in turn
	path := filepath.Join(dir, "lego")
	out, err := runTool(t, env, lego, "--server", info.ACMEDirectory, "--accept-tos", "--email", "ops@example.com", "--path", path,
		"--dns", "exec", "--dns.disable-cp", "--dns.resolvers", dnsSrv.Addr(), "--domains", "*.dns.localhost", "--domains", "dns.localhost", "run")
	if err != nil {
		t.Fatalf("lego run with dns-01: %v\n%s", err, out)
	}
	leaf := readLeaf(t, filepath.Join(path, "certificates", "_.dns.localhost.crt"))
	names := slices.Clone(leaf.DNSNames)
	slices.Sort(names)
	if !slices.Equal(names, []string{"*.dns.localhost", "dns.localhost"}) {
		t.Fatalf("certificate for %v", leaf.DNSNames)
	}
}
