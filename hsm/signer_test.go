package hsm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/hsm"
	"github.com/sigil-pki/sigil/hsm/hsmtest"
)

// verifySign signs a random digest of hash's size with s and checks the
// signature against pub.
func verifySign(t testing.TB, s crypto.Signer, pub crypto.PublicKey, hash crypto.Hash) {
	t.Helper()
	h := hash.New()
	h.Write([]byte(rand.Text()))
	digest := h.Sum(nil)
	sig, err := s.Sign(rand.Reader, digest, hash)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest, sig) {
		t.Fatalf("signature over a %v digest does not verify", hash)
	}
	digest[0] ^= 1
	if ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest, sig) {
		t.Fatal("signature verifies over another digest")
	}
}

func TestSignVerify(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	tok := openToken(t, cfg)
	tests := []struct {
		name  string
		curve elliptic.Curve
		hash  crypto.Hash
	}{
		{"P-256/SHA-256", elliptic.P256(), crypto.SHA256},
		{"P-256/SHA-384 truncated", elliptic.P256(), crypto.SHA384},
		{"P-256/SHA-512 truncated", elliptic.P256(), crypto.SHA512},
		{"P-256/SHA-1 short", elliptic.P256(), crypto.SHA1},
		{"P-384/SHA-384", elliptic.P384(), crypto.SHA384},
		{"P-384/SHA-256 short", elliptic.P384(), crypto.SHA256},
		{"P-384/SHA-512 truncated", elliptic.P384(), crypto.SHA512},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tok.GenerateECKey(t.Context(), "key "+tc.name, tc.curve)
			if err != nil {
				t.Fatalf("GenerateECKey: %v", err)
			}
			pub, ok := s.Public().(*ecdsa.PublicKey)
			if !ok || pub.Curve != tc.curve {
				t.Fatalf("Public() = %T on %v, want *ecdsa.PublicKey on %s", s.Public(), pub.Curve, tc.curve.Params().Name)
			}
			verifySign(t, s, pub, tc.hash)

			// A Signer loaded by label signs for the same public key.
			loaded, err := tok.Signer(t.Context(), "key "+tc.name)
			if err != nil {
				t.Fatalf("Signer: %v", err)
			}
			if !loaded.Public().(*ecdsa.PublicKey).Equal(pub) {
				t.Fatal("loaded Signer has another public key")
			}
			verifySign(t, loaded, pub, tc.hash)
		})
	}
}

func TestSignRejectsBadDigest(t *testing.T) {
	tok := openToken(t, hsmtest.NewToken(t))
	s, err := tok.GenerateECKey(t.Context(), "root", elliptic.P256())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		digest []byte
		opts   crypto.SignerOpts
	}{
		{"empty", nil, crypto.SHA256},
		{"empty without hash", []byte{}, crypto.Hash(0)},
		{"shorter than hash", make([]byte, 31), crypto.SHA256},
		{"longer than hash", make([]byte, 48), crypto.SHA256},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if sig, err := s.Sign(nil, tc.digest, tc.opts); err == nil {
				t.Fatalf("Sign returned a %d-byte signature, want an error", len(sig))
			}
		})
	}
}

