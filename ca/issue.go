package ca

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigil-pki/sigil/storage"
)

// Profiles a Request may name, and the one recorded for intermediates.
const (
	// ProfileSVID is an X.509-SVID: exactly one SPIFFE ID URI SAN, optional
	// DNS SANs, serverAuth and clientAuth.
	ProfileSVID = "x509-svid"
	// ProfileTLSServer is a TLS server certificate: DNS names and IP
	// addresses, serverAuth.
	ProfileTLSServer = "tls-server"
	// ProfileIntermediate marks intermediates in the certificate record; it
	// cannot be requested.
	ProfileIntermediate = "intermediate"
)

// Request asks for one certificate.
type Request struct {
	// Profile is ProfileSVID or ProfileTLSServer. Empty means x509-svid when
	// SPIFFEID is set, tls-server otherwise.
	Profile string
	// PublicKey is the subject key: RSA 2048 to 8192 bits, ECDSA P-256 or
	// P-384, or Ed25519.
	PublicKey crypto.PublicKey
	// SPIFFEID is the x509-svid's identity, spiffe://<TrustDomain>/<path>.
	SPIFFEID    string
	DNSNames    []string
	IPAddresses []net.IP
	// TTL is the requested lifetime: 0 means DefaultTTL; above MaxTTL is
	// ErrTTL. It is cut short at the issuing intermediate's expiry.
	TTL time.Duration

	// unsupported names what a CSR asked for that no profile issues (a
	// second URI, e-mail addresses); Issue refuses a non-empty list.
	unsupported []string
}

// Issued is an issued certificate with its chain and record.
type Issued struct {
	Certificate *x509.Certificate
	// Chain holds the issuing intermediate (not the root).
	Chain []*x509.Certificate
	// Record is what was stored. Its Seq is zero: the store assigns it.
	Record storage.Certificate
}

// prepared is a validated request.
type prepared struct {
	profile string
	uri     *url.URL
	dns     []string
	ips     []net.IP
	ttl     time.Duration
	rsa     bool
	subject string
}

