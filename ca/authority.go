package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigil-pki/sigil/storage"
)

// Store is the part of Sigil's storage the authority uses. Every method is
// safe for concurrent use, and a write is durable when it returns nil.
type Store interface {
	// PutIssuer creates or replaces an issuer by ID.
	PutIssuer(ctx context.Context, iss storage.Issuer) error
	// ListIssuers returns every issuer, oldest NotBefore first.
	ListIssuers(ctx context.Context) ([]storage.Issuer, error)
	// InsertCertificates records certificates in one transaction, all or
	// none; a serial already present is storage.ErrConflict. Seq is ignored.
	InsertCertificates(ctx context.Context, certs []storage.Certificate) error
	// GetCertificate returns the certificate with the serial (lowercase hex,
	// no leading zeros) or storage.ErrNotFound.
	GetCertificate(ctx context.Context, serial string) (storage.Certificate, error)
	// ListCertificates returns the certificates the filter selects, in Seq
	// order, at most f.Limit (0 means 100, never above 1000).
	ListCertificates(ctx context.Context, f storage.CertificateFilter) ([]storage.Certificate, error)
	// RevokeCertificate marks a certificate revoked and returns it as now
	// stored: storage.ErrNotFound for an unknown serial, storage.ErrConflict
	// when it is already revoked (the stored revocation is kept).
	RevokeCertificate(ctx context.Context, serial string, at time.Time, reason int) (storage.Certificate, error)
	// NextCRLNumber atomically increments and returns the issuer's CRL
	// number, starting at 1.
	NextCRLNumber(ctx context.Context, issuerID string) (int64, error)
	// PutCRL stores crl as the issuer's latest; storage.ErrConflict (and the
	// stored CRL kept) when one with a higher or equal number is present.
	PutCRL(ctx context.Context, crl storage.CRL) error
	// GetCRL returns the issuer's latest CRL or storage.ErrNotFound.
	GetCRL(ctx context.Context, issuerID string) (storage.CRL, error)
}

// KeyStore holds issuer private keys. The returned signers MUST be safe for
// concurrent use: the active intermediate's signer is used by every
// issuance and OCSP signature at once.
type KeyStore interface {
	// Generate creates and durably stores a new key for purpose "root" or
	// "intermediate" and returns it with the KeyRef to record in
	// storage.Issuer.
	Generate(ctx context.Context, purpose string) (crypto.Signer, string, error)
	// Signer returns the key a KeyRef names.
	Signer(ctx context.Context, keyRef string) (crypto.Signer, error)
}

// Recorder is told about every certificate the authority issues, after the
// certificate is stored and before it is handed out, and about every CRL
// before it is published. An error fails the issuance (the certificate is
// not returned) or the publication (the CRL is not stored; the previous one
// stays in force and a later refresh tries again).
type Recorder interface {
	RecordIssuance(ctx context.Context, cert storage.Certificate) error
	RecordCRL(ctx context.Context, crl storage.CRL) error
}

