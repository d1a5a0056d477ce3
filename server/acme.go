package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/sigil-pki/sigil/acme"
	"github.com/sigil-pki/sigil/acme/challenge"
	"github.com/sigil-pki/sigil/acme/jws"
	"github.com/sigil-pki/sigil/ca"
	"github.com/sigil-pki/sigil/identity/entry"
	"github.com/sigil-pki/sigil/storage"
	"github.com/sigil-pki/sigil/tlog"
)

// newACME builds the ACME server over this server's CA.
func (s *Server) newACME() error {
	a := s.cfg.ACME
	v, err := challenge.New(challenge.Config{
		HTTPPort:      a.HTTPPort,
		TLSPort:       a.TLSPort,
		Resolver:      a.DNSResolver,
		LookupIP:      loopbackLookup(a.LoopbackNames, a.DNSResolver),
		AllowLoopback: len(a.LoopbackNames) > 0,
	})
	if err != nil {
		return fmt.Errorf("acme: %w", err)
	}
	var ranges []netip.Prefix
	for _, r := range a.IPRanges {
		ranges = append(ranges, netip.MustParsePrefix(r))
	}
	s.acme = acme.New(acme.Config{
		IPRanges:            ranges,
		OrdersPerAccount:    a.OrdersPerAccount,
		OrdersPerIdentifier: a.OrdersPerIdentifier,
		Store:               s.store,
		Issuer:              acmeIssuer{s},
		Validator:           v,
		BaseURL:             s.cfg.Listen.HTTPSURL,
		Domains:             s.cfg.CA.DNSDomains,
		CertTTL:             a.CertTTL.D(),
		ValidationWait:      a.ValidationWait.D(),
		TermsOfService:      a.TermsOfService,
		EABRequired:         a.EABRequired,
		EABKey:              s.eabKey,
		EABBinding:          s.eabBinding,
		Website:             a.Website,
		Clock:               s.clock,
		Logger:              s.log,
	})
	return nil
}

// loopbackLookup resolves names under the loopback suffixes (development)
// to 127.0.0.1 and every other name as the validator would: through
// resolver when set, the system's resolver otherwise. With no suffixes it
// is nil, and the validator resolves on its own.
func loopbackLookup(suffixes []string, resolver string) func(context.Context, string) ([]netip.Addr, error) {
	if len(suffixes) == 0 {
		return nil
	}
	r := net.DefaultResolver
	if resolver != "" {
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, resolver)
		}}
	}
	return func(ctx context.Context, host string) ([]netip.Addr, error) {
		for _, suffix := range suffixes {
			if host == suffix || strings.HasSuffix(host, "."+suffix) {
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			}
		}
		return r.LookupNetIP(ctx, "ip", host)
	}
}

// acmeIssuer issues, finds and revokes ACME certificates through the CA,
// so each is recorded and logged before it is handed out.
type acmeIssuer struct{ s *Server }

