package policy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Set is the collection of policies requests are decided against. It is
// immutable once built and safe for concurrent use; to change the
// policies, build a new Set and swap it in.
type Set struct {
	// domains indexes the rules by the trust domain of their SPIFFE ID
	// pattern.
	domains map[string]*domainIndex
}

// domainIndex holds the rules of one trust domain: those whose SPIFFE ID
// pattern starts with a literal segment, by that segment ("" for the
// pattern of the trust domain's own ID), and all others. Each list is in
// rank order.
type domainIndex struct {
	byFirst map[string][]*ref
	other   []*ref
}

// ref is one rule of one policy of the Set.
type ref struct {
	// rank orders the Set's rules: by policy, then rule. Among the rules
	// that could decide, the lowest rank is reported.
	rank   int
	policy *Policy
	index  int // 1-based, within policy
	r      *rule
}

// NewSet returns the Set of the given policies; nil policies are skipped.
// Whether a request is allowed never depends on the order of the
// arguments. Policies are ordered by name (policies sharing a name keep
// their argument order, and all of them apply), and that order only
// chooses which of several applicable rules a Decision reports.
func NewSet(policies ...*Policy) *Set {
	s := &Set{domains: map[string]*domainIndex{}}
	var sorted []*Policy
	for _, p := range policies {
		if p != nil {
			sorted = append(sorted, p)
		}
	}
	slices.SortStableFunc(sorted, func(a, b *Policy) int { return strings.Compare(a.name, b.name) })
	rank := 0
	for _, p := range sorted {
		for i := range p.rules {
			r := &p.rules[i]
			x := &ref{rank: rank, policy: p, index: i + 1, r: r}
			rank++
			d := s.domains[r.id.td]
			if d == nil {
				d = &domainIndex{byFirst: map[string][]*ref{}}
				s.domains[r.id.td] = d
			}
			switch {
			case len(r.id.segs) == 0 && !r.id.tail:
				d.byFirst[""] = append(d.byFirst[""], x)
			case len(r.id.segs) > 0 && r.id.segs[0].name < 0:
				d.byFirst[r.id.segs[0].lit] = append(d.byFirst[r.id.segs[0].lit], x)
			default:
				d.other = append(d.other, x)
			}
		}
	}
	return s
}

// Decision is the outcome of Decide, with what decided it.
type Decision struct {
	// Allowed is true only when a rule grants the capability and no deny
	// rule applies.
	Allowed bool

	// SPIFFEID, Path and Capability are the request, as given to Decide.
	SPIFFEID   string
	Path       string
	Capability Capability

	// Policy and Rule name the rule that decided: the policy's name and
	// the rule's 1-based index in it. For a denial by default, Policy is
	// empty and Rule is 0.
	Policy string
	Rule   int
	// Deny is set when an explicit deny rule decided.
	Deny bool
	// SPIFFEIDPattern and PathPattern are the rule's patterns that
	// matched, as written in the policy; empty for a denial by default.
	SPIFFEIDPattern string
	PathPattern     string

	// Err is non-nil when the request itself is malformed, and says how:
	// the capability is not one of Read, Create, Update, Delete and List,
	// the caller is not a SPIFFE ID, or the path is not clean (Err then
	// wraps ErrBadPath). Such a request is denied by default.
	Err error

	// id and path are the matching patterns, for ResolvedPath.
	id   *idPattern
	path *pathPattern
}

// ResolvedPath returns PathPattern with its named segments replaced by
// the caller's values, e.g. secret/team-a/* for secret/{ns}/*; it is
// PathPattern itself when that has no named segment, and empty for a
// denial by default.
func (d Decision) ResolvedPath() string {
	if d.path == nil {
		return ""
	}
	var b bindings
	if d.path.named {
		id, err := spiffeid.FromString(d.SPIFFEID)
		if err != nil || !d.id.match(id.Path(), &b) {
			return d.PathPattern // cannot happen for a Decision from Decide
		}
	}
	return d.path.substitute(&b)
}