// Config configures an Authority. Zero durations, names and rates take the
// defaults named on each field.
type Config struct {
	// Store persists issuers, certificates and CRLs. Required.
	Store Store
	// Keys holds the issuers' private keys. Required.
	Keys KeyStore
	// Recorder, when set, must accept every issued certificate (leaves and
	// intermediates) before it is handed out.
	Recorder Recorder

	// TrustDomain is the SPIFFE trust domain, e.g. "example.org". Required.
	TrustDomain string
	// DNSDomains are the DNS name constraints of every intermediate and the
	// issuance name policy: leaves may carry these names and names under
	// them. Empty means no DNS name is issued (the constraint then permits
	// only the reserved "invalid" domain).
	DNSDomains []string
	// PublicURL is the base of the public listener, e.g.
	// "http://127.0.0.1:8080". Leaves carry OCSP PublicURL+"/ocsp", CA issuers
	// PublicURL+"/ca/<issuerID>.crt" and CRL PublicURL+"/crl/<issuerID>.crl"
	// naming their issuer; intermediates name the root. Required.
	PublicURL string

	// RootCommonName defaults to "Sigil Root CA".
	RootCommonName string
	// IntermediateCommonName defaults to "Sigil Intermediate CA". Each
	// intermediate's subject also carries its issuer ID as serialNumber, so
	// that overlapping intermediates have distinct names.
	IntermediateCommonName string
	// RootTTL defaults to 87600h (10 years).
	RootTTL time.Duration
	// IntermediateTTL defaults to 2160h (90 days); capped at the root's expiry.
	IntermediateTTL time.Duration
	// RotateBefore defaults to 720h; must be below IntermediateTTL.
	RotateBefore time.Duration
	// DefaultTTL applies to requests without a TTL; defaults to 1h.
	DefaultTTL time.Duration
	// MaxTTL caps requests; defaults to 24h.
	MaxTTL time.Duration
	// CRLValidity is nextUpdate-thisUpdate of CRLs; defaults to 24h.
	CRLValidity time.Duration
	// CRLRefresh is the age at which a CRL is regenerated; defaults to 1h.
	CRLRefresh time.Duration
	// OCSPValidity is nextUpdate-thisUpdate of OCSP responses; defaults to 24h.
	OCSPValidity time.Duration
	// OCSPRefreshBefore: a cached response is re-signed when less than this
	// is left before its nextUpdate; defaults to 12h, below OCSPValidity.
	OCSPRefreshBefore time.Duration
	// OCSPNonceRate caps the freshly signed nonce-echoing OCSP responses per
	// second across all clients; defaults to 50.
	OCSPNonceRate int

	// Clock defaults to time.Now.
	Clock func() time.Time
	// Rand supplies serial numbers and signing randomness; defaults to
	// crypto/rand.Reader. Calls are serialised, so it need not be safe for
	// concurrent use.
	Rand io.Reader
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrNotInitialized: Bootstrap has not run, so there is nothing to issue with.
	ErrNotInitialized = errors.New("ca: not initialized")
	// ErrAlreadyInitialized: Bootstrap found a root and an active intermediate.
	ErrAlreadyInitialized = errors.New("ca: already initialized")
	// ErrPolicy: the request asks for something the profile or the name
	// policy does not allow; the message names the offending value.
	ErrPolicy = errors.New("ca: refused by policy")
	// ErrBadCSR: the CSR cannot be parsed, its signature does not verify, or
	// its key is not an allowed type and size.
	ErrBadCSR = errors.New("ca: bad certificate signing request")
	// ErrTTL: the requested lifetime is negative or above the maximum.
	ErrTTL = errors.New("ca: requested lifetime not allowed")
	// ErrUnknownProfile: the request names a profile that does not exist.
	ErrUnknownProfile = errors.New("ca: unknown profile")
	// ErrAlreadyRevoked: the certificate was revoked before.
	ErrAlreadyRevoked = errors.New("ca: certificate already revoked")
	// ErrNotFound: no such certificate or issuer.
	ErrNotFound = errors.New("ca: not found")
)

// Issuer kinds as stored in storage.Issuer.Kind.
const (
	kindRoot         = "root"
	kindIntermediate = "intermediate"
)

// clockSkew backdates NotBefore so that relying parties whose clocks lag
// slightly still accept a fresh certificate.
const clockSkew = time.Minute

// Authority is the certificate authority. It is safe for concurrent use.
type Authority struct {
	cfg        Config
	log        *slog.Logger
	now        func() time.Time
	rand       io.Reader
	publicURL  string
	dnsDomains []string

	// set is the current issuer set, replaced whole (copy on write) so that
	// the issuance path reads it without locking.
	set atomic.Pointer[issuerSet]
	// mu serialises changes to the issuer set: bootstrap, rotation and the
	// revocation of intermediates.
	mu sync.Mutex

	commit *committer
	ocsp   *responder
}

// issuer is one CA certificate with its key and everything derived from it
// that the hot paths need.
type issuer struct {
	id     string
	kind   string
	rec    storage.Issuer
	cert   *x509.Certificate
	signer crypto.Signer // nil when the issuer had expired at load

	// revoked is set when the issuer (an intermediate) has been revoked.
	revoked atomic.Bool

	// What certificates signed by this issuer point at.
	ocspURLs   []string
	issuerURLs []string
	crlURLs    []string

	// certIDKeys are the OCSP CertID lookup keys (hash, name and key hash)
	// under SHA-1 and SHA-256.
	certIDKeys []string

	// crlMu serialises CRL generation for this issuer; crlDirty is set when
	// a revocation could not be published and the CRL must be regenerated.
	crlMu    sync.Mutex
	crlDirty atomic.Bool
}

func (i *issuer) expiredAt(t time.Time) bool { return !t.Before(i.cert.NotAfter) }

