package acme

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestCheckCSR(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	ids := []ID{{"dns", "a.localhost"}, {"dns", "b.localhost"}}
	tests := []struct {
		name string
		key  crypto.Signer
		tmpl x509.CertificateRequest
		want string // "" for accepted, else a substring of the badCSR detail
	}{
		{"exact names", ec, x509.CertificateRequest{DNSNames: []string{"b.localhost", "a.localhost"}}, ""},
		{"names and a common name among them", ec, x509.CertificateRequest{Subject: pkix.Name{CommonName: "a.localhost"}, DNSNames: []string{"a.localhost", "b.localhost"}}, ""},
		{"an extra name", ec, x509.CertificateRequest{DNSNames: []string{"a.localhost", "b.localhost", "c.localhost"}}, `names "c.localhost"`},
		{"a missing name", ec, x509.CertificateRequest{DNSNames: []string{"a.localhost"}}, `does not name "b.localhost"`},
		{"a common name outside the order", ec, x509.CertificateRequest{Subject: pkix.Name{CommonName: "x.localhost"}, DNSNames: []string{"a.localhost", "b.localhost"}}, "common name"},
		{"an IP address the order does not name", ec, x509.CertificateRequest{DNSNames: []string{"a.localhost", "b.localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}, "names 127.0.0.1"},
		{"RSA 1024", weak, x509.CertificateRequest{DNSNames: []string{"a.localhost", "b.localhost"}}, "2048 bits"},
		{"P-521", p521, x509.CertificateRequest{DNSNames: []string{"a.localhost", "b.localhost"}}, "P-256 or P-384"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			der, err := x509.CreateCertificateRequest(rand.Reader, &tc.tmpl, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			_, names, _, err := checkCSR(der, ids)
			if tc.want == "" {
				if err != nil || strings.Join(names, ",") != "a.localhost,b.localhost" {
					t.Fatalf("checkCSR = %v, %v", names, err)
				}
				return
			}
			p, ok := err.(*Problem)
			if !ok || p.Type != errNS+"badCSR" || !strings.Contains(p.Detail, tc.want) {
				t.Fatalf("checkCSR error %v, want badCSR about %q", err, tc.want)
			}
		})
	}
	if _, _, _, err := checkCSR([]byte("not a CSR"), ids); err == nil {
		t.Error("garbage accepted")
	}
}

// FuzzCheckCSR: arbitrary bytes as a CSR never panic, and anything
// accepted names exactly the order's identifiers.
func FuzzCheckCSR(f *testing.F) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"a.localhost"}}, ec)
	f.Add(good)
	f.Add([]byte{0x30, 0x00})
	ids := []ID{{"dns", "a.localhost"}}
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, names, _, err := checkCSR(der, ids)
		if err != nil {
			if _, ok := err.(*Problem); !ok {
				t.Fatalf("error %T is not a problem", err)
			}
			return
		}
		if csr == nil || len(names) != 1 || names[0] != "a.localhost" {
			t.Fatalf("accepted %v", names)
		}
	})
}

func TestCheckCSRWithIPs(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ids := []ID{{"ip", "127.0.0.1"}, {"dns", "a.localhost"}}
	for _, tc := range []struct {
		name string
		tmpl x509.CertificateRequest
		ok   bool
	}{
		{"both", x509.CertificateRequest{Subject: pkix.Name{CommonName: "127.0.0.1"}, DNSNames: []string{"a.localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}, true},
		{"the IP missing", x509.CertificateRequest{DNSNames: []string{"a.localhost"}}, false},
		{"another IP", x509.CertificateRequest{DNSNames: []string{"a.localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.2")}}, false},
	} {
		der, _ := x509.CreateCertificateRequest(rand.Reader, &tc.tmpl, ec)
		_, _, ips, err := checkCSR(der, ids)
		if (err == nil) != tc.ok || (tc.ok && (len(ips) != 1 || !ips[0].Equal(net.ParseIP("127.0.0.1")))) {
			t.Errorf("%s: ips %v, err %v", tc.name, ips, err)
		}
	}
}

func TestCheckIdentifier(t *testing.T) {
	s := &Server{cfg: Config{Domains: []string{"localhost"}, IPRanges: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}}
	for _, tc := range []struct {
		id   ID
		want string // "" accepted, else the problem type
	}{
		{ID{"dns", "a.localhost"}, ""},
		{ID{"dns", "*.a.localhost"}, ""},
		{ID{"dns", "localhost"}, ""},
		{ID{"dns", "A.localhost"}, "rejectedIdentifier"},
		{ID{"dns", "a..localhost"}, "rejectedIdentifier"},
		{ID{"dns", "example.com"}, "rejectedIdentifier"},
		{ID{"dns", "127.0.0.1"}, "rejectedIdentifier"},
		{ID{"ip", "127.0.0.9"}, ""},
		{ID{"ip", "10.0.0.1"}, "rejectedIdentifier"},
		{ID{"ip", "::ffff:127.0.0.1"}, "rejectedIdentifier"},
		{ID{"ip", "127.000.0.1"}, "malformed"},
		{ID{"email", "a@b"}, "unsupportedIdentifier"},
	} {
		err := s.checkIdentifier(tc.id)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%v refused: %v", tc.id, err)
			}
			continue
		}
		if p, ok := err.(*Problem); !ok || p.Type != errNS+tc.want {
			t.Errorf("%v: %v, want %s", tc.id, err, tc.want)
		}
	}
}
