package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"net"
	"strings"
)

// maxSPIFFEIDLen is the SPIFFE ID length limit (SPIFFE ID spec, 2.3).
const maxSPIFFEIDLen = 2048

// validateSPIFFEID checks id against the SPIFFE ID specification and
// requires it to name a workload (a non-empty path) in trustDomain.
func validateSPIFFEID(id, trustDomain string) error {
	if len(id) > maxSPIFFEIDLen {
		return fmt.Errorf("longer than %d bytes", maxSPIFFEIDLen)
	}
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return errors.New(`scheme must be "spiffe" (lowercase) followed by "://"`)
	}
	td, path, hasPath := strings.Cut(rest, "/")
	if err := validTrustDomain(td); err != nil {
		return err
	}
	if td != trustDomain {
		return fmt.Errorf("trust domain %q is not %q", td, trustDomain)
	}
	if !hasPath {
		return errors.New("a workload ID needs a path")
	}
	for seg := range strings.SplitSeq(path, "/") {
		switch seg {
		case "":
			return errors.New("path segments must not be empty (no trailing or doubled slash)")
		case ".", "..":
			return fmt.Errorf("path segment %q is not allowed", seg)
		}
		for i := 0; i < len(seg); i++ {
			if c := seg[i]; !isPathChar(c) {
				return fmt.Errorf("path character %q is not allowed", c)
			}
		}
	}
	return nil
}

// validTrustDomain checks a trust domain name: lowercase letters, digits,
// dots, dashes and underscores.
func validTrustDomain(td string) error {
	if td == "" {
		return errors.New("trust domain is empty")
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("trust domain character %q is not allowed (lowercase letters, digits, '.', '-', '_')", c)
		}
	}
	return nil
}

func isPathChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
}

// validDNSName checks a lowercase host name: dot-separated labels of 1 to
// 63 letters, digits and inner hyphens, 253 bytes at most, not an IP
// address, no trailing dot.
func validDNSName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > 253 {
		return errors.New("longer than 253 bytes")
	}
	if net.ParseIP(name) != nil {
		return errors.New("an IP address is not a DNS name")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return errors.New("empty label")
		}
		if len(label) > 63 {
			return errors.New("label longer than 63 bytes")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with '-'", label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if c >= 'A' && c <= 'Z' {
				return errors.New("must be lowercase")
			}
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("character %q is not allowed", c)
			}
		}
	}
	return nil
}

// checkDNSName applies the name policy to one requested DNS name: valid,
// lowercase, equal to or under a permitted domain; a wildcard "*.x" only
// when wildcardOK, with x permitted.
func (a *Authority) checkDNSName(name string, wildcardOK bool) error {
	base := name
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		if !wildcardOK {
			return fmt.Errorf("%w: DNS name %q: wildcards are issued only under the tls-server profile", ErrPolicy, name)
		}
		base = rest
	}
	if err := validDNSName(base); err != nil {
		return fmt.Errorf("%w: DNS name %q: %w", ErrPolicy, name, err)
	}
	if !a.permittedDNS(base) {
		return fmt.Errorf("%w: DNS name %q is outside the permitted domains", ErrPolicy, name)
	}
	return nil
}

func (a *Authority) permittedDNS(name string) bool {
	for _, d := range a.dnsDomains {
		if name == d || strings.HasSuffix(name, "."+d) {
			return true
		}
	}
	return false
}

// Subject key limits.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// checkPublicKey accepts RSA keys of 2048 to 8192 bits, ECDSA keys on P-256
// or P-384, and Ed25519 keys.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return errors.New("empty RSA key")
		}
		if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return fmt.Errorf("RSA key of %d bits: %d to %d are allowed", bits, minRSABits, maxRSABits)
		}
		if k.E < 3 || k.E%2 == 0 {
			return fmt.Errorf("RSA public exponent %d is not allowed", k.E)
		}
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return errors.New("empty ECDSA key")
		}
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA curve %s: only P-256 and P-384 are allowed", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("Ed25519 key of %d bytes", len(k))
		}
	case nil:
		return errors.New("no public key")
	default:
		return fmt.Errorf("key type %T is not allowed", pub)
	}
	return nil
}