// issuerSet is an immutable snapshot of the issuers the authority holds.
type issuerSet struct {
	all   []*issuer
	byID  map[string]*issuer
	roots []*issuer
	// inter holds intermediates, newest NotBefore first.
	inter []*issuer
	// cross holds cross-certificates of the roots, newest first.
	cross []*issuer
	// byCertID maps OCSP CertID keys to intermediates with a key.
	byCertID map[string]*issuer
}

func newIssuerSet(all []*issuer) *issuerSet {
	s := &issuerSet{
		all:      all,
		byID:     make(map[string]*issuer, len(all)),
		byCertID: make(map[string]*issuer),
	}
	for _, is := range all {
		s.byID[is.id] = is
		switch is.kind {
		case kindRoot:
			s.roots = append(s.roots, is)
		case kindCross:
			s.cross = append(s.cross, is)
		case kindIntermediate:
			s.inter = append(s.inter, is)
			if is.signer != nil {
				for _, k := range is.certIDKeys {
					s.byCertID[k] = is
				}
			}
		}
	}
	byAge := func(a, b *issuer) int {
		if c := b.cert.NotBefore.Compare(a.cert.NotBefore); c != 0 {
			return c
		}
		return b.cert.NotAfter.Compare(a.cert.NotAfter)
	}
	slices.SortStableFunc(s.roots, byAge)
	slices.SortStableFunc(s.inter, byAge)
	slices.SortStableFunc(s.cross, byAge)
	return s
}

// with returns a new set holding s's issuers and add.
func (s *issuerSet) with(add ...*issuer) *issuerSet {
	all := slices.Clone(s.all)
	return newIssuerSet(append(all, add...))
}

// active returns the intermediate that issues at t: the newest unexpired,
// unrevoked one with a key.
func (s *issuerSet) active(t time.Time) *issuer {
	for _, is := range s.inter {
		if is.signer != nil && !is.revoked.Load() && !is.expiredAt(t) {
			return is
		}
	}
	return nil
}

// activeRoot returns the newest unexpired root with a key.
func (s *issuerSet) activeRoot(t time.Time) *issuer {
	for _, is := range s.roots {
		if is.signer != nil && !is.expiredAt(t) {
			return is
		}
	}
	return nil
}

