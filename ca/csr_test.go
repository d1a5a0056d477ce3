package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"testing"
	"time"
)

func makeCSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a.example.org"}, DNSNames: []string{"a.example.org"}}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestParseCSR(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	good := makeCSR(t, mustKey(t), nil)
	badSig := append([]byte(nil), good...)
	badSig[len(badSig)-3] ^= 0x40
	tests := []struct {
		name string
		der  []byte
		ok   bool
	}{
		{"EC P-256", good, true},
		{"EC P-384", makeCSR(t, p384, nil), true},
		{"RSA 2048", makeCSR(t, testRSAKey(t), nil), true},
		{"Ed25519", makeCSR(t, ed, nil), true},
		{"RSA 1024", makeCSR(t, rsa1024, nil), false},
		{"EC P-224", makeCSR(t, p224, nil), false},
		{"bad signature", badSig, false},
		{"garbage", []byte("not a CSR at all"), false},
		{"empty", nil, false},
		{"trailing data", append(append([]byte(nil), good...), 0), false},
		{"truncated", good[:len(good)-10], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ParseCSR(tt.der)
			if tt.ok {
				if err != nil {
					t.Fatalf("ParseCSR: %v", err)
				}
				if csr.DNSNames[0] != "a.example.org" {
					t.Fatalf("DNSNames = %q", csr.DNSNames)
				}
				return
			}
			if !errors.Is(err, ErrBadCSR) || csr != nil {
				t.Fatalf("ParseCSR = %v, %v; want ErrBadCSR", csr, err)
			}
		})
	}
}

func TestRequestFromCSR(t *testing.T) {
	e := newEnv(t, true, nil)
	key := mustKey(t)
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name    string
		tmpl    *x509.CertificateRequest
		profile string
		wantErr error
		check   func(*testing.T, *Issued)
	}{
		{
			name: "svid",
			tmpl: &x509.CertificateRequest{URIs: []*url.URL{u("spiffe://example.org/web")}, DNSNames: []string{"web.example.org"}},
			check: func(t *testing.T, iss *Issued) {
				if iss.Record.Profile != ProfileSVID || iss.Certificate.URIs[0].String() != "spiffe://example.org/web" || iss.Certificate.DNSNames[0] != "web.example.org" {
					t.Errorf("issued %+v", iss.Record)
				}
			},
		},
		{
			name:    "tls-server, subject CN ignored",
			tmpl:    &x509.CertificateRequest{Subject: pkix.Name{CommonName: "evil.com"}, DNSNames: []string{"www.example.org"}, IPAddresses: []net.IP{net.ParseIP("192.0.2.1")}},
			profile: ProfileTLSServer,
			check: func(t *testing.T, iss *Issued) {
				c := iss.Certificate
				if c.Subject.CommonName != "www.example.org" || len(c.IPAddresses) != 1 || iss.Certificate.NotAfter.Sub(c.NotBefore) != 2*time.Hour+time.Minute {
					t.Errorf("issued %v %v %v", c.Subject, c.IPAddresses, c.NotAfter.Sub(c.NotBefore))
				}
			},
		},
		{
			name:    "two URIs",
			tmpl:    &x509.CertificateRequest{URIs: []*url.URL{u("spiffe://example.org/a"), u("spiffe://example.org/b")}},
			wantErr: ErrPolicy,
		},
		{
			name:    "e-mail SAN",
			tmpl:    &x509.CertificateRequest{DNSNames: []string{"a.example.org"}, EmailAddresses: []string{"a@example.org"}},
			wantErr: ErrPolicy,
		},
		{
			name:    "non-SPIFFE URI",
			tmpl:    &x509.CertificateRequest{URIs: []*url.URL{u("https://example.org/a")}},
			wantErr: ErrPolicy,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ParseCSR(makeCSR(t, key, tt.tmpl))
			if err != nil {
				t.Fatal(err)
			}
			req := RequestFromCSR(csr, tt.profile, 2*time.Hour)
			if req.PublicKey == nil || req.TTL != 2*time.Hour {
				t.Fatalf("request %+v", req)
			}
			iss, err := e.a.Issue(t.Context(), req)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Issue = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !publicKeysEqual(iss.Certificate.PublicKey, key.Public()) {
				t.Error("certificate key is not the CSR's")
			}
			tt.check(t, iss)
		})
	}
}

func FuzzParseCSR(f *testing.F) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	good := makeCSR(f, mustKey(f), nil)
	f.Add(good)
	f.Add(makeCSR(f, p384, &x509.CertificateRequest{URIs: []*url.URL{{Scheme: "spiffe", Host: "example.org", Path: "/x"}}}))
	f.Add(makeCSR(f, ed, nil))
	f.Add(makeCSR(f, p224, nil))
	f.Add(good[:len(good)/2])
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := ParseCSR(der)
		if err != nil {
			if !errors.Is(err, ErrBadCSR) || csr != nil {
				t.Fatalf("rejection %v is not ErrBadCSR alone", err)
			}
			return
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted a CSR whose signature does not verify: %v", err)
		}
		if err := checkPublicKey(csr.PublicKey); err != nil {
			t.Fatalf("accepted a CSR with a refused key: %v", err)
		}
		// Whatever was accepted turns into a request Issue can judge.
		req := RequestFromCSR(csr, "", 0)
		if req.PublicKey == nil {
			t.Fatal("request without a key")
		}
	})
}
