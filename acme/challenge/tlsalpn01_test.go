package challenge_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/acme/challenge"
)

var oidACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// acmeExtension is an acmeIdentifier extension for keyAuthorization.
func acmeExtension(t *testing.T, keyAuthorization string, critical bool) pkix.Extension {
	t.Helper()
	sum := sha256.Sum256([]byte(keyAuthorization))
	value, err := asn1.Marshal(sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidACMEIdentifier, Critical: critical, Value: value}
}

// alpnCert is a self-signed certificate from tmpl, per RFC 8737 §3 when
// tmpl names the identifier and carries acmeExtension.
func alpnCert(t *testing.T, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(1)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// hello is what an alpnServer saw of a ClientHello.
type hello struct {
	serverName string
	protos     []string
}

type alpnServer struct {
	port   int
	mu     sync.Mutex
	hellos []hello
}

func (s *alpnServer) last() hello {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.hellos) == 0 {
		return hello{}
	}
	return s.hellos[len(s.hellos)-1]
}

// startALPN serves cfg's TLS on l (127.0.0.1 if nil) until the test ends,
// recording each ClientHello.
func startALPN(t *testing.T, l net.Listener, cfg *tls.Config) *alpnServer {
	t.Helper()
	if l == nil {
		var err error
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	s := &alpnServer{port: portOf(t, l.Addr())}
	cfg = cfg.Clone()
	cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		s.mu.Lock()
		s.hellos = append(s.hellos, hello{h.ServerName, slices.Clone(h.SupportedProtos)})
		s.mu.Unlock()
		return nil, nil
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				tc := tls.Server(conn, cfg)
				if tc.HandshakeContext(ctx) == nil {
					// Let the client read the certificate; it closes first.
					conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					tc.Read(make([]byte, 1))
				}
			})
		}
	})
	return s
}

func TestTLSALPN01(t *testing.T) {
	const name = "web.example.test"
	id := challenge.Identifier{Type: "dns", Value: name}
	good := acmeExtension(t, keyAuth, true)
	acmeOnly := []string{challenge.ALPNProtocol}

	for _, tc := range []struct {
		name   string
		tmpl   *x509.Certificate
		protos []string
		maxVer uint16
		want   string
	}{
		{"good", &x509.Certificate{DNSNames: []string{name}, ExtraExtensions: []pkix.Extension{good}}, acmeOnly, 0, ""},
		{"good, TLS 1.2", &x509.Certificate{DNSNames: []string{name}, ExtraExtensions: []pkix.Extension{good}}, acmeOnly, tls.VersionTLS12, ""},
		{"good, SAN in upper case", &x509.Certificate{DNSNames: []string{strings.ToUpper(name)}, ExtraExtensions: []pkix.Extension{good}}, acmeOnly, 0, ""},
		{"no ALPN", &x509.Certificate{DNSNames: []string{name}, ExtraExtensions: []pkix.Extension{good}}, nil, 0, challenge.ProblemIncorrectResponse},
		{"only TLS 1.1", &x509.Certificate{DNSNames: []string{name}, ExtraExtensions: []pkix.Extension{good}}, acmeOnly, tls.VersionTLS11, challenge.ProblemTLS},
		{"no acmeIdentifier", &x509.Certificate{DNSNames: []string{name}}, acmeOnly, 0, challenge.ProblemIncorrectResponse},
		{"acmeIdentifier not critical", &x509.Certificate{DNSNames: []string{name}, ExtraExtensions: []pkix.Extension{acmeExtension(t, keyAuth, false)}}, acmeOnly, 0, challenge.ProblemIncorrectResponse},
		{"wrong digest", &x509.Certificate{DNSNames: []string{name}, ExtraExtensions: []pkix.Extension{acmeExtension(t, "other.key", true)}}, acmeOnly, 0, challenge.ProblemIncorrectResponse},
		{"digest not in an OCTET STRING", &x509.Certificate{DNSNames: []string{name}, ExtraExtensions: []pkix.Extension{{Id: oidACMEIdentifier, Critical: true, Value: good.Value[2:]}}}, acmeOnly, 0, challenge.ProblemIncorrectResponse},
		{"digest too short", &x509.Certificate{DNSNames: []string{name}, ExtraExtensions: []pkix.Extension{{Id: oidACMEIdentifier, Critical: true, Value: append([]byte{4, 31}, good.Value[2:33]...)}}}, acmeOnly, 0, challenge.ProblemIncorrectResponse},
		{"extra DNS SAN", &x509.Certificate{DNSNames: []string{name, "other.example.test"}, ExtraExtensions: []pkix.Extension{good}}, acmeOnly, 0, challenge.ProblemIncorrectResponse},
		{"extra email SAN", &x509.Certificate{DNSNames: []string{name}, EmailAddresses: []string{"a@example.test"}, ExtraExtensions: []pkix.Extension{good}}, acmeOnly, 0, challenge.ProblemIncorrectResponse},
		{"other name", &x509.Certificate{DNSNames: []string{"other.example.test"}, ExtraExtensions: []pkix.Extension{good}}, acmeOnly, 0, challenge.ProblemIncorrectResponse},
		{"IP SAN for a name", &x509.Certificate{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtraExtensions: []pkix.Extension{good}}, acmeOnly, 0, challenge.ProblemIncorrectResponse},
		{"no SAN", &x509.Certificate{Subject: pkix.Name{CommonName: name}, ExtraExtensions: []pkix.Extension{good}}, acmeOnly, 0, challenge.ProblemIncorrectResponse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startALPN(t, nil, &tls.Config{
				Certificates: []tls.Certificate{alpnCert(t, tc.tmpl)},
				NextProtos:   tc.protos,
				MaxVersion:   tc.maxVer,
			})
			v := newValidator(t, challenge.Config{TLSPort: srv.port, LookupIP: lookupTest, AllowLoopback: true, Timeout: 5 * time.Second})
			checkProblem(t, v.TLSALPN01(t.Context(), id, keyAuth), tc.want)
			h := srv.last()
			if tc.maxVer != tls.VersionTLS11 && (h.serverName != name || !slices.Equal(h.protos, acmeOnly)) {
				t.Errorf("ClientHello had SNI %q, ALPN %q; want %q, %q", h.serverName, h.protos, name, acmeOnly)
			}
		})
	}
}

