package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// ocspRequestFor builds a request with x/crypto/ocsp (an encoder
// independent of ours).
func ocspRequestFor(t testing.TB, serial *big.Int, issuer *x509.Certificate, h crypto.Hash) []byte {
	t.Helper()
	der, err := ocsp.CreateRequest(&x509.Certificate{SerialNumber: serial}, issuer, &ocsp.RequestOptions{Hash: h})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// ocspRequestWithNonce re-encodes a request with request extensions added.
func ocspRequestWithNonce(t testing.TB, plain []byte, exts ...pkix.Extension) []byte {
	t.Helper()
	var req ocspRequestASN1
	if _, err := asn1.Unmarshal(plain, &req); err != nil {
		t.Fatal(err)
	}
	req.TBSRequest.RequestExtensions = exts
	der, err := asn1.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func nonceExt(t testing.TB, nonce []byte) pkix.Extension {
	t.Helper()
	v, err := asn1.Marshal(nonce)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidOCSPNonce, Value: v}
}

// responseNonce returns the nonce extension value of a response's
// responseExtensions, or nil.
func responseNonce(t testing.TB, der []byte) []byte {
	t.Helper()
	var resp struct {
		Status   asn1.Enumerated
		Response struct {
			Type  asn1.ObjectIdentifier
			Bytes []byte
		} `asn1:"explicit,tag:0"`
	}
	if _, err := asn1.Unmarshal(der, &resp); err != nil {
		t.Fatal(err)
	}
	var basic struct {
		TBS   asn1.RawValue
		Alg   pkix.AlgorithmIdentifier
		Sig   asn1.BitString
		Certs []asn1.RawValue `asn1:"explicit,tag:0,optional"`
	}
	if _, err := asn1.Unmarshal(resp.Response.Bytes, &basic); err != nil {
		t.Fatal(err)
	}
	var data struct {
		Version     int `asn1:"optional,explicit,tag:0,default:0"`
		ResponderID asn1.RawValue
		ProducedAt  time.Time `asn1:"generalized"`
		Responses   []asn1.RawValue
		Extensions  []pkix.Extension `asn1:"explicit,tag:1,optional"`
	}
	if _, err := asn1.Unmarshal(basic.TBS.FullBytes, &data); err != nil {
		t.Fatal(err)
	}
	for _, e := range data.Extensions {
		if e.Id.Equal(oidOCSPNonce) {
			return e.Value
		}
	}
	return nil
}

func mustParseResponse(t testing.TB, der []byte, issuer *x509.Certificate) *ocsp.Response {
	t.Helper()
	resp, err := ocsp.ParseResponse(der, issuer)
	if err != nil {
		t.Fatalf("ParseResponse: %v", err)
	}
	return resp
}

func TestOCSPStatuses(t *testing.T) {
	e := newEnv(t, true, nil)
	ctx := t.Context()
	root := e.a.Roots()[0]
	in := e.a.Intermediates()[0]
	good := e.svid(t, "/good")
	revoked := e.svid(t, "/revoked")
	unspecified := e.svid(t, "/unspecified")
	revokedAt := e.clock.Now()
	if _, err := e.a.Revoke(ctx, revoked.Record.Serial, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.Revoke(ctx, unspecified.Record.Serial, 0); err != nil {
		t.Fatal(err)
	}
	foreign := newEnv(t, true, nil)
	foreignLeaf := foreign.svid(t, "/foreign")
	now := e.clock.Now()

	tests := []struct {
		name   string
		serial *big.Int
		issuer *x509.Certificate // named in the CertID
		hash   crypto.Hash
		status int
		reason int
	}{
		{"good SHA-1", good.Certificate.SerialNumber, in, crypto.SHA1, ocsp.Good, 0},
		{"good SHA-256", good.Certificate.SerialNumber, in, crypto.SHA256, ocsp.Good, 0},
		{"revoked SHA-1", revoked.Certificate.SerialNumber, in, crypto.SHA1, ocsp.Revoked, 1},
		{"revoked SHA-256", revoked.Certificate.SerialNumber, in, crypto.SHA256, ocsp.Revoked, 1},
		{"revoked unspecified", unspecified.Certificate.SerialNumber, in, crypto.SHA1, ocsp.Revoked, 0},
		{"never issued", big.NewInt(0x1234567), in, crypto.SHA1, ocsp.Unknown, 0},
		{"never issued SHA-256", big.NewInt(0x7654321), in, crypto.SHA256, ocsp.Unknown, 0},
		{"zero serial", big.NewInt(0), in, crypto.SHA1, ocsp.Unknown, 0},
		{"foreign issuer", foreignLeaf.Certificate.SerialNumber, foreign.a.Intermediates()[0], crypto.SHA1, ocsp.Unknown, 0},
		{"foreign issuer, our serial", good.Certificate.SerialNumber, foreign.a.Intermediates()[0], crypto.SHA256, ocsp.Unknown, 0},
		{"intermediate under the root", in.SerialNumber, root, crypto.SHA1, ocsp.Unknown, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := e.a.OCSP(ctx, ocspRequestFor(t, tt.serial, tt.issuer, tt.hash))
			// Every response is signed by our active intermediate.
			resp := mustParseResponse(t, out, in)
			if resp.Status != tt.status {
				t.Fatalf("status = %d, want %d", resp.Status, tt.status)
			}
			if resp.SerialNumber.Cmp(tt.serial) != 0 {
				t.Errorf("serial = %x, want %x", resp.SerialNumber, tt.serial)
			}
			if resp.IssuerHash != tt.hash {
				t.Errorf("CertID hash = %v, want %v", resp.IssuerHash, tt.hash)
			}
			if !bytes.Equal(resp.RawResponderName, in.RawSubject) {
				t.Error("responder is not the intermediate")
			}
			if !resp.ThisUpdate.Equal(now) || !resp.NextUpdate.Equal(now.Add(e.cfg.OCSPValidity)) {
				t.Errorf("window %v..%v", resp.ThisUpdate, resp.NextUpdate)
			}
			if tt.status == ocsp.Revoked {
				if !resp.RevokedAt.Equal(revokedAt) || resp.RevocationReason != tt.reason {
					t.Errorf("revoked at %v reason %d, want %v reason %d", resp.RevokedAt, resp.RevocationReason, revokedAt, tt.reason)
				}
			}
			if tt.issuer == in {
				// Our own CertIDs are answered with matching hashes.
				req, err := ocsp.ParseRequest(ocspRequestFor(t, tt.serial, tt.issuer, tt.hash))
				if err != nil {
					t.Fatal(err)
				}
				if err := resp.CheckSignatureFrom(in); err != nil || req.HashAlgorithm != resp.IssuerHash {
					t.Errorf("response does not match the request: %v", err)
				}
			}
		})
	}
}

func TestOCSPMalformed(t *testing.T) {
	e := newEnv(t, true, nil)
	in := e.a.Intermediates()[0]
	leaf := e.svid(t, "/m")
	plain := ocspRequestFor(t, leaf.Certificate.SerialNumber, in, crypto.SHA1)

	reencode := func(mutate func(*ocspRequestASN1)) []byte {
		var req ocspRequestASN1
		if _, err := asn1.Unmarshal(plain, &req); err != nil {
			t.Fatal(err)
		}
		mutate(&req)
		der, err := asn1.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	tests := []struct {
		name string
		der  []byte
	}{
		{"garbage", []byte("GET / HTTP/1.1")},
		{"empty", nil},
		{"truncated", plain[:len(plain)-4]},
		{"trailing data", append(append([]byte(nil), plain...), 0)},
		{"no requests", reencode(func(r *ocspRequestASN1) { r.TBSRequest.RequestList = nil })},
		{"two requests", reencode(func(r *ocspRequestASN1) {
			r.TBSRequest.RequestList = append(r.TBSRequest.RequestList, r.TBSRequest.RequestList[0])
		})},
		{"version 2", reencode(func(r *ocspRequestASN1) { r.TBSRequest.Version = 1 })},
		{"SHA-384 CertID", ocspRequestFor(t, leaf.Certificate.SerialNumber, in, crypto.SHA384)},
		{"short name hash", reencode(func(r *ocspRequestASN1) {
			r.TBSRequest.RequestList[0].ReqCert.IssuerNameHash = []byte{1, 2, 3}
		})},
		{"nonce too long", ocspRequestWithNonce(t, plain, nonceExt(t, make([]byte, 33)))},
		{"nonce empty", ocspRequestWithNonce(t, plain, nonceExt(t, []byte{}))},
		{"nonce not an OCTET STRING", ocspRequestWithNonce(t, plain, pkix.Extension{Id: oidOCSPNonce, Value: []byte{1, 2, 3}})},
		{"two nonces", ocspRequestWithNonce(t, plain, nonceExt(t, []byte{1}), nonceExt(t, []byte{2}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if out := e.a.OCSP(t.Context(), tt.der); !bytes.Equal(out, ocsp.MalformedRequestErrorResponse) {
				t.Fatalf("response %x, want malformedRequest", out)
			}
		})
	}
	// The untouched request is answered.
	if resp := mustParseResponse(t, e.a.OCSP(t.Context(), plain), in); resp.Status != ocsp.Good {
		t.Fatalf("status %d", resp.Status)
	}
}

func TestOCSPBeforeBootstrap(t *testing.T) {
	e := newEnv(t, false, nil)
	other := newEnv(t, true, nil)
	req := ocspRequestFor(t, big.NewInt(5), other.a.Intermediates()[0], crypto.SHA1)
	if out := e.a.OCSP(t.Context(), req); !bytes.Equal(out, ocsp.TryLaterErrorResponse) {
		t.Fatalf("response %x, want tryLater", out)
	}
}

func TestOCSPPreSigned(t *testing.T) {
	e := newEnv(t, true, nil)
	ctx := t.Context()
	in := e.a.Intermediates()[0]
	signer := e.keys.signerFor(t, e.a, in)

	// Issuance signs the certificate and nothing else.
	before := signer.n.Load()
	leaf := e.svid(t, "/presigned")
	if got := signer.n.Load() - before; got != 1 {
		t.Fatalf("issuance made %d signatures, want 1", got)
	}
	e.a.ocsp.mu.RLock()
	cached := len(e.a.ocsp.cache)
	e.a.ocsp.mu.RUnlock()
	if cached != 0 {
		t.Fatalf("issuance cached %d OCSP responses", cached)
	}

	// 100 concurrent requests for one certificate: one signature, one read.
	req := ocspRequestFor(t, leaf.Certificate.SerialNumber, in, crypto.SHA1)
	before = signer.n.Load()
	reads := e.store.getCalls.Load()
	outs := make([][]byte, 100)
	var wg sync.WaitGroup
	for i := range outs {
		wg.Go(func() { outs[i] = e.a.OCSP(ctx, req) })
	}
	wg.Wait()
	if got := signer.n.Load() - before; got != 1 {
		t.Fatalf("100 requests made %d signatures, want 1", got)
	}
	if got := e.store.getCalls.Load() - reads; got != 1 {
		t.Fatalf("100 requests read the store %d times, want 1", got)
	}
	for _, o := range outs {
		if !bytes.Equal(o, outs[0]) {
			t.Fatal("responses differ")
		}
	}
	first := mustParseResponse(t, outs[0], in)
	if first.Status != ocsp.Good {
		t.Fatalf("status %d", first.Status)
	}

	// Served from the cache until OCSPRefreshBefore is left, then re-signed.
	e.clock.Advance(e.cfg.OCSPValidity - e.cfg.OCSPRefreshBefore - time.Minute)
	before = signer.n.Load()
	if out := e.a.OCSP(ctx, req); !bytes.Equal(out, outs[0]) || signer.n.Load() != before {
		t.Fatal("a fresh cached response was not reused")
	}
	e.clock.Advance(2 * time.Minute)
	out := e.a.OCSP(ctx, req)
	if signer.n.Load()-before != 1 {
		t.Fatal("a response due for refresh was not re-signed")
	}
	if resp := mustParseResponse(t, out, in); !resp.ThisUpdate.Equal(e.clock.Now()) {
		t.Fatalf("refreshed ThisUpdate = %v, want %v", resp.ThisUpdate, e.clock.Now())
	}

	// Revoke replaces the cached responses: the next requests, under both
	// hashes, answer revoked without another signature.
	if _, err := e.a.Revoke(ctx, leaf.Record.Serial, 3); err != nil {
		t.Fatal(err)
	}
	before = signer.n.Load()
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		resp := mustParseResponse(t, e.a.OCSP(ctx, ocspRequestFor(t, leaf.Certificate.SerialNumber, in, h)), in)
		if resp.Status != ocsp.Revoked || resp.RevocationReason != 3 || !resp.RevokedAt.Equal(e.clock.Now()) {
			t.Fatalf("%v: status %d reason %d at %v", h, resp.Status, resp.RevocationReason, resp.RevokedAt)
		}
	}
	if got := signer.n.Load() - before; got != 0 {
		t.Fatalf("requests after Revoke made %d signatures, want 0", got)
	}

	// Responses past their nextUpdate are swept.
	e.clock.Advance(e.cfg.OCSPValidity)
	e.a.ocsp.sweep(e.clock.Now())
	e.a.ocsp.mu.RLock()
	cached = len(e.a.ocsp.cache)
	e.a.ocsp.mu.RUnlock()
	if cached != 0 {
		t.Fatalf("%d stale responses survived the sweep", cached)
	}
}

func TestOCSPRevokedNotOverwrittenByRace(t *testing.T) {
	e := newEnv(t, true, nil)
	in := e.a.Intermediates()[0]
	leaf := e.svid(t, "/race")
	if _, err := e.a.Revoke(t.Context(), leaf.Record.Serial, 1); err != nil {
		t.Fatal(err)
	}
	is := e.a.set.Load().byID[IssuerID(in)]
	// A good response signed from a read that predates the revocation.
	stale, err := e.a.ocsp.sign(is, leaf.Certificate.SerialNumber, crypto.SHA1, ocsp.Good, time.Time{}, 0, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	e.a.ocsp.put(respKey{issuer: is.id, serial: leaf.Record.Serial, hash: crypto.SHA1}, stale)
	resp := mustParseResponse(t, e.a.OCSP(t.Context(), ocspRequestFor(t, leaf.Certificate.SerialNumber, in, crypto.SHA1)), in)
	if resp.Status != ocsp.Revoked {
		t.Fatal("a good response replaced the revoked one")
	}
}

func TestOCSPNonce(t *testing.T) {
	e := newEnv(t, true, func(c *Config) { c.OCSPNonceRate = 2 })
	ctx := t.Context()
	in := e.a.Intermediates()[0]
	leaf := e.svid(t, "/nonce")
	plain := ocspRequestFor(t, leaf.Certificate.SerialNumber, in, crypto.SHA256)
	cached := e.a.OCSP(ctx, plain)

	nonce := []byte("0123456789abcdef")
	ext := nonceExt(t, nonce)
	req := ocspRequestWithNonce(t, plain, ext)
	for i := range 3 {
		out := e.a.OCSP(ctx, req)
		resp := mustParseResponse(t, out, in)
		if resp.Status != ocsp.Good || resp.SerialNumber.Cmp(leaf.Certificate.SerialNumber) != 0 || resp.IssuerHash != crypto.SHA256 {
			t.Fatalf("request %d: status %d serial %x hash %v", i, resp.Status, resp.SerialNumber, resp.IssuerHash)
		}
		got := responseNonce(t, out)
		if i < 2 {
			if !bytes.Equal(got, ext.Value) {
				t.Fatalf("request %d: nonce %x, want %x", i, got, ext.Value)
			}
			if !resp.ThisUpdate.Equal(e.clock.Now()) {
				t.Fatalf("nonce response ThisUpdate %v", resp.ThisUpdate)
			}
			continue
		}
		// Over the rate: the cached response, without a nonce.
		if got != nil || !bytes.Equal(out, cached) {
			t.Fatalf("request %d over the rate: nonce %x, cached=%v", i, got, bytes.Equal(out, cached))
		}
	}
	e.clock.Advance(time.Second)
	if got := responseNonce(t, e.a.OCSP(ctx, req)); !bytes.Equal(got, ext.Value) {
		t.Fatal("nonce not echoed after the rate recovered")
	}

	// A revoked status carries over to the nonce response.
	if _, err := e.a.Revoke(ctx, leaf.Record.Serial, 5); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	out := e.a.OCSP(ctx, req)
	resp := mustParseResponse(t, out, in)
	if resp.Status != ocsp.Revoked || resp.RevocationReason != 5 || !bytes.Equal(responseNonce(t, out), ext.Value) {
		t.Fatalf("revoked nonce response: status %d reason %d", resp.Status, resp.RevocationReason)
	}
	// And an unknown one.
	out = e.a.OCSP(ctx, ocspRequestWithNonce(t, ocspRequestFor(t, big.NewInt(99), in, crypto.SHA1), ext))
	if resp := mustParseResponse(t, out, in); resp.Status != ocsp.Unknown || !bytes.Equal(responseNonce(t, out), ext.Value) {
		t.Fatalf("unknown nonce response: status %d", resp.Status)
	}
}

func TestLRU(t *testing.T) {
	l := newLRU(2)
	now := time.Now()
	k := func(s string) respKey { return respKey{issuer: "i", serial: s} }
	e := func(d time.Duration) *ocspEntry { return &ocspEntry{nextUpdate: now.Add(d)} }
	l.add(k("a"), e(time.Hour))
	l.add(k("b"), e(time.Minute))
	if l.get(k("a")) == nil { // a is now the most recent
		t.Fatal("a missing")
	}
	l.add(k("c"), e(time.Hour))
	if l.get(k("b")) != nil || l.get(k("a")) == nil || l.get(k("c")) == nil || l.len() != 2 {
		t.Fatal("the least recently used entry was not evicted")
	}
	l.add(k("d"), e(time.Minute))
	l.sweep(now.Add(2 * time.Minute))
	if l.len() != 1 || l.get(k("d")) != nil {
		t.Fatal("sweep kept an expired entry")
	}
}

func TestRateLimiter(t *testing.T) {
	now := time.Now()
	l := newRateLimiter(3, now)
	got := 0
	for range 10 {
		if l.allow(now) {
			got++
		}
	}
	if got != 3 {
		t.Fatalf("allowed %d at once, want 3", got)
	}
	if l.allow(now.Add(100 * time.Millisecond)) {
		t.Fatal("allowed before a token accrued")
	}
	if !l.allow(now.Add(400 * time.Millisecond)) {
		t.Fatal("refused after a token accrued")
	}
}

func writePEM(t *testing.T, path string, certs ...*x509.Certificate) {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func needOpenSSL(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is required under CI (scripts/deps.sh installs it)")
		}
		t.Skip("openssl not installed")
	}
	return p
}

// TestOpenSSLInterop has OpenSSL build an OCSP request with a nonce, check
// our response (signature, responder, nonce, status) and check the chain
// against both CRLs.
func TestOpenSSLInterop(t *testing.T) {
	openssl := needOpenSSL(t)
	e := newEnv(t, true, func(c *Config) { c.Clock = time.Now })
	ctx := t.Context()
	dir := t.TempDir()
	path := func(n string) string { return filepath.Join(dir, n) }
	root, in := e.a.Roots()[0], e.a.Intermediates()[0]
	good, bad := e.svid(t, "/good"), e.svid(t, "/bad")
	writePEM(t, path("root.pem"), root)
	writePEM(t, path("inter.pem"), in)
	writePEM(t, path("good.pem"), good.Certificate)
	writePEM(t, path("bad.pem"), bad.Certificate)
	if _, err := e.a.Revoke(ctx, bad.Record.Serial, 1); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, openssl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	for _, c := range []struct{ name, status string }{{"good", "Cert Status: good"}, {"bad", "Cert Status: revoked"}} {
		reqPath, respPath := path(c.name+".req"), path(c.name+".resp")
		run("ocsp", "-issuer", path("inter.pem"), "-cert", path(c.name+".pem"), "-nonce", "-reqout", reqPath)
		req, err := os.ReadFile(reqPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(respPath, e.a.OCSP(ctx, req), 0o644); err != nil {
			t.Fatal(err)
		}
		// Without -cert, OpenSSL checks the response against the request
		// read with -reqin, nonce included.
		out := run("ocsp", "-reqin", reqPath, "-respin", respPath, "-resp_text",
			"-CAfile", path("root.pem"), "-verify_other", path("inter.pem"))
		if !strings.Contains(out, "Response verify OK") || !strings.Contains(out, c.status) ||
			!strings.Contains(out, "OCSP Nonce") || strings.Contains(out, "WARNING") {
			t.Fatalf("openssl ocsp for %s:\n%s", c.name, out)
		}
	}

	var crls []byte
	for _, is := range []*x509.Certificate{root, in} {
		der, err := e.a.CRL(ctx, IssuerID(is))
		if err != nil {
			t.Fatal(err)
		}
		crls = append(crls, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})...)
	}
	if err := os.WriteFile(path("crls.pem"), crls, 0o644); err != nil {
		t.Fatal(err)
	}
	verify := func(leaf string) (string, error) {
		out, err := exec.CommandContext(ctx, openssl, "verify", "-crl_check_all", "-CAfile", path("root.pem"),
			"-untrusted", path("inter.pem"), "-CRLfile", path("crls.pem"),
			"-attime", strconv.FormatInt(time.Now().Unix(), 10), path(leaf)).CombinedOutput()
		return string(out), err
	}
	if out, err := verify("good.pem"); err != nil {
		t.Fatalf("openssl verify good: %v\n%s", err, out)
	}
	if out, err := verify("bad.pem"); err == nil || !strings.Contains(out, "revoked") {
		t.Fatalf("openssl verify of the revoked leaf: %v\n%s", err, out)
	}
}

func FuzzOCSPRequest(f *testing.F) {
	e := newEnv(f, true, func(c *Config) { c.Logger = nil })
	in := e.a.Intermediates()[0]
	leaf := e.svid(f, "/fuzz")
	revoked := e.svid(f, "/fuzz-revoked")
	if _, err := e.a.Revoke(context.Background(), revoked.Record.Serial, 1); err != nil {
		f.Fatal(err)
	}
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		plain := ocspRequestFor(f, leaf.Certificate.SerialNumber, in, h)
		f.Add(plain)
		f.Add(ocspRequestWithNonce(f, plain, nonceExt(f, []byte("nonce"))))
		f.Add(ocspRequestFor(f, revoked.Certificate.SerialNumber, in, h))
		f.Add(ocspRequestFor(f, big.NewInt(42), in, h))
	}
	f.Add(ocspRequestFor(f, leaf.Certificate.SerialNumber, in, crypto.SHA512))
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, der []byte) {
		out := e.a.OCSP(context.Background(), der)
		req, perr := parseOCSPRequest(der)
		if perr != nil {
			if !bytes.Equal(out, ocsp.MalformedRequestErrorResponse) {
				t.Fatalf("unparseable request answered with %x", out)
			}
			return
		}
		resp, err := ocsp.ParseResponse(out, in)
		if err != nil {
			t.Fatalf("response to a valid request does not parse or verify: %v", err)
		}
		if resp.SerialNumber.Cmp(req.serial) != 0 || resp.IssuerHash != req.hash {
			t.Fatalf("response names serial %x/%v, request %x/%v", resp.SerialNumber, resp.IssuerHash, req.serial, req.hash)
		}
		switch resp.Status {
		case ocsp.Good, ocsp.Unknown:
		case ocsp.Revoked:
			if resp.SerialNumber.Cmp(revoked.Certificate.SerialNumber) != 0 {
				t.Fatalf("serial %x reported revoked", resp.SerialNumber)
			}
		default:
			t.Fatalf("status %d", resp.Status)
		}
		if resp.Status == ocsp.Good && resp.SerialNumber.Cmp(leaf.Certificate.SerialNumber) != 0 {
			t.Fatalf("serial %x reported good", resp.SerialNumber)
		}
	})
}