// Issue validates the request against its profile and the name policy,
// signs a certificate with the active intermediate, stores it, hands it to
// the Recorder and returns it. It returns ErrNotInitialized before
// Bootstrap, ErrUnknownProfile, ErrPolicy (naming the refused value) or
// ErrTTL for a bad request; on any failure no certificate is returned.
func (a *Authority) Issue(ctx context.Context, req Request) (*Issued, error) {
	p, err := a.prepare(req)
	if err != nil {
		return nil, err
	}
	now := a.now()
	iss, err := a.activeIssuer(ctx, now)
	if err != nil {
		return nil, err
	}
	// From here until the record is queued, the committer knows a record is
	// on its way and may wait for it to share a batch.
	a.commit.signing.Add(1)
	queued := false
	defer func() {
		if !queued {
			a.commit.signing.Add(-1)
		}
	}()
	serial, err := a.newSerial()
	if err != nil {
		return nil, fmt.Errorf("issuing: %w", err)
	}
	notAfter := now.Add(p.ttl)
	if notAfter.After(iss.cert.NotAfter) {
		notAfter = iss.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		DNSNames:              p.dns,
		IPAddresses:           p.ips,
		OCSPServer:            iss.ocspURLs,
		IssuingCertificateURL: iss.issuerURLs,
		CRLDistributionPoints: iss.crlURLs,
	}
	if p.rsa {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	switch p.profile {
	case ProfileSVID:
		tmpl.URIs = []*url.URL{p.uri}
		tmpl.ExtKeyUsage = svidEKU
	case ProfileTLSServer:
		if len(p.dns) > 0 {
			tmpl.Subject = pkix.Name{CommonName: p.dns[0]}
		}
		tmpl.ExtKeyUsage = serverEKU
	}
	der, err := x509.CreateCertificate(a.rand, tmpl, iss.cert, req.PublicKey, iss.signer)
	if err != nil {
		return nil, fmt.Errorf("issuing: signing with intermediate %s: %w", iss.id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issuing: parsing the new certificate: %w", err)
	}
	rec := storage.Certificate{
		Serial:    Serial(serial),
		IssuerID:  iss.id,
		Profile:   p.profile,
		Subject:   p.subject,
		NotBefore: cert.NotBefore,
		NotAfter:  cert.NotAfter,
		DER:       der,
	}
	queued = true
	if err := a.commit.insert(ctx, rec); err != nil {
		return nil, fmt.Errorf("issuing: storing certificate %s: %w", rec.Serial, err)
	}
	if a.cfg.Recorder != nil {
		if err := a.cfg.Recorder.RecordIssuance(ctx, rec); err != nil {
			return nil, fmt.Errorf("issuing: logging certificate %s: %w", rec.Serial, err)
		}
	}
	return &Issued{Certificate: cert, Chain: []*x509.Certificate{iss.cert}, Record: rec}, nil
}

var (
	svidEKU   = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	serverEKU = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
)

// prepare checks a request against its profile, the name policy and the
// TTL limits.
func (a *Authority) prepare(req Request) (*prepared, error) {
	p := &prepared{profile: req.Profile}
	if p.profile == "" {
		p.profile = ProfileTLSServer
		if req.SPIFFEID != "" {
			p.profile = ProfileSVID
		}
	}
	if p.profile != ProfileSVID && p.profile != ProfileTLSServer {
		return nil, fmt.Errorf("%w: %q", ErrUnknownProfile, req.Profile)
	}
	if len(req.unsupported) > 0 {
		return nil, fmt.Errorf("%w: %s is not issued", ErrPolicy, strings.Join(req.unsupported, ", "))
	}
	if err := checkPublicKey(req.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: subject key: %w", ErrPolicy, err)
	}
	_, p.rsa = req.PublicKey.(*rsa.PublicKey)

	switch {
	case req.TTL < 0:
		return nil, fmt.Errorf("%w: %v is negative", ErrTTL, req.TTL)
	case req.TTL > a.cfg.MaxTTL:
		return nil, fmt.Errorf("%w: %v exceeds the maximum of %v", ErrTTL, req.TTL, a.cfg.MaxTTL)
	case req.TTL == 0:
		p.ttl = a.cfg.DefaultTTL
	default:
		p.ttl = req.TTL
	}

	wildcardOK := p.profile == ProfileTLSServer
	seen := make(map[string]bool, len(req.DNSNames))
	for _, n := range req.DNSNames {
		if err := a.checkDNSName(n, wildcardOK); err != nil {
			return nil, err
		}
		if !seen[n] {
			seen[n] = true
			p.dns = append(p.dns, n)
		}
	}
	for _, ip := range req.IPAddresses {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len || ip.IsUnspecified() {
			return nil, fmt.Errorf("%w: IP address %q is not valid", ErrPolicy, ip.String())
		}
		p.ips = append(p.ips, ip)
	}

	switch p.profile {
	case ProfileSVID:
		if req.SPIFFEID == "" {
			return nil, fmt.Errorf("%w: an x509-svid needs a SPIFFE ID", ErrPolicy)
		}
		if len(p.ips) > 0 {
			return nil, fmt.Errorf("%w: an x509-svid carries no IP address (%s)", ErrPolicy, p.ips[0])
		}
		if err := validateSPIFFEID(req.SPIFFEID, a.cfg.TrustDomain); err != nil {
			return nil, fmt.Errorf("%w: SPIFFE ID %q: %w", ErrPolicy, req.SPIFFEID, err)
		}
		u, err := url.Parse(req.SPIFFEID)
		if err != nil {
			return nil, fmt.Errorf("%w: SPIFFE ID %q: %w", ErrPolicy, req.SPIFFEID, err)
		}
		p.uri = u
		p.subject = req.SPIFFEID
	case ProfileTLSServer:
		if req.SPIFFEID != "" {
			return nil, fmt.Errorf("%w: a tls-server certificate carries no SPIFFE ID (%q)", ErrPolicy, req.SPIFFEID)
		}
		if len(p.dns) == 0 && len(p.ips) == 0 {
			return nil, fmt.Errorf("%w: a tls-server certificate needs a DNS name or an IP address", ErrPolicy)
		}
		names := make([]string, 0, len(p.dns)+len(p.ips))
		names = append(names, p.dns...)
		for _, ip := range p.ips {
			names = append(names, ip.String())
		}
		p.subject = strings.Join(names, ",")
	}
	return p, nil
}

// maxBatch caps the records written in one InsertCertificates call.
const maxBatch = 256

// maxLinger bounds how long the writer waits for records still being
// signed before it writes a batch. When a write costs more than a
// signature, a short wait for a caller known to be mid-signature buys a
// bigger batch; with no caller signing, the writer never waits.
const maxLinger = 250 * time.Microsecond

// A linger is worth at most a quarter of what a recent write cost (the
// wait is spent to save a write), and none at all below minLinger: a store
// that fast gains nothing from bigger batches, and a caller left waiting
// for a batch to fill is a core left idle.
const (
	lingerShare = 2
	minLinger   = 20 * time.Microsecond
)

// committer batches the certificate inserts of concurrent issuances (group
// commit). A writer goroutine runs while records are pending: it takes up
// to maxBatch of them, or whatever arrived while the previous batch was
// being written, writes them in one call, answers their callers, and exits
// when nothing is left.
type committer struct {
	store Store

	// signing counts issuances between choosing the issuer and queueing
	// their record; the caller of insert has already decremented it.
	signing atomic.Int64
	// arrived is signalled (without blocking) on every insert.
	arrived chan struct{}

	// writeCost is a moving average of how long recent writes took; only
	// the writer goroutine uses it.
	writeCost time.Duration

	mu      sync.Mutex
	queue   []*pendingInsert
	running bool
}

type pendingInsert struct {
	rec  storage.Certificate
	done chan error
}

// insert returns once rec is durable, or with the error that prevented it,
// or when ctx is done (the record may still be written then).
func (c *committer) insert(ctx context.Context, rec storage.Certificate) error {
	p := &pendingInsert{rec: rec, done: make(chan error, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, p)
	c.signing.Add(-1)
	if !c.running {
		c.running = true
		go c.run()
	}
	c.mu.Unlock()
	select {
	case c.arrived <- struct{}{}:
	default:
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *committer) run() {
	var linger *time.Timer
	for {
		c.linger(&linger)
		c.mu.Lock()
		n := min(len(c.queue), maxBatch)
		if n == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		batch := c.queue[:n]
		if n == len(c.queue) {
			c.queue = nil
		} else {
			c.queue = append([]*pendingInsert(nil), c.queue[n:]...)
		}
		c.mu.Unlock()
		// The durations measure the store's work, not the time of day, so
		// they come from the monotonic clock rather than Config.Clock.
		start := time.Now()
		c.write(batch)
		c.writeCost += (time.Since(start) - c.writeCost) / 4
	}
}

// linger waits, while records are still being signed and the batch is not
// full, for at most a share of the recent write cost, capped at maxLinger.
func (c *committer) linger(t **time.Timer) {
	wait := min(c.writeCost/lingerShare, maxLinger)
	if wait < minLinger || c.signing.Load() <= 0 {
		return
	}
	if *t == nil {
		*t = time.NewTimer(wait)
	} else {
		(*t).Reset(wait)
	}
	defer (*t).Stop()
	for c.signing.Load() > 0 {
		c.mu.Lock()
		full := len(c.queue) >= maxBatch
		c.mu.Unlock()
		if full {
			return
		}
		select {
		case <-c.arrived:
		case <-(*t).C:
			return
		}
	}
}

// write stores one batch. The batch belongs to many callers, so no single
// caller's context governs it. If the batch fails as a whole, each record
// is retried alone so that one bad record fails only its own caller.
func (c *committer) write(batch []*pendingInsert) {
	ctx := context.Background()
	recs := make([]storage.Certificate, len(batch))
	for i, p := range batch {
		recs[i] = p.rec
	}
	err := c.store.InsertCertificates(ctx, recs)
	if err == nil || len(batch) == 1 {
		for _, p := range batch {
			p.done <- err
		}
		return
	}
	for _, p := range batch {
		p.done <- c.store.InsertCertificates(ctx, []storage.Certificate{p.rec})
	}
}