func (i acmeIssuer) IssueACME(ctx context.Context, csr *x509.CertificateRequest, dns []string, ips []net.IP, spiffeID string, ttl time.Duration, account string) (*x509.Certificate, []*x509.Certificate, error) {
	auth, err := i.s.Authority()
	if err != nil {
		return nil, nil, err
	}
	profile := ca.ProfileTLSServer
	if spiffeID != "" {
		profile = ca.ProfileSVID
	}
	iss, err := auth.Issue(context.WithValue(ctx, callerKey{}, account), ca.Request{
		Profile: profile, SPIFFEID: spiffeID, PublicKey: csr.PublicKey, DNSNames: dns, IPAddresses: ips, TTL: ttl,
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

func (i acmeIssuer) AlternateChains(chain []*x509.Certificate) [][]*x509.Certificate {
	auth, err := i.s.Authority()
	if err != nil {
		return nil
	}
	return auth.AlternateChains(chain)
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

func (i acmeIssuer) Revoked(ctx context.Context, serial string) bool {
	sn, err := parseSerial(serial)
	if err != nil {
		return false
	}
	rec, err := i.s.store.GetCertificate(ctx, sn)
	return err == nil && rec.Revoked()
}

// eabName is where an EAB key's MAC key is sealed under the barrier.
func eabName(keyID string) string { return "acme/eab/" + keyID }

// eabRecord is an EAB key as sealed under the barrier.
type eabRecord struct {
	Key      []byte   `json:"key"`
	SPIFFEID string   `json:"spiffe_id,omitempty"`
	Domains  []string `json:"domains,omitempty"`
}

func (s *Server) eabRecord(ctx context.Context, keyID string) (eabRecord, error) {
	if keyID == "" || strings.ContainsAny(keyID, "/ ") {
		return eabRecord{}, jws.ErrNotFound
	}
	b, err := s.barrier.Get(ctx, eabName(keyID))
	if errors.Is(err, storage.ErrNotFound) {
		return eabRecord{}, fmt.Errorf("EAB key %s: %w", keyID, jws.ErrNotFound)
	}
	if err != nil {
		return eabRecord{}, err
	}
	defer clear(b)
	var rec eabRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return eabRecord{}, fmt.Errorf("decoding EAB key %s: %w", keyID, err)
	}
	return rec, nil
}

// eabKey looks up an EAB key's MAC key for the ACME server.
func (s *Server) eabKey(ctx context.Context, keyID string) ([]byte, error) {
	rec, err := s.eabRecord(ctx, keyID)
	return rec.Key, err
}

// eabBinding returns what an EAB key binds its accounts to.
func (s *Server) eabBinding(ctx context.Context, keyID string) (acme.EABBinding, error) {
	rec, err := s.eabRecord(ctx, keyID)
	return acme.EABBinding{SPIFFEID: rec.SPIFFEID, Domains: rec.Domains}, err
}

// EABKey is a new external account binding key, shown once.
type EABKey struct {
	KeyID   string `json:"key_id"`
	HMACKey string `json:"hmac_key"` // base64url, as certbot and lego take it
	// SPIFFEID binds the key's accounts to this identity (x509-svid profile).
	SPIFFEID string `json:"spiffe_id,omitempty"`
	// Domains, when set, are the only DNS names (each and every name
	// under it) the key's accounts may order.
	Domains []string `json:"domains,omitempty"`
}

// EABRequest is the body of POST /v1/acme/eab.
type EABRequest struct {
	SPIFFEID string   `json:"spiffe_id,omitempty"`
	Domains  []string `json:"domains,omitempty"`
}

// CreateEAB makes an external account binding key: 32 random bytes sealed
// under the barrier, optionally binding its accounts to a SPIFFE ID (which
// lets them order the x509-svid profile) and to domains (the only names
// they may order), and logs its creation (never the key).
func (s *Server) CreateEAB(ctx context.Context, req EABRequest) (EABKey, error) {
	spiffeID := req.SPIFFEID
	if spiffeID != "" {
		if err := validateEABSPIFFEID(spiffeID, s.cfg.TrustDomain); err != nil {
			return EABKey{}, err
		}
	}
	domains, err := s.validateEABDomains(req.Domains)
	if err != nil {
		return EABKey{}, err
	}
	id := make([]byte, 12)
	key := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return EABKey{}, err
	}
	if _, err := rand.Read(key); err != nil {
		return EABKey{}, err
	}
	kid := base64.RawURLEncoding.EncodeToString(id)
	detail := "EAB key created"
	if spiffeID != "" {
		detail += " for " + spiffeID
	}
	if len(domains) > 0 {
		detail += " limited to " + strings.Join(domains, ",")
	}
	if err := s.audit(ctx, tlog.Entry{Kind: tlog.KindPolicyChange, Subject: tlog.Subject{Path: "acme/eab/" + kid,
		Detail: detail}}); err != nil {
		return EABKey{}, err
	}
	rec, _ := json.Marshal(eabRecord{Key: key, SPIFFEID: spiffeID, Domains: domains})
	defer clear(rec)
	if err := s.barrier.Put(ctx, eabName(kid), rec); err != nil {
		return EABKey{}, err
	}
	return EABKey{KeyID: kid, HMACKey: base64.RawURLEncoding.EncodeToString(key), SPIFFEID: spiffeID, Domains: domains}, nil
}

// validateEABDomains checks the domains an EAB key limits its accounts
// to: lowercase DNS names (a trailing dot dropped), each inside the
// domains the server issues for; duplicates are dropped.
func (s *Server) validateEABDomains(in []string) ([]string, error) {
	var out []string
	for _, d := range in {
		d = strings.TrimSuffix(strings.TrimSpace(d), ".")
		if !acme.ValidDNSName(d) {
			return nil, fmt.Errorf("%w: domain %q is not a lowercase DNS name (a domain covers every name under it; give it without \"*.\")", errBadRequest, d)
		}
		if !slices.ContainsFunc(s.cfg.CA.DNSDomains, func(top string) bool { return d == top || strings.HasSuffix(d, "."+top) }) {
			return nil, fmt.Errorf("%w: domain %q is outside ca.dns_domains (%s)", errBadRequest, d, strings.Join(s.cfg.CA.DNSDomains, ", "))
		}
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out, nil
}

// validateEABSPIFFEID accepts a SPIFFE ID of the trust domain outside the
// reserved /sigil path.
func validateEABSPIFFEID(id, td string) error {
	e := entry.Entry{ID: strings.Repeat("0", 32), SPIFFEID: id, Selectors: []string{"unix:uid:0"}}
	if err := e.Validate(td, 0); err != nil {
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return nil
}

// errBadRequest marks an admin request that is wrong.
var errBadRequest = errors.New("bad request")

func (s *Server) handleCreateEAB(w http.ResponseWriter, r *http.Request) {
	var req EABRequest
	if r.ContentLength != 0 && !decodeBody(w, r, &req) {
		return
	}
	k, err := s.CreateEAB(r.Context(), req)
	if errors.Is(err, errBadRequest) {
		writeErrors(w, http.StatusBadRequest, err.Error())
		return
	}
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, k)
}
