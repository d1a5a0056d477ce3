package ca

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/sigil-pki/sigil/storage"
)

// Bootstrap creates the self-signed root (its key from Keys.Generate("root"))
// and a first intermediate. It returns ErrAlreadyInitialized when a root and
// an active intermediate exist; when only the root exists (a bootstrap that
// failed half-way) it creates the missing intermediate.
func (a *Authority) Bootstrap(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	// Another node sharing the store may have bootstrapped already.
	if err := a.syncIssuers(ctx); err != nil {
		return err
	}
	now := a.now()
	set := a.set.Load()
	root := set.activeRoot(now)
	if root != nil && set.active(now) != nil {
		return ErrAlreadyInitialized
	}
	if root == nil {
		if len(set.roots) > 0 {
			return errors.New("ca: the root has expired or its key is unavailable; a new root cannot be bootstrapped over it")
		}
		var err error
		if root, err = a.createRoot(ctx, now); err != nil {
			return err
		}
		a.set.Store(set.with(root))
		a.log.Info("root CA created", "issuer", root.id, "not_after", root.cert.NotAfter.Format(time.RFC3339))
	}
	inter, err := a.createIntermediate(ctx, root, now)
	if err != nil {
		return err
	}
	a.set.Store(a.set.Load().with(inter))
	a.log.Info("intermediate CA created", "issuer", inter.id, "not_after", inter.cert.NotAfter.Format(time.RFC3339))
	return nil
}

// newSerial returns a positive 128-bit random serial.
func (a *Authority) newSerial() (*big.Int, error) {
	var b [16]byte
	for range 8 {
		if _, err := a.rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("reading a random serial: %w", err)
		}
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n, nil
		}
	}
	return nil, errors.New("reading a random serial: the random source keeps returning zeros")
}

func (a *Authority) createRoot(ctx context.Context, now time.Time) (*issuer, error) {
	signer, ref, err := a.cfg.Keys.Generate(ctx, kindRoot)
	if err != nil {
		return nil, fmt.Errorf("ca: generating the root key: %w", err)
	}
	serial, err := a.newSerial()
	if err != nil {
		return nil, fmt.Errorf("ca: creating the root: %w", err)
	}
	skid, err := subjectKeyID(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("ca: creating the root: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: a.cfg.RootCommonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(a.cfg.RootTTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            1,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(a.rand, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("ca: signing the root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parsing the new root certificate: %w", err)
	}
	rec := storage.Issuer{
		ID:        IssuerID(cert),
		Kind:      kindRoot,
		CertDER:   der,
		KeyRef:    ref,
		NotBefore: cert.NotBefore,
		NotAfter:  cert.NotAfter,
		CreatedAt: now,
	}
	is, err := a.newIssuer(rec, cert, signer)
	if err != nil {
		return nil, err
	}
	if err := a.cfg.Store.PutIssuer(ctx, rec); err != nil {
		return nil, fmt.Errorf("ca: storing root %s: %w", rec.ID, err)
	}
	return is, nil
}

// createIntermediate makes, records and stores a new intermediate signed by
// root. The caller holds a.mu and publishes the result.
func (a *Authority) createIntermediate(ctx context.Context, root *issuer, now time.Time) (*issuer, error) {
	signer, ref, err := a.cfg.Keys.Generate(ctx, kindIntermediate)
	if err != nil {
		return nil, fmt.Errorf("ca: generating an intermediate key: %w", err)
	}
	pub := signer.Public()
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("ca: encoding the intermediate key: %w", err)
	}
	id := IssuerID(&x509.Certificate{RawSubjectPublicKeyInfo: spki})
	serial, err := a.newSerial()
	if err != nil {
		return nil, fmt.Errorf("ca: creating intermediate %s: %w", id, err)
	}
	skid, err := subjectKeyID(pub)
	if err != nil {
		return nil, fmt.Errorf("ca: creating intermediate %s: %w", id, err)
	}
	notAfter := now.Add(a.cfg.IntermediateTTL)
	if notAfter.After(root.cert.NotAfter) {
		notAfter = root.cert.NotAfter
	}
	dns := a.dnsDomains
	if len(dns) == 0 {
		// An empty permitted list would leave DNS names unconstrained;
		// "invalid" (RFC 6761) permits nothing real.
		dns = []string{"invalid"}
	}
	tmpl := &x509.Certificate{
		SerialNumber:                serial,
		Subject:                     pkix.Name{CommonName: a.cfg.IntermediateCommonName, SerialNumber: id},
		NotBefore:                   now.Add(-clockSkew),
		NotAfter:                    notAfter,
		IsCA:                        true,
		BasicConstraintsValid:       true,
		MaxPathLen:                  0,
		MaxPathLenZero:              true,
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         dns,
		PermittedURIDomains:         []string{a.cfg.TrustDomain},
		IssuingCertificateURL:       root.issuerURLs,
		CRLDistributionPoints:       root.crlURLs,
		SubjectKeyId:                skid,
	}
	der, err := x509.CreateCertificate(a.rand, tmpl, root.cert, pub, root.signer)
	if err != nil {
		return nil, fmt.Errorf("ca: signing intermediate %s: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parsing intermediate %s: %w", id, err)
	}
	rec := storage.Issuer{
		ID:        id,
		Kind:      kindIntermediate,
		CertDER:   der,
		KeyRef:    ref,
		NotBefore: cert.NotBefore,
		NotAfter:  cert.NotAfter,
		CreatedAt: now,
	}
	is, err := a.newIssuer(rec, cert, signer)
	if err != nil {
		return nil, err
	}
	// The intermediate is a certificate the root issued: record it like a
	// leaf so that it can be revoked and listed on the root's CRL, and
	// store the issuer only after it is on the record.
	crec := storage.Certificate{
		Serial:    Serial(serial),
		IssuerID:  root.id,
		Profile:   ProfileIntermediate,
		Subject:   cert.Subject.String(),
		NotBefore: cert.NotBefore,
		NotAfter:  cert.NotAfter,
		DER:       der,
	}
	if err := a.cfg.Store.InsertCertificates(ctx, []storage.Certificate{crec}); err != nil {
		return nil, fmt.Errorf("ca: recording intermediate %s: %w", id, err)
	}
	if a.cfg.Recorder != nil {
		if err := a.cfg.Recorder.RecordIssuance(ctx, crec); err != nil {
			return nil, fmt.Errorf("ca: logging intermediate %s: %w", id, err)
		}
	}
	if err := a.cfg.Store.PutIssuer(ctx, rec); err != nil {
		return nil, fmt.Errorf("ca: storing intermediate %s: %w", id, err)
	}
	return is, nil
}

// Rotate creates a new intermediate (key from Keys.Generate("intermediate"))
// when the active one has less than RotateBefore left, or none is active, or
// force is set. The old intermediate stays in the bundle until it expires.
// Without force, nothing is done when a new intermediate could not outlive
// the active one (the root is about to expire). Safe to call concurrently:
// calls are serialised and each decides on the state the previous one left.
func (a *Authority) Rotate(ctx context.Context, force bool) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.syncIssuers(ctx); err != nil {
		return false, err
	}
	return a.rotateLocked(ctx, force)
}

func (a *Authority) rotateLocked(ctx context.Context, force bool) (bool, error) {
	now := a.now()
	set := a.set.Load()
	root := set.activeRoot(now)
	if root == nil {
		if len(set.roots) == 0 {
			return false, ErrNotInitialized
		}
		return false, errors.New("ca: cannot rotate the intermediate: the root has expired or its key is unavailable")
	}
	act := set.active(now)
	if !force && act != nil {
		if act.cert.NotAfter.Sub(now) >= a.cfg.RotateBefore {
			return false, nil
		}
		if !root.cert.NotAfter.After(act.cert.NotAfter) {
			a.log.Warn("intermediate not rotated: a new one could not outlive the active one before the root expires",
				"issuer", act.id, "root_not_after", root.cert.NotAfter.Format(time.RFC3339))
			return false, nil
		}
	}
	inter, err := a.createIntermediate(ctx, root, now)
	if err != nil {
		return false, err
	}
	a.set.Store(set.with(inter))
	a.log.Info("intermediate CA rotated", "issuer", inter.id, "not_after", inter.cert.NotAfter.Format(time.RFC3339))
	return true, nil
}

// activeIssuer returns the intermediate to issue with, making one when the
// authority has a root but no active intermediate (the last one expired or
// was revoked while nothing rotated).
func (a *Authority) activeIssuer(ctx context.Context, now time.Time) (*issuer, error) {
	if is := a.set.Load().active(now); is != nil {
		return is, nil
	}
	if !a.Initialized() {
		return nil, ErrNotInitialized
	}
	if _, err := a.Rotate(ctx, false); err != nil {
		return nil, err
	}
	if is := a.set.Load().active(a.now()); is != nil {
		return is, nil
	}
	return nil, ErrNotInitialized
}

// Run does the authority's periodic work until ctx is done: it regenerates
// CRLs older than CRLRefresh, rotates the intermediate when due and drops
// OCSP responses past their nextUpdate. It checks at once, then every quarter
// of CRLRefresh (at least every second).
func (a *Authority) Run(ctx context.Context) {
	interval := max(a.cfg.CRLRefresh/4, time.Second)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		a.maintain(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// maintain is one pass of Run.
func (a *Authority) maintain(ctx context.Context) {
	if !a.Initialized() {
		a.mu.Lock()
		err := a.syncIssuers(ctx)
		a.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			a.log.Error("checking for issuers", "err", err)
		}
		if !a.Initialized() {
			return
		}
	}
	if _, err := a.Rotate(ctx, false); err != nil && ctx.Err() == nil {
		a.log.Error("rotating the intermediate", "err", err)
	}
	if err := a.RefreshCRLs(ctx); err != nil && ctx.Err() == nil {
		a.log.Error("refreshing CRLs", "err", err)
	}
	a.ocsp.sweep(a.now())
}
