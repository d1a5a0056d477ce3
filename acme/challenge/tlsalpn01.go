package challenge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// ALPNProtocol is the ALPN protocol name of tls-alpn-01 (RFC 8737 §6.2).
const ALPNProtocol = "acme-tls/1"

var (
	// oidACMEIdentifier is id-pe-acmeIdentifier (RFC 8737 §6.1).
	oidACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}
	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// GeneralName tags (RFC 5280 §4.2.1.6) as they appear in DER: context
// specific, primitive (IMPLICIT).
const (
	tagDNSName   cbasn1.Tag = 0x80 | 2
	tagIPAddress cbasn1.Tag = 0x80 | 7
)

// TLSALPN01 validates a tls-alpn-01 challenge (RFC 8737 §3; RFC 8738 §6 for
// IP identifiers). It connects to TLSPort offering only ALPN "acme-tls/1",
// with SNI the DNS name, or for an IP the reverse-mapping name under
// in-addr.arpa or ip6.arpa, and TLS 1.2 or later. The server must negotiate
// acme-tls/1, and its leaf certificate must have a subjectAltName with
// exactly one entry, the identifier, and a critical acmeIdentifier
// extension holding the SHA-256 digest of keyAuthorization. Nothing else of
// the certificate is judged. It returns nil when the challenge is met.
func (v *Validator) TLSALPN01(ctx context.Context, id Identifier, keyAuthorization string) *Problem {
	t, p := v.parseIdentifier(id, false)
	if p != nil {
		return p
	}
	ctx, cancel := v.withTimeout(ctx)
	defer cancel()

	sni := t.host
	if t.ip.IsValid() {
		sni = reverseName(t.ip)
	}
	action := fmt.Sprintf("tls-alpn-01 to %s port %d", t.host, v.tlsPort)
	conn, err := v.dial(ctx, t.host, v.tlsPort)
	if err != nil {
		return v.problem(ctx, action, err)
	}
	addr := conn.RemoteAddr().String()
	tc := tls.Client(conn, &tls.Config{
		ServerName: sni,
		NextProtos: []string{ALPNProtocol},
		// RFC 8737 §3: the certificate is self-signed; what counts is
		// checked below.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS12, // RFC 8737 §4
	})
	defer tc.Close()
	if err := tc.HandshakeContext(ctx); err != nil {
		return v.problem(ctx, action, &handshakeError{addr: addr, err: err})
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != ALPNProtocol {
		return problemf(ProblemIncorrectResponse, nil, "%s: the server at %s did not negotiate ALPN %q", action, addr, ALPNProtocol)
	}
	if len(cs.PeerCertificates) == 0 {
		return problemf(ProblemTLS, nil, "%s: the server at %s sent no certificate", action, addr)
	}
	digest := sha256.Sum256([]byte(keyAuthorization))
	if err := checkALPNCertificate(cs.PeerCertificates[0], t, digest[:]); err != nil {
		return problemf(ProblemIncorrectResponse, err, "%s: the certificate from %s %v", action, addr, err)
	}
	return nil
}

// checkALPNCertificate applies RFC 8737 §3 step 3 to the leaf certificate.
// Its errors read after "the certificate ".
func checkALPNCertificate(cert *x509.Certificate, t target, digest []byte) error {
	var san, ext []byte
	var nSAN, nExt int
	critical := false
	for _, e := range cert.Extensions {
		switch {
		case e.Id.Equal(oidSubjectAltName):
			san, nSAN = e.Value, nSAN+1
		case e.Id.Equal(oidACMEIdentifier):
			ext, nExt, critical = e.Value, nExt+1, e.Critical
		}
	}
	if nSAN != 1 {
		return fmt.Errorf("has %d subjectAltName extensions, want 1", nSAN)
	}
	names, err := parseGeneralNames(san)
	if err != nil {
		return fmt.Errorf("has a malformed subjectAltName: %w", err)
	}
	if len(names) != 1 {
		return fmt.Errorf("has %d subjectAltName entries, want exactly one for %s", len(names), t.host)
	}
	if !names[0].matches(t) {
		return fmt.Errorf("has subjectAltName %s, want %s", names[0], t.host)
	}
	if nExt != 1 {
		return fmt.Errorf("has %d acmeIdentifier extensions, want 1", nExt)
	}
	if !critical {
		return errors.New("has an acmeIdentifier extension that is not critical")
	}
	got, err := parseACMEIdentifier(ext)
	if err != nil {
		return fmt.Errorf("has a malformed acmeIdentifier extension: %w", err)
	}
	if !bytes.Equal(got, digest) {
		return errors.New("has an acmeIdentifier that is not the key authorization's SHA-256 digest")
	}
	return nil
}

// generalName is one GeneralName of a subjectAltName, undecoded.
type generalName struct {
	tag   cbasn1.Tag
	value []byte // the contents octets
}

func (n generalName) matches(t target) bool {
	switch n.tag {
	case tagDNSName:
		return !t.ip.IsValid() && strings.EqualFold(string(n.value), t.host)
	case tagIPAddress:
		return t.ip.IsValid() && bytes.Equal(n.value, t.ip.AsSlice())
	}
	return false
}

func (n generalName) String() string {
	switch n.tag {
	case tagDNSName:
		return fmt.Sprintf("dNSName %q", n.value)
	case tagIPAddress:
		if ip, ok := netip.AddrFromSlice(n.value); ok {
			return "iPAddress " + ip.String()
		}
		return fmt.Sprintf("iPAddress of %d bytes", len(n.value))
	}
	return fmt.Sprintf("GeneralName [%d]", uint8(n.tag)&0x1f)
}

// parseGeneralNames parses the DER value of a subjectAltName extension,
// GeneralNames ::= SEQUENCE SIZE (1..MAX) OF GeneralName (RFC 5280
// §4.2.1.6), into its entries of any kind, without decoding them.
func parseGeneralNames(der []byte) ([]generalName, error) {
	s := cryptobyte.String(der)
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, errors.New("not a DER SEQUENCE")
	}
	var names []generalName
	for !seq.Empty() {
		var val cryptobyte.String
		var tag cbasn1.Tag
		if !seq.ReadAnyASN1(&val, &tag) {
			return nil, errors.New("bad GeneralName")
		}
		if tag&0xc0 != 0x80 { // GeneralName is a CHOICE of context-specific tags
			return nil, fmt.Errorf("GeneralName with non-context-specific tag %#x", uint8(tag))
		}
		names = append(names, generalName{tag: tag, value: val})
	}
	if len(names) == 0 {
		return nil, errors.New("empty GeneralNames")
	}
	return names, nil
}

// parseACMEIdentifier parses the value of an acmeIdentifier extension,
// Authorization ::= OCTET STRING (SIZE (32)) in DER (RFC 8737 §3), and
// returns the digest.
func parseACMEIdentifier(der []byte) ([]byte, error) {
	s := cryptobyte.String(der)
	var digest cryptobyte.String
	if !s.ReadASN1(&digest, cbasn1.OCTET_STRING) || !s.Empty() {
		return nil, errors.New("not a DER OCTET STRING")
	}
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("digest of %d bytes, want %d", len(digest), sha256.Size)
	}
	return digest, nil
}

// reverseName is the reverse-mapping DNS name of ip (RFC 1035 §3.5, RFC 3596
// §2.5), without the trailing dot, as RFC 8738 §6 puts it in the SNI.
func reverseName(ip netip.Addr) string {
	const hex = "0123456789abcdef"
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d.in-addr.arpa", a[3], a[2], a[1], a[0])
		return b.String()
	}
	a := ip.As16()
	for i := len(a) - 1; i >= 0; i-- {
		b.WriteByte(hex[a[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hex[a[i]>>4])
		b.WriteByte('.')
	}
	b.WriteString("ip6.arpa")
	return b.String()
}
