package server

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/sigil-pki/sigil/acme"
	"github.com/sigil-pki/sigil/acme/challenge"
	"github.com/sigil-pki/sigil/ca"
	"github.com/sigil-pki/sigil/storage"
	"github.com/sigil-pki/sigil/tlog"
)

// newACME builds the ACME server over this server's CA.
func (s *Server) newACME() error {
	a := s.cfg.ACME
	loopback := a.LoopbackNames
	v, err := challenge.New(challenge.Config{
		HTTPPort: a.HTTPPort,
		TLSPort:  a.TLSPort,
		Resolver: a.DNSResolver,
		LookupIP: func(ctx context.Context, host string) ([]netip.Addr, error) {
			for _, suffix := range loopback {
				if host == suffix || strings.HasSuffix(host, "."+suffix) {
					return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
				}
			}
			return nil, nil
		},
		AllowLoopback: len(loopback) > 0,
	})
	if err != nil {
		return fmt.Errorf("acme: %w", err)
	}
	s.acme = acme.New(acme.Config{
		Store:          s.store,
		Issuer:         acmeIssuer{s},
		Validator:      v,
		BaseURL:        s.cfg.Listen.HTTPSURL,
		Domains:        s.cfg.CA.DNSDomains,
		CertTTL:        a.CertTTL.D(),
		TermsOfService: a.TermsOfService,
		Website:        a.Website,
		Clock:          s.clock,
		Logger:         s.log,
	})
	return nil
}

// acmeIssuer issues, finds and revokes ACME certificates through the CA,
// so each is recorded and logged before it is handed out.
type acmeIssuer struct{ s *Server }

func (i acmeIssuer) IssueACME(ctx context.Context, csr *x509.CertificateRequest, dns []string, ips []net.IP, ttl time.Duration, account string) (*x509.Certificate, []*x509.Certificate, error) {
	auth, err := i.s.Authority()
	if err != nil {
		return nil, nil, err
	}
	iss, err := auth.Issue(context.WithValue(ctx, callerKey{}, account), ca.Request{
		Profile: ca.ProfileTLSServer, PublicKey: csr.PublicKey, DNSNames: dns, IPAddresses: ips, TTL: ttl,
	})
	if err != nil {
		return nil, nil, err
	}
	return iss.Certificate, iss.Chain, nil
}

func parseSerial(serial string) (string, error) {
	n, ok := new(big.Int).SetString(serial, 16)
	if !ok || n.Sign() <= 0 {
		return "", storage.ErrNotFound
	}
	return ca.Serial(n), nil
}

func (i acmeIssuer) Certificate(ctx context.Context, serial string) (*x509.Certificate, []*x509.Certificate, error) {
	auth, err := i.s.Authority()
	if err != nil {
		return nil, nil, err
	}
	sn, err := parseSerial(serial)
	if err != nil {
		return nil, nil, err
	}
	rec, err := auth.Certificate(ctx, sn)
	if err != nil {
		return nil, nil, err
	}
	leaf, err := x509.ParseCertificate(rec.DER)
	if err != nil {
		return nil, nil, err
	}
	var chain []*x509.Certificate
	if c, ok := auth.IssuerCert(rec.IssuerID); ok {
		chain = append(chain, c)
	}
	return leaf, chain, nil
}

func (i acmeIssuer) Revoke(ctx context.Context, serial string, reason int) error {
	auth, err := i.s.Authority()
	if err != nil {
		return err
	}
	sn, err := parseSerial(serial)
	if err != nil {
		return err
	}
	rec, err := auth.Revoke(ctx, sn, reason)
	if errors.Is(err, ca.ErrAlreadyRevoked) {
		return storage.ErrConflict
	}
	if err != nil {
		return err
	}
	i.s.metrics.revoked.Inc()
	i.s.markRevoked(rec.Serial)
	return i.s.audit(ctx, tlog.Entry{Kind: tlog.KindCertRevoke, Actor: "acme", Subject: tlog.Subject{
		Serial: rec.Serial, CertSHA256: sha256.Sum256(rec.DER), Detail: ReasonName(reason)}})
}
