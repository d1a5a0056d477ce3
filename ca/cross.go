package ca

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/sigil-pki/sigil/storage"
)

// Cross-certificates: another CA's certificate for one of this
// authority's roots (same subject, same key). A relying party that trusts
// only that other CA reaches certificates issued here through it, so
// every chain ending below a cross-certified root has an alternate chain
// that ends with the cross-certificate. The authority never signs with
// one; it only hands them out.

// kindCross is the storage.Issuer.Kind of a cross-certificate.
const kindCross = "cross"

// ErrBadCrossCertificate is returned for a certificate that is not a CA
// certificate for one of this authority's roots.
var ErrBadCrossCertificate = errors.New("ca: not a cross-certificate for a root of this authority")

// crossID names a cross-certificate: "x" and the lowercase hex of the
// first 16 bytes of the SHA-256 of its DER (its key is its root's).
func crossID(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "x" + hex.EncodeToString(sum[:16])
}

// AddCrossCertificate records a cross-certificate for one of the roots:
// an unexpired CA certificate issued by another CA, with the root's
// subject and key. It returns the certificate's ID;
// storage.ErrConflict when it is recorded already.
func (a *Authority) AddCrossCertificate(ctx context.Context, cert *x509.Certificate) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.syncIssuers(ctx); err != nil {
		return "", err
	}
	set := a.set.Load()
	now := a.now()
	var root *issuer
	for _, r := range set.roots {
		if bytes.Equal(r.cert.RawSubjectPublicKeyInfo, cert.RawSubjectPublicKeyInfo) && bytes.Equal(r.cert.RawSubject, cert.RawSubject) {
			root = r
		}
	}
	switch {
	case root == nil:
		return "", fmt.Errorf("%w: its subject and key match no root", ErrBadCrossCertificate)
	case !cert.BasicConstraintsValid || !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return "", fmt.Errorf("%w: it is not a CA certificate that may sign certificates", ErrBadCrossCertificate)
	case bytes.Equal(cert.RawIssuer, cert.RawSubject):
		return "", fmt.Errorf("%w: it is self-issued; a cross-certificate is issued by another CA", ErrBadCrossCertificate)
	case !now.Before(cert.NotAfter) || now.Before(cert.NotBefore):
		return "", fmt.Errorf("%w: it is not valid now (%s to %s)", ErrBadCrossCertificate, cert.NotBefore, cert.NotAfter)
	}
	id := crossID(cert)
	if _, ok := set.byID[id]; ok {
		return id, storage.ErrConflict
	}
	rec := storage.Issuer{ID: id, Kind: kindCross, CertDER: cert.Raw, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, CreatedAt: now}
	is, err := a.newIssuer(rec, cert, nil)
	if err != nil {
		return "", err
	}
	if err := a.cfg.Store.PutIssuer(ctx, rec); err != nil {
		return "", fmt.Errorf("ca: storing cross-certificate %s: %w", id, err)
	}
	a.set.Store(set.with(is))
	a.log.Info("cross-certificate added", "issuer", id, "root", root.id, "by", cert.Issuer.String())
	return id, nil
}

// AlternateChains returns, for a chain up to (not including) a root, the
// same chain extended by each unexpired cross-certificate of that root,
// newest first: paths to the other CAs' roots.
func (a *Authority) AlternateChains(chain []*x509.Certificate) [][]*x509.Certificate {
	if len(chain) == 0 {
		return nil
	}
	top := chain[len(chain)-1]
	now := a.now()
	var out [][]*x509.Certificate
	for _, c := range a.set.Load().cross {
		if c.expiredAt(now) || !bytes.Equal(top.RawIssuer, c.cert.RawSubject) || top.CheckSignatureFrom(c.cert) != nil {
			continue
		}
		out = append(out, append(chain[:len(chain):len(chain)], c.cert))
	}
	return out
}