// New loads the issuers from the store and their keys from the KeyStore.
// With none stored the authority exists but is not initialised: Issue
// returns ErrNotInitialized until Bootstrap runs.
func New(ctx context.Context, cfg Config) (*Authority, error) {
	if cfg.Store == nil || cfg.Keys == nil {
		return nil, errors.New("ca: Config.Store and Config.Keys are required")
	}
	cfg.TrustDomain = strings.ToLower(strings.TrimSpace(cfg.TrustDomain))
	if err := validTrustDomain(cfg.TrustDomain); err != nil {
		return nil, fmt.Errorf("ca: trust domain %q: %w", cfg.TrustDomain, err)
	}
	publicURL := strings.TrimRight(strings.TrimSpace(cfg.PublicURL), "/")
	if publicURL == "" {
		return nil, errors.New("ca: Config.PublicURL is required")
	}
	var domains []string
	for _, d := range cfg.DNSDomains {
		d = strings.Trim(strings.ToLower(strings.TrimSpace(d)), ".")
		if err := validDNSName(d); err != nil {
			return nil, fmt.Errorf("ca: DNS domain %q: %w", d, err)
		}
		if !slices.Contains(domains, d) {
			domains = append(domains, d)
		}
	}
	setDefault(&cfg.RootCommonName, "Sigil Root CA")
	setDefault(&cfg.IntermediateCommonName, "Sigil Intermediate CA")
	setDefault(&cfg.RootTTL, 87600*time.Hour)
	setDefault(&cfg.IntermediateTTL, 2160*time.Hour)
	setDefault(&cfg.RotateBefore, 720*time.Hour)
	setDefault(&cfg.DefaultTTL, time.Hour)
	setDefault(&cfg.MaxTTL, 24*time.Hour)
	setDefault(&cfg.CRLValidity, 24*time.Hour)
	setDefault(&cfg.CRLRefresh, time.Hour)
	setDefault(&cfg.OCSPValidity, 24*time.Hour)
	setDefault(&cfg.OCSPRefreshBefore, 12*time.Hour)
	setDefault(&cfg.OCSPNonceRate, 50)
	switch {
	case cfg.DefaultTTL > cfg.MaxTTL:
		return nil, fmt.Errorf("ca: DefaultTTL %v exceeds MaxTTL %v", cfg.DefaultTTL, cfg.MaxTTL)
	case cfg.RotateBefore >= cfg.IntermediateTTL:
		return nil, fmt.Errorf("ca: RotateBefore %v must be below IntermediateTTL %v", cfg.RotateBefore, cfg.IntermediateTTL)
	case cfg.CRLRefresh >= cfg.CRLValidity:
		return nil, fmt.Errorf("ca: CRLRefresh %v must be below CRLValidity %v", cfg.CRLRefresh, cfg.CRLValidity)
	case cfg.OCSPRefreshBefore >= cfg.OCSPValidity:
		return nil, fmt.Errorf("ca: OCSPRefreshBefore %v must be below OCSPValidity %v", cfg.OCSPRefreshBefore, cfg.OCSPValidity)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	rnd := cfg.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	if rnd != rand.Reader {
		rnd = &lockedReader{r: rnd}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Authority{
		cfg:        cfg,
		log:        log,
		now:        cfg.Clock,
		rand:       rnd,
		publicURL:  publicURL,
		dnsDomains: domains,
		commit:     &committer{store: cfg.Store, arrived: make(chan struct{}, 1)},
	}
	a.ocsp = newResponder(a)
	a.set.Store(newIssuerSet(nil))
	if err := a.syncIssuers(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// lockedReader serialises reads from a source that may not be safe for
// concurrent use.
type lockedReader struct {
	mu sync.Mutex
	r  io.Reader
}

func (l *lockedReader) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(p)
}

// syncIssuers loads the stored issuers the authority does not hold yet
// (all of them at New; those another node created later) and publishes
// them. Callers other than New hold a.mu.
func (a *Authority) syncIssuers(ctx context.Context) error {
	recs, err := a.cfg.Store.ListIssuers(ctx)
	if err != nil {
		return fmt.Errorf("ca: listing issuers: %w", err)
	}
	cur := a.set.Load()
	var add []*issuer
	for _, rec := range recs {
		if _, ok := cur.byID[rec.ID]; ok {
			continue
		}
		is, err := a.loadIssuer(ctx, rec)
		if err != nil {
			return fmt.Errorf("ca: loading issuer %s: %w", rec.ID, err)
		}
		add = append(add, is)
	}
	if len(add) > 0 {
		a.set.Store(cur.with(add...))
	}
	return nil
}

// loadIssuer parses a stored issuer and, unless it has expired, loads its key.
func (a *Authority) loadIssuer(ctx context.Context, rec storage.Issuer) (*issuer, error) {
	cert, err := x509.ParseCertificate(rec.CertDER)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate: %w", err)
	}
	if rec.Kind == kindCross {
		// Another CA's certificate for a root: no key of its own.
		if id := crossID(cert); id != rec.ID {
			return nil, fmt.Errorf("stored ID does not match the cross-certificate (%s)", id)
		}
		return a.newIssuer(rec, cert, nil)
	}
	if id := IssuerID(cert); id != rec.ID {
		return nil, fmt.Errorf("stored ID does not match the certificate's key (%s)", id)
	}
	if rec.Kind != kindRoot && rec.Kind != kindIntermediate {
		return nil, fmt.Errorf("unknown issuer kind %q", rec.Kind)
	}
	var signer crypto.Signer
	if !a.now().After(cert.NotAfter) {
		signer, err = a.cfg.Keys.Signer(ctx, rec.KeyRef)
		if err != nil {
			return nil, fmt.Errorf("loading key: %w", err)
		}
		if !publicKeysEqual(signer.Public(), cert.PublicKey) {
			return nil, errors.New("key does not match the certificate")
		}
	}
	is, err := a.newIssuer(rec, cert, signer)
	if err != nil {
		return nil, err
	}
	if rec.Kind == kindIntermediate {
		c, err := a.cfg.Store.GetCertificate(ctx, Serial(cert.SerialNumber))
		switch {
		case err == nil:
			is.revoked.Store(c.Revoked())
		case !errors.Is(err, storage.ErrNotFound):
			return nil, fmt.Errorf("reading the intermediate's revocation status: %w", err)
		}
	}
	return is, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// newIssuer derives what the hot paths need from an issuer's certificate.
func (a *Authority) newIssuer(rec storage.Issuer, cert *x509.Certificate, signer crypto.Signer) (*issuer, error) {
	is := &issuer{
		id:         rec.ID,
		kind:       rec.Kind,
		rec:        rec,
		cert:       cert,
		signer:     signer,
		ocspURLs:   []string{a.publicURL + "/ocsp"},
		issuerURLs: []string{a.publicURL + "/ca/" + rec.ID + ".crt"},
		crlURLs:    []string{a.publicURL + "/crl/" + rec.ID + ".crl"},
	}
	keyBits, err := subjectPublicKeyBits(cert.RawSubjectPublicKeyInfo)
	if err != nil {
		return nil, err
	}
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		is.certIDKeys = append(is.certIDKeys, certIDKey(h, hashOf(h, cert.RawSubject), hashOf(h, keyBits)))
	}
	return is, nil
}

// subjectPublicKeyBits returns the contents of the subjectPublicKey BIT
// STRING of a DER SubjectPublicKeyInfo.
func subjectPublicKeyBits(spki []byte) ([]byte, error) {
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if rest, err := asn1.Unmarshal(spki, &info); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("parsing SubjectPublicKeyInfo: %v", err)
	}
	return info.PublicKey.RightAlign(), nil
}

// subjectKeyID is RFC 7093 method 1: the leftmost 160 bits of the SHA-256
// of the subjectPublicKey bits.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	bits, err := subjectPublicKeyBits(spki)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(bits)
	return sum[:20], nil
}