func TestTLSALPN01IP(t *testing.T) {
	for _, tc := range []struct {
		ip, network, sni string
	}{
		{"127.0.0.1", "tcp4", "1.0.0.127.in-addr.arpa"},
		{"::1", "tcp6", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa"},
	} {
		t.Run(tc.ip, func(t *testing.T) {
			var l net.Listener
			if tc.network == "tcp6" {
				l = listen6(t)
			}
			ip := net.ParseIP(tc.ip)
			srv := startALPN(t, l, &tls.Config{
				Certificates: []tls.Certificate{alpnCert(t, &x509.Certificate{IPAddresses: []net.IP{ip}, ExtraExtensions: []pkix.Extension{acmeExtension(t, keyAuth, true)}})},
				NextProtos:   []string{challenge.ALPNProtocol},
			})
			v := newValidator(t, challenge.Config{TLSPort: srv.port, AllowLoopback: true})
			checkProblem(t, v.TLSALPN01(t.Context(), challenge.Identifier{Type: "ip", Value: tc.ip}, keyAuth), "")
			if got := srv.last().serverName; got != tc.sni {
				t.Errorf("SNI %q, want %q", got, tc.sni)
			}
		})
	}

	t.Run("dNSName with the IP's text", func(t *testing.T) {
		srv := startALPN(t, nil, &tls.Config{
			Certificates: []tls.Certificate{alpnCert(t, &x509.Certificate{DNSNames: []string{"127.0.0.1"}, ExtraExtensions: []pkix.Extension{acmeExtension(t, keyAuth, true)}})},
			NextProtos:   []string{challenge.ALPNProtocol},
		})
		v := newValidator(t, challenge.Config{TLSPort: srv.port, AllowLoopback: true})
		checkProblem(t, v.TLSALPN01(t.Context(), challenge.Identifier{Type: "ip", Value: "127.0.0.1"}, keyAuth), challenge.ProblemIncorrectResponse)
	})
}

func TestTLSALPN01Connection(t *testing.T) {
	id := challenge.Identifier{Type: "dns", Value: "web.example.test"}

	t.Run("refused", func(t *testing.T) {
		v := newValidator(t, challenge.Config{TLSPort: closedPort(t), LookupIP: lookupTest, AllowLoopback: true})
		checkProblem(t, v.TLSALPN01(t.Context(), id, keyAuth), challenge.ProblemConnection)
	})

	t.Run("not TLS", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		t.Cleanup(func() { l.Close(); wg.Wait() })
		wg.Go(func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				conn.Write([]byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"))
				conn.Close()
			}
		})
		v := newValidator(t, challenge.Config{TLSPort: portOf(t, l.Addr()), LookupIP: lookupTest, AllowLoopback: true})
		checkProblem(t, v.TLSALPN01(t.Context(), id, keyAuth), challenge.ProblemTLS)
	})

	t.Run("silent", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() }) // the accept queue holds the connection
		const timeout = 300 * time.Millisecond
		v := newValidator(t, challenge.Config{TLSPort: portOf(t, l.Addr()), LookupIP: lookupTest, AllowLoopback: true, Timeout: timeout})
		start := time.Now()
		p := v.TLSALPN01(t.Context(), id, keyAuth)
		elapsed := time.Since(start)
		checkProblem(t, p, challenge.ProblemConnection)
		if elapsed < timeout || elapsed > timeout+2*time.Second {
			t.Errorf("took %v with Timeout %v", elapsed, timeout)
		}
	})
}