// String explains the decision in one line, e.g.
//
//	allowed by policy "billing" rule 2 (spiffe://example.org/billing -> secret/payments/*)
//	allowed by policy "teams" rule 1 (spiffe://example.org/ns/{ns}/sa/* -> secret/{ns}/* as secret/team-a/*)
//	denied by policy "lockdown" rule 1 (deny spiffe://example.org/* -> secret/payments/root-key)
//	denied: no rule grants read on secret/x to spiffe://example.org/y (default deny)
//	denied: bad secret path "secret//x": has an empty segment ("//") (default deny)
func (d Decision) String() string {
	var b strings.Builder
	switch {
	case d.Err != nil:
		b.WriteString("denied: ")
		b.WriteString(d.Err.Error())
		b.WriteString(" (default deny)")
		return b.String()
	case d.Policy == "":
		fmt.Fprintf(&b, "denied: no rule grants %s on %s to %s (default deny)", d.Capability, d.Path, d.SPIFFEID)
		return b.String()
	case d.Allowed:
		b.WriteString("allowed by policy ")
	default:
		b.WriteString("denied by policy ")
	}
	b.WriteString(strconv.Quote(d.Policy))
	b.WriteString(" rule ")
	b.WriteString(strconv.Itoa(d.Rule))
	b.WriteString(" (")
	if d.Deny {
		b.WriteString("deny ")
	}
	b.WriteString(d.SPIFFEIDPattern)
	b.WriteString(" -> ")
	b.WriteString(d.PathPattern)
	if r := d.ResolvedPath(); r != d.PathPattern {
		b.WriteString(" as ")
		b.WriteString(r)
	}
	b.WriteString(")")
	return b.String()
}

var errNotGrantable = errors.New("deny is not a capability that can be asked for")

// Decide decides whether the caller spiffeID may use capability c on the
// secret path. A rule applies when its SPIFFE ID pattern matches the
// caller and one of its paths, with the caller's values substituted,
// matches path (for List, a pattern ending in "/*" also matches its own
// prefix: see the package documentation). The request is:
//
//   - denied, naming the deny rule, if any applicable rule is a deny rule;
//   - otherwise allowed, naming the rule, if any applicable rule grants c;
//   - otherwise denied by default.
//
// Of several rules that could decide, the one reported is the first by
// policy name, then by rule order. A malformed request (see Decision.Err)
// is denied by default. A nil Set denies everything. Decide does not
// allocate, except to describe a malformed request.
func (s *Set) Decide(spiffeID, path string, c Capability) Decision {
	d := Decision{SPIFFEID: spiffeID, Path: path, Capability: c}
	if !c.grantable() {
		if c == Deny {
			d.Err = errNotGrantable
		} else {
			d.Err = fmt.Errorf("unknown capability %s (want read, create, update, delete or list)", quote(string(c)))
		}
		return d
	}
	id, err := spiffeid.FromString(spiffeID)
	if err != nil {
		d.Err = fmt.Errorf("caller %s is not a SPIFFE ID: %w", quote(spiffeID), err)
		return d
	}
	if err := checkPath(path); err != nil {
		d.Err = fmt.Errorf("%w %s: %w", ErrBadPath, quote(path), err)
		return d
	}
	if s == nil {
		return d
	}
	dom := s.domains[id.TrustDomain().Name()]
	if dom == nil {
		return d
	}
	idPath := id.Path()
	first, _ := nextSegment(strings.TrimPrefix(idPath, "/"))
	list := c == List
	bit := c.bit()

	var deny, allow *ref
	var denyPath, allowPath *pathPattern
	for _, refs := range [2][]*ref{dom.byFirst[first], dom.other} {
		for _, x := range refs {
			r := x.r
			if deny != nil && x.rank > deny.rank {
				break // nothing later can change the outcome
			}
			if !r.deny && (r.caps&bit == 0 || deny != nil || allow != nil && x.rank > allow.rank) {
				continue
			}
			var b bindings
			if !r.id.match(idPath, &b) {
				continue
			}
			for _, pp := range r.paths {
				if !pp.match(path, &b, list) {
					continue
				}
				if r.deny {
					deny, denyPath = x, pp
				} else {
					allow, allowPath = x, pp
				}
				break
			}
		}
	}
	switch {
	case deny != nil:
		d.fill(deny, denyPath)
		d.Deny = true
	case allow != nil:
		d.fill(allow, allowPath)
		d.Allowed = true
	}
	return d
}

func (d *Decision) fill(x *ref, pp *pathPattern) {
	d.Policy = x.policy.name
	d.Rule = x.index
	d.SPIFFEIDPattern = x.r.id.src
	d.PathPattern = pp.src
	d.id, d.path = x.r.id, pp
}