func hashOf(h crypto.Hash, b []byte) []byte {
	switch h {
	case crypto.SHA1:
		s := sha1.Sum(b)
		return s[:]
	default:
		s := sha256.Sum256(b)
		return s[:]
	}
}

// IssuerID names an issuer: the lowercase hex of the first 16 bytes of the
// SHA-256 of its SubjectPublicKeyInfo.
func IssuerID(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:16])
}

// Serial formats a serial number as storage.Certificate.Serial does:
// lowercase hex without leading zeros.
func Serial(n *big.Int) string { return n.Text(16) }

// parseSerial accepts a hex serial in any case, with leading zeros, and
// returns its canonical form.
func parseSerial(s string) (string, bool) {
	if s == "" || len(s) > 64 {
		return "", false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return "", false
		}
	}
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() <= 0 {
		return "", false
	}
	return Serial(n), true
}

// Initialized reports whether Bootstrap has created a root.
func (a *Authority) Initialized() bool { return len(a.set.Load().roots) > 0 }

// Roots returns the root certificates.
func (a *Authority) Roots() []*x509.Certificate {
	var out []*x509.Certificate
	for _, is := range a.set.Load().roots {
		out = append(out, is.cert)
	}
	return out
}

// Intermediates returns the unexpired, unrevoked intermediates, newest
// first; the first is the one that issues.
func (a *Authority) Intermediates() []*x509.Certificate {
	now := a.now()
	var out []*x509.Certificate
	for _, is := range a.set.Load().inter {
		if !is.expiredAt(now) && !is.revoked.Load() {
			out = append(out, is.cert)
		}
	}
	return out
}

// Bundle returns the roots followed by the unexpired intermediates: during
// a rotation overlap, both intermediates.
func (a *Authority) Bundle() []*x509.Certificate {
	return append(a.Roots(), a.Intermediates()...)
}

// IssuerCert returns the certificate of the issuer with the ID, expired and
// revoked ones included.
func (a *Authority) IssuerCert(id string) (*x509.Certificate, bool) {
	is, ok := a.set.Load().byID[id]
	if !ok {
		return nil, false
	}
	return is.cert, true
}

// Certificates lists issued certificates, intermediates included.
func (a *Authority) Certificates(ctx context.Context, f storage.CertificateFilter) ([]storage.Certificate, error) {
	certs, err := a.cfg.Store.ListCertificates(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("listing certificates: %w", err)
	}
	return certs, nil
}

// Certificate returns the record of the certificate with the serial (hex,
// any case); ErrNotFound when there is none.
func (a *Authority) Certificate(ctx context.Context, serial string) (storage.Certificate, error) {
	s, ok := parseSerial(serial)
	if !ok {
		return storage.Certificate{}, fmt.Errorf("reading certificate %q: %w", serial, ErrNotFound)
	}
	c, err := a.cfg.Store.GetCertificate(ctx, s)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Certificate{}, fmt.Errorf("reading certificate %s: %w", s, ErrNotFound)
	}
	if err != nil {
		return storage.Certificate{}, fmt.Errorf("reading certificate %s: %w", s, err)
	}
	return c, nil
}
