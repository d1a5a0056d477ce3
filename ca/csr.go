package ca

import (
	"crypto/x509"
	"fmt"
	"time"
)

// ParseCSR parses a DER certificate signing request and checks its
// signature and key. Every failure is ErrBadCSR wrapping the reason:
// garbage or trailing data, a signature that does not verify, an RSA key
// outside 2048 to 8192 bits, an ECDSA curve other than P-256 and P-384, or
// any key type other than RSA, ECDSA and Ed25519.
func ParseCSR(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: parsing: %w", ErrBadCSR, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: key: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	return csr, nil
}

// RequestFromCSR builds a Request from a parsed CSR: its key, DNS names and
// IP addresses, and its URI SAN as the SPIFFE ID. The subject is ignored.
// SANs no profile issues (a second URI, e-mail addresses) make Issue refuse
// the request with ErrPolicy rather than drop them silently.
func RequestFromCSR(csr *x509.CertificateRequest, profile string, ttl time.Duration) Request {
	req := Request{
		Profile:     profile,
		PublicKey:   csr.PublicKey,
		DNSNames:    csr.DNSNames,
		IPAddresses: csr.IPAddresses,
		TTL:         ttl,
	}
	for i, u := range csr.URIs {
		if i == 0 {
			req.SPIFFEID = u.String()
			continue
		}
		req.unsupported = append(req.unsupported, fmt.Sprintf("URI SAN %q (only one is allowed)", u.String()))
	}
	for _, e := range csr.EmailAddresses {
		req.unsupported = append(req.unsupported, fmt.Sprintf("e-mail SAN %q", e))
	}
	return req
}