func TestSelfSignedCertificate(t *testing.T) {
	tok := openToken(t, hsmtest.NewToken(t))
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		t.Run(curve.Params().Name, func(t *testing.T) {
			s, err := tok.GenerateECKey(t.Context(), "root "+curve.Params().Name, curve)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			tmpl := &x509.Certificate{
				SerialNumber:          big.NewInt(1),
				Subject:               pkix.Name{CommonName: "Sigil test root " + curve.Params().Name},
				NotBefore:             now.Add(-time.Minute),
				NotAfter:              now.Add(time.Hour),
				KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
				BasicConstraintsValid: true,
				IsCA:                  true,
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Public(), s)
			if err != nil {
				t.Fatalf("CreateCertificate: %v", err)
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := cert.CheckSignatureFrom(cert); err != nil {
				t.Fatalf("self-signature: %v", err)
			}
			roots := x509.NewCertPool()
			roots.AddCert(cert)
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now}); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

func TestKeyAttributes(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	tok := openToken(t, cfg)
	if _, err := tok.GenerateECKey(t.Context(), "root", elliptic.P384()); err != nil {
		t.Fatal(err)
	}
	if err := tok.GenerateAESKey(t.Context(), "seal"); err != nil {
		t.Fatal(err)
	}
	want := hsm.KeyAttributes{Sensitive: true, Extractable: false, AlwaysSensitive: true, NeverExtractable: true}
	for _, label := range []string{"root", "seal"} {
		got, err := tok.KeyAttributes(t.Context(), label)
		if err != nil {
			t.Fatalf("KeyAttributes(%q): %v", label, err)
		}
		if got != want {
			t.Errorf("KeyAttributes(%q) = %+v, want %+v", label, got, want)
		}
	}
	if _, err := tok.KeyAttributes(t.Context(), "absent"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("KeyAttributes(absent): got %v, want ErrKeyNotFound", err)
	}

	// An independent PKCS#11 client sees the same protection.
	if _, err := exec.LookPath("pkcs11-tool"); err != nil {
		hsmtest.Missing(t, "pkcs11-tool not found")
	}
	out, err := exec.CommandContext(t.Context(), "pkcs11-tool", "--module", cfg.Module,
		"--token-label", cfg.TokenLabel, "--login", "--pin", cfg.PIN, "--list-objects").CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool --list-objects: %v\n%s", err, out)
	}
	access, ok := objectAccess(string(out), "Private Key Object", "root")
	if !ok {
		t.Fatalf("pkcs11-tool lists no private key labelled root:\n%s", out)
	}
	for _, flag := range []string{"sensitive", "always sensitive", "never extractable"} {
		if !access[flag] {
			t.Errorf("pkcs11-tool Access of the root key lacks %q: %v", flag, access)
		}
	}
	if access["extractable"] {
		t.Errorf("pkcs11-tool reports the root key extractable: %v", access)
	}
}

// objectAccess finds, in pkcs11-tool --list-objects output, the object whose
// header starts with kind and whose label is label, and returns the flags of
// its "Access:" line.
func objectAccess(out, kind, label string) (map[string]bool, bool) {
	var inObject, labelled bool
	var access map[string]bool
	for line := range strings.Lines(out) {
		line = strings.TrimRight(line, "\r\n")
		if !strings.HasPrefix(line, " ") {
			if inObject && labelled && access != nil {
				return access, true
			}
			inObject, labelled, access = strings.HasPrefix(line, kind), false, nil
			continue
		}
		if !inObject {
			continue
		}
		key, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch key {
		case "label":
			labelled = value == label
		case "Access":
			access = map[string]bool{}
			for f := range strings.SplitSeq(value, ",") {
				access[strings.TrimSpace(f)] = true
			}
		}
	}
	return access, inObject && labelled && access != nil
}

func TestKeyExistsAndNotFound(t *testing.T) {
	tok := openToken(t, hsmtest.NewToken(t))
	ctx := t.Context()
	if _, err := tok.GenerateECKey(ctx, "root", elliptic.P256()); err != nil {
		t.Fatal(err)
	}
	if err := tok.GenerateAESKey(ctx, "seal"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		op   func() error
		want error
	}{
		{"EC over EC", func() error { _, err := tok.GenerateECKey(ctx, "root", elliptic.P384()); return err }, hsm.ErrKeyExists},
		{"EC over AES", func() error { _, err := tok.GenerateECKey(ctx, "seal", elliptic.P256()); return err }, hsm.ErrKeyExists},
		{"AES over AES", func() error { return tok.GenerateAESKey(ctx, "seal") }, hsm.ErrKeyExists},
		{"AES over EC", func() error { return tok.GenerateAESKey(ctx, "root") }, hsm.ErrKeyExists},
		{"missing signer", func() error { _, err := tok.Signer(ctx, "absent"); return err }, hsm.ErrKeyNotFound},
		{"signer of an AES key", func() error { _, err := tok.Signer(ctx, "seal"); return err }, hsm.ErrKeyNotFound},
		{"missing wrapper", func() error { _, err := tok.Wrapper(ctx, "absent"); return err }, hsm.ErrKeyNotFound},
		{"wrapper of an EC key", func() error { _, err := tok.Wrapper(ctx, "root"); return err }, hsm.ErrKeyNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestGenerateECKeyRejectsCurve(t *testing.T) {
	tok := openToken(t, hsmtest.NewToken(t))
	for _, curve := range []elliptic.Curve{elliptic.P224(), elliptic.P521(), nil} {
		if _, err := tok.GenerateECKey(t.Context(), "k", curve); err == nil {
			t.Errorf("GenerateECKey accepted curve %v", curve)
		}
	}
	if _, err := tok.Signer(t.Context(), "k"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("a rejected curve left a key behind: %v", err)
	}
}

func TestSignConcurrent(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	cfg.MaxSessions = 4 // fewer sessions than goroutines: callers queue
	tok := openToken(t, cfg)
	s, err := tok.GenerateECKey(t.Context(), "root", elliptic.P256())
	if err != nil {
		t.Fatal(err)
	}
	pub := s.Public().(*ecdsa.PublicKey)
	const n = 32
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			digest := make([]byte, 32)
			digest[0] = byte(i)
			sig, err := s.Sign(nil, digest, crypto.SHA256)
			if err == nil && !ecdsa.VerifyASN1(pub, digest, sig) {
				err = errors.New("signature does not verify")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestCloseWhileSigning closes a Token under load: operations in flight
// finish, later ones fail with ErrClosed, and Close does not hang.
func TestCloseWhileSigning(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	cfg.MaxSessions = 2
	tok, err := hsm.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := tok.GenerateECKey(t.Context(), "root", elliptic.P256())
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	var started, finished sync.WaitGroup
	started.Add(n)
	errs := make(chan error, n)
	for range n {
		finished.Go(func() {
			digest := make([]byte, 32)
			for i := 0; ; i++ {
				_, err := s.Sign(nil, digest, crypto.SHA256)
				if i == 0 {
					started.Done()
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	started.Wait()
	if err := tok.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	finished.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, hsm.ErrClosed) {
			t.Errorf("Sign during Close: got %v, want ErrClosed", err)
		}
	}
}

func BenchmarkSignP256(b *testing.B) {
	cfg := hsmtest.NewToken(b)
	cfg.Logger = nil
	tok := openToken(b, cfg)
	s, err := tok.GenerateECKey(b.Context(), "bench", elliptic.P256())
	if err != nil {
		b.Fatal(err)
	}
	digest := make([]byte, 32)
	for b.Loop() {
		if _, err := s.Sign(nil, digest, crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}
