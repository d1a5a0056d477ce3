// Package entry owns SPIFFE registration entries: which SPIFFE ID a
// workload receives when the facts attested about it (its selectors) match.
// It defines the entry, its validation against a trust domain, its
// canonical form and the matching rule.
//
// It is pure domain code: it never does I/O, never imports net/http, gRPC
// or a SQL driver, and takes its randomness and time from the caller.
// Persistence belongs to storage; attestation belongs to identity/attest.
package entry

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigil-pki/sigil/identity/attest"
)

// ReservedPath is the path prefix of SPIFFE IDs Sigil keeps for its own
// identities; no entry may hand one out.
const ReservedPath = "/sigil"

// idLen is the length of an entry ID: 16 random bytes in lowercase hex.
const idLen = 32

// maxHintLen bounds the free-form hint.
const maxHintLen = 256

// ErrInvalid is wrapped by every FieldError, so callers can branch on
// errors.Is(err, ErrInvalid) for "the entry was refused".
var ErrInvalid = errors.New("invalid registration entry")

// FieldError says which field of an entry is wrong and why.
type FieldError struct {
	// Field is the field's name in snake_case, e.g. "spiffe_id" or
	// "selectors[2]".
	Field string
	// Reason says what is wrong with it.
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("invalid registration entry: %s: %s", e.Field, e.Reason)
}

// Is makes every FieldError match ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// Entry is one registration entry: a workload whose attested selectors
// include all of Selectors is issued SVIDs for SPIFFEID.
type Entry struct {
	// ID is 16 random bytes in lowercase hex, assigned by New.
	ID string
	// SPIFFEID is the identity handed out, e.g. spiffe://example.org/web.
	SPIFFEID string
	// ParentID, when set, is the SPIFFE ID of the agent allowed to obtain
	// this identity; empty means the local server.
	ParentID string
	// Selectors are "type:value" facts, all of which a workload must have.
	// Normalize sorts them and removes duplicates.
	Selectors []string
	// X509SVIDTTL and JWTSVIDTTL are the SVID lifetimes; 0 means the
	// server's default (see Defaults).
	X509SVIDTTL time.Duration
	JWTSVIDTTL  time.Duration
	// DNSNames are added to the X.509-SVID as DNS SANs.
	DNSNames []string
	// Hint is an optional label telling apart several identities a
	// workload receives.
	Hint string
	// CreatedAt and UpdatedAt are set by New and by the caller on update.
	CreatedAt time.Time
	UpdatedAt time.Time
	// Revision is 1 when created and grows by one with every update.
	Revision int64
}

// New returns e with a fresh random ID, CreatedAt and UpdatedAt set to
// now, Revision 1 and its selectors normalised. r supplies the ID's
// randomness; nil means crypto/rand. New does not validate: call Validate.
func New(r io.Reader, now time.Time, e Entry) (Entry, error) {
	id, err := NewID(r)
	if err != nil {
		return Entry{}, err
	}
	e.ID = id
	e.CreatedAt, e.UpdatedAt = now, now
	e.Revision = 1
	return e.Normalize(), nil
}

