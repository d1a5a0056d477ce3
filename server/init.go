package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sigil-pki/sigil/ca"
	"github.com/sigil-pki/sigil/tlog"
)

// ErrAlreadyInitialized: Initialize found existing state.
//
//lint:ignore ST1005 Sigil is a proper noun and this text is shown to clients as is
var ErrAlreadyInitialized = errors.New("Sigil is already initialized")

// InitOptions tunes Initialize.
type InitOptions struct {
	// Shares and Threshold override the shamir seal's configured values when non-zero.
	Shares, Threshold int
	// OutDir receives root.pem, bundle.pem, operator.pem and
	// operator-key.pem. Default: the data directory.
	OutDir string
}

// InitResult is what Initialize hands the operator, once.
type InitResult struct {
	// Shares are the shamir unseal shares; nil for auto-unsealing seals.
	Shares    [][]byte
	Threshold int
	// Absolute paths of the files written.
	RootCA, Bundle, OperatorCert, OperatorKey string
	OperatorID                                string
}

// OperatorID is the SPIFFE ID that the admin API accepts.
func (s *Server) OperatorID() string { return "spiffe://" + s.cfg.TrustDomain + "/sigil/operator" }

// Initialize creates the barrier with its seal, the root (in the HSM when
// one is configured), the first intermediate, the HTTPS certificate and the
// operator identity. The server is unsealed afterwards.
func (s *Server) Initialize(ctx context.Context, o InitOptions) (*InitResult, error) {
	st, err := s.barrier.Status(ctx)
	if err != nil {
		return nil, err
	}
	if st.Initialized {
		return nil, ErrAlreadyInitialized
	}
	res := &InitResult{}
	switch s.cfg.Seal.Type {
	case "shamir":
		n, t := s.cfg.Seal.Shamir.Shares, s.cfg.Seal.Shamir.Threshold
		if o.Shares != 0 {
			n = o.Shares
		}
		if o.Threshold != 0 {
			t = o.Threshold
		}
		if t < 1 || t > n || n > 255 {
			return nil, fmt.Errorf("shamir: need 1 <= threshold (%d) <= shares (%d) <= 255", t, n)
		}
		res.Shares, err = s.barrier.InitShamir(ctx, n, t)
		res.Threshold = t
	default:
		w, werr := s.wrapper(ctx, true)
		if werr != nil {
			return nil, werr
		}
		err = s.barrier.InitWrapped(ctx, s.cfg.Seal.Type, w)
	}
	if err != nil {
		return nil, fmt.Errorf("initialising the barrier: %w", err)
	}
	if err := s.afterUnseal(ctx); err != nil {
		return nil, err
	}
	auth, err := s.Authority()
	if err != nil {
		return nil, err
	}
	if err := auth.Bootstrap(ctx); err != nil {
		return nil, fmt.Errorf("creating the root and intermediate: %w", err)
	}
	s.refreshTrust()
	if err := s.ensureTLS(ctx, auth); err != nil {
		return nil, fmt.Errorf("issuing the HTTPS certificate: %w", err)
	}
	out := o.OutDir
	if out == "" {
		out = s.cfg.DataDir
	}
	if err := s.writeTrustFiles(ctx, out, res); err != nil {
		return nil, err
	}
	if err := s.WriteOperatorIdentity(ctx, out, res); err != nil {
		return nil, err
	}
	if err := s.audit(ctx, tlog.Entry{Kind: tlog.KindOperatorInit, Actor: "operator",
		Subject: tlog.Subject{Detail: fmt.Sprintf("seal=%s root_in_hsm=%t", s.cfg.Seal.Type, s.token != nil)}}); err != nil {
		return nil, err
	}
	s.log.Info("Sigil initialised", "seal", s.cfg.Seal.Type, "root_in_hsm", s.token != nil)
	return res, nil
}

func (s *Server) writeTrustFiles(ctx context.Context, dir string, res *InitResult) error {
	auth, err := s.Authority()
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	res.RootCA = filepath.Join(abs, "root.pem")
	res.Bundle = filepath.Join(abs, "bundle.pem")
	if err := writeFile(res.RootCA, encodeCerts(auth.Roots()), 0o644); err != nil {
		return fmt.Errorf("writing root.pem: %w", err)
	}
	if err := writeFile(res.Bundle, encodeCerts(auth.Bundle()), 0o644); err != nil {
		return fmt.Errorf("writing bundle.pem: %w", err)
	}
	return nil
}

// WriteOperatorIdentity issues a fresh operator certificate with a new key
// and writes operator.pem (certificate and chain) and operator-key.pem into
// dir.
func (s *Server) WriteOperatorIdentity(ctx context.Context, dir string, res *InitResult) error {
	auth, err := s.Authority()
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	iss, err := auth.Issue(ctx, ca.Request{
		Profile:   ca.ProfileSVID,
		PublicKey: key.Public(),
		SPIFFEID:  s.OperatorID(),
		TTL:       s.cfg.CA.Leaf.MaxTTL.D(),
	})
	if err != nil {
		return fmt.Errorf("issuing the operator certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	res.OperatorCert = filepath.Join(abs, "operator.pem")
	res.OperatorKey = filepath.Join(abs, "operator-key.pem")
	res.OperatorID = s.OperatorID()
	if err := writeFile(res.OperatorKey, keyPEM, 0o600); err != nil {
		return fmt.Errorf("writing operator-key.pem: %w", err)
	}
	chain := append([]*x509.Certificate{iss.Certificate}, iss.Chain...)
	if err := writeFile(res.OperatorCert, encodeCerts(chain), 0o644); err != nil {
		return fmt.Errorf("writing operator.pem: %w", err)
	}
	return nil
}

// tlsHolder serves the HTTPS listener's current certificate.
type tlsHolder struct {
	cert atomic.Pointer[tls.Certificate]
}

func (h *tlsHolder) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := h.cert.Load()
	if c == nil {
		return nil, errors.New("no HTTPS certificate yet: initialise Sigil first")
	}
	return c, nil
}

func (s *Server) tlsPaths() (certPath, keyPath string) {
	return s.dataPath("tls.pem"), s.dataPath("tls-key.pem")
}

// loadTLSFromDisk serves the last HTTPS certificate while sealed.
func (s *Server) loadTLSFromDisk() error {
	certPath, keyPath := s.tlsPaths()
	c, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return err
	}
	s.tls.cert.Store(&c)
	return nil
}

// ensureTLS renews the HTTPS certificate when a third of its life is
// left. The listener's key stays in the data directory (mode 0600) so a
// sealed server can still speak TLS to accept unseal shares.
func (s *Server) ensureTLS(ctx context.Context, auth *ca.Authority) error {
	if !auth.Initialized() {
		return nil
	}
	s.tlsMu.Lock()
	defer s.tlsMu.Unlock()
	now := s.clock()
	if c := s.tls.cert.Load(); c != nil && c.Leaf != nil {
		life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
		if c.Leaf.NotAfter.Sub(now) > life/3 {
			return nil
		}
	}
	certPath, keyPath := s.tlsPaths()
	key, err := loadOrCreateKey(keyPath)
	if err != nil {
		return err
	}
	dns, ips := s.serverNames()
	iss, err := auth.Issue(ctx, ca.Request{
		Profile:     ca.ProfileTLSServer,
		PublicKey:   key.Public(),
		DNSNames:    dns,
		IPAddresses: ips,
		TTL:         s.cfg.CA.Leaf.MaxTTL.D(),
	})
	if err != nil {
		return err
	}
	chain := append([]*x509.Certificate{iss.Certificate}, iss.Chain...)
	if err := writeFile(certPath, encodeCerts(chain), 0o644); err != nil {
		return err
	}
	tc := tls.Certificate{PrivateKey: key, Leaf: iss.Certificate}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	s.tls.cert.Store(&tc)
	s.log.Info("HTTPS certificate issued", "serial", iss.Record.Serial, "not_after", iss.Certificate.NotAfter.Format(time.RFC3339))
	return nil
}

// serverNames splits the configured names into the DNS names the CA's name
// policy permits and IP addresses.
func (s *Server) serverNames() (dns []string, ips []net.IP) {
	for _, n := range s.cfg.Listen.ServerNames {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if permittedDNS(n, s.cfg.CA.DNSDomains) {
			dns = append(dns, n)
		} else {
			s.log.Warn("server name left out of the HTTPS certificate: outside ca.dns_domains", "name", n)
		}
	}
	return dns, ips
}

func permittedDNS(name string, domains []string) bool {
	for _, d := range domains {
		if name == d || strings.HasSuffix(name, "."+d) {
			return true
		}
	}
	return false
}

func loadOrCreateKey(path string) (*ecdsa.PrivateKey, error) {
	if b, err := os.ReadFile(path); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s: no PEM block", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s: not an ECDSA key", path)
		}
		return ek, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	b, err := encodeKey(k)
	if err != nil {
		return nil, err
	}
	return k, writeFile(path, b, 0o600)
}

func encodeKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	defer clear(der)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func encodeCerts(certs []*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}