// NewID returns 16 bytes from r (nil means crypto/rand) in lowercase hex.
func NewID(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [idLen / 2]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("generating registration entry ID: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Normalize returns e with its selectors sorted and duplicates removed, and
// duplicate DNS names removed (their order is kept: the first is the
// certificate's preferred name). The argument's slices are not modified.
func (e Entry) Normalize() Entry {
	sel := slices.Clone(e.Selectors)
	slices.Sort(sel)
	e.Selectors = slices.Compact(sel)
	if e.DNSNames != nil {
		seen := make(map[string]bool, len(e.DNSNames))
		names := make([]string, 0, len(e.DNSNames))
		for _, n := range e.DNSNames {
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
		e.DNSNames = names
	}
	return e
}

// Defaults returns e with a zero X509SVIDTTL or JWTSVIDTTL replaced by the
// given default.
func (e Entry) Defaults(x509TTL, jwtTTL time.Duration) Entry {
	if e.X509SVIDTTL == 0 {
		e.X509SVIDTTL = x509TTL
	}
	if e.JWTSVIDTTL == 0 {
		e.JWTSVIDTTL = jwtTTL
	}
	return e
}

// Validate checks e against the trust domain (a name such as
// "example.org") and the longest TTL allowed (maxTTL <= 0 means no upper
// bound). It returns nil or every problem found, each a *FieldError
// (joined with errors.Join) that matches ErrInvalid.
func (e Entry) Validate(trustDomain string, maxTTL time.Duration) error {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return fmt.Errorf("validating registration entry: trust domain %q: %w", trustDomain, err)
	}
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if len(e.ID) != idLen || strings.IndexFunc(e.ID, func(r rune) bool { return r > 0x7f || !isLowerHex(byte(r)) }) >= 0 {
		add("id", "%q is not %d lowercase hex digits", e.ID, idLen)
	}
	if reason := checkSPIFFEID(e.SPIFFEID, td, true); reason != "" {
		add("spiffe_id", "%s", reason)
	}
	if e.ParentID != "" {
		if reason := checkSPIFFEID(e.ParentID, td, false); reason != "" {
			add("parent_id", "%s", reason)
		}
	}
	if len(e.Selectors) == 0 {
		add("selectors", "at least one selector is required")
	}
	for i, s := range e.Selectors {
		if _, err := attest.ParseSelector(s); err != nil {
			add(fmt.Sprintf("selectors[%d]", i), "%v", err)
		}
	}
	for _, ttl := range []struct {
		field string
		d     time.Duration
	}{{"x509_svid_ttl", e.X509SVIDTTL}, {"jwt_svid_ttl", e.JWTSVIDTTL}} {
		switch {
		case ttl.d < 0:
			add(ttl.field, "%s is negative (0 means the default)", ttl.d)
		case maxTTL > 0 && ttl.d > maxTTL:
			add(ttl.field, "%s exceeds the maximum %s", ttl.d, maxTTL)
		}
	}
	for i, n := range e.DNSNames {
		if err := checkDNSName(n); err != nil {
			add(fmt.Sprintf("dns_names[%d]", i), "%v", err)
		}
	}
	if len(e.Hint) > maxHintLen {
		add("hint", "%d bytes, at most %d allowed", len(e.Hint), maxHintLen)
	}
	if strings.IndexFunc(e.Hint, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		add("hint", "contains a control character")
	}
	return errors.Join(errs...)
}

// checkSPIFFEID returns why s is not an acceptable SPIFFE ID in td, or "".
// A workload ID must also not be the trust domain's own ID nor under
// ReservedPath.
func checkSPIFFEID(s string, td spiffeid.TrustDomain, workload bool) string {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return fmt.Sprintf("%q is not a SPIFFE ID: %v", s, err)
	}
	if !id.MemberOf(td) {
		return fmt.Sprintf("%q is outside the trust domain %q", s, td.Name())
	}
	if !workload {
		return ""
	}
	p := id.Path()
	if p == "" {
		return fmt.Sprintf("%q is the trust domain's own ID, not a workload's", s)
	}
	if p == ReservedPath || strings.HasPrefix(p, ReservedPath+"/") {
		return fmt.Sprintf("%q is under the reserved path %s/", s, ReservedPath)
	}
	return ""
}

// checkDNSName accepts a lowercase DNS name of LDH labels, with an
// optional leading "*." wildcard label.
func checkDNSName(n string) error {
	if n == "" || len(n) > 253 {
		return fmt.Errorf("DNS name %q must be 1 to 253 characters", n)
	}
	labels := strings.Split(n, ".")
	for i, l := range labels {
		if i == 0 && l == "*" && len(labels) > 1 {
			continue
		}
		if l == "" || len(l) > 63 {
			return fmt.Errorf("DNS name %q: label %d must be 1 to 63 characters", n, i)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("DNS name %q: label %q starts or ends with a hyphen", n, l)
		}
		for j := 0; j < len(l); j++ {
			c := l[j]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("DNS name %q: character %q not allowed (want lowercase letters, digits, hyphens)", n, c)
			}
		}
	}
	return nil
}

// Matches reports whether a workload with the given attested selectors
// gets this entry: every one of the entry's selectors must be among them.
// An entry without selectors matches nothing.
func (e Entry) Matches(selectors []string) bool {
	if len(e.Selectors) == 0 {
		return false
	}
	have := make(map[string]bool, len(selectors))
	for _, s := range selectors {
		have[s] = true
	}
	for _, s := range e.Selectors {
		if !have[s] {
			return false
		}
	}
	return true
}

func isLowerHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }
