package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"
)

// FuzzParse feeds arbitrary documents to Parse. It must never panic;
// every refusal is made of *Error values naming the policy and a plausible
// rule and line; and every accepted policy holds only patterns that
// compile, survives a YAML round trip unchanged, and decides a request
// built from each of its rules by a rule, never by default.
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"testdata/bad/*.yaml", "testdata/good/*.yaml", "testdata/set/*.yaml"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Add([]byte(fuzzSetDoc))
	f.Add([]byte("rules: [{spiffe_id: 'spiffe://a/{b}/*', paths: ['m/{b}/{b}/*', 'm/x y/{b}'], capabilities: [list, delete]}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "fuzz"
		p, err := Parse(name, data)
		if err != nil {
			checkParseError(t, data, p, err)
			return
		}
		rules := p.Rules()
		if p.Name() != name || len(rules) == 0 || len(rules) > MaxRules {
			t.Fatalf("accepted policy %q with %d rules", p.Name(), len(rules))
		}
		for i, r := range rules {
			checkAcceptedRule(t, i+1, r)
		}

		// Round trip: the rules, written out again, parse to the same rules.
		again, err := Parse(name, marshalRules(t, rules))
		if err != nil {
			t.Fatalf("re-parsing the accepted rules: %v", err)
		}
		ignoreLine := cmp.Transformer("noLine", func(r Rule) Rule { r.Line = 0; return r })
		if diff := cmp.Diff(rules, again.Rules(), ignoreLine); diff != "" {
			t.Fatalf("rules changed in a round trip (-first +second):\n%s", diff)
		}

		// A request made from a rule's own patterns is decided by a rule:
		// allowed, or denied by a deny rule; never by default. The probes
		// are bounded so a large policy keeps the fuzzer fast.
		set := NewSet(p)
		probes := 0
		for i, r := range rules {
			if probes > 1000 {
				break
			}
			id, vals := instantiateID(r.SPIFFEID)
			for _, pat := range r.Paths {
				for _, list := range []bool{false, true} {
					path := instantiatePath(pat, vals, list)
					caps := r.Capabilities
					switch {
					case list && (caps[0] == Deny || slices.Contains(caps, List)):
						caps = []Capability{List}
					case list:
						continue
					case caps[0] == Deny:
						caps = matrixCaps
					}
					for _, c := range caps {
						probes++
						d := set.Decide(id, path, c)
						if d.Err != nil || d.Policy == "" {
							t.Fatalf("rule %d (%s -> %s): %s %s %s: %v, want a decision by a rule", i+1, r.SPIFFEID, pat, c, id, path, d)
						}
						if r.Capabilities[0] == Deny && !d.Deny {
							t.Fatalf("rule %d is a deny rule, but %s %s %s is %v", i+1, c, id, path, d)
						}
					}
				}
			}
		}
	})
}

func checkParseError(t *testing.T, data []byte, p *Policy, err error) {
	t.Helper()
	if p != nil {
		t.Fatalf("Parse returned a policy with the error %v", err)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("error %v does not match ErrInvalid", err)
	}
	// An upper bound on the lines: the parser also breaks lines at \r, NEL,
	// LS and PS.
	lines := 2
	for _, brk := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
		lines += strings.Count(string(data), brk)
	}
	errs := allErrors(t, err)
	if len(errs) == 0 || len(errs) > maxErrors+1 {
		t.Fatalf("%d errors", len(errs))
	}
	for _, e := range errs {
		if e.Policy != "fuzz" || e.Msg == "" || e.Rule < 0 || e.Rule > MaxRules+1 || e.Line < 0 || e.Line > lines {
			t.Fatalf("implausible error %#v (document has at most %d lines)", e, lines)
		}
		switch e.Field {
		case "", "spiffe_id", "paths", "capabilities":
		default:
			t.Fatalf("error %#v names an unknown field", e)
		}
	}
}

// checkAcceptedRule checks the invariants of a rule Parse accepted.
func checkAcceptedRule(t *testing.T, idx int, r Rule) {
	t.Helper()
	id, err := compileID(r.SPIFFEID)
	if err != nil {
		t.Fatalf("rule %d: accepted spiffe_id %q does not compile: %v", idx, r.SPIFFEID, err)
	}
	if r.Line < 1 || len(r.Paths) == 0 || len(r.Paths) > MaxPathsPerRule || len(r.Capabilities) == 0 {
		t.Fatalf("rule %d: accepted %+v", idx, r)
	}
	for _, s := range r.Paths {
		pp, err := compilePath(s, id.names, true)
		if err != nil {
			t.Fatalf("rule %d: accepted path %q does not compile: %v", idx, s, err)
		}
		if pp.segs[0].name >= 0 {
			t.Fatalf("rule %d: path %q does not start with a literal mount", idx, s)
		}
	}
	if len(slices.Compact(slices.Sorted(slices.Values(r.Paths)))) != len(r.Paths) {
		t.Fatalf("rule %d: accepted duplicate paths %q", idx, r.Paths)
	}
	seen := map[Capability]bool{}
	for _, c := range r.Capabilities {
		if c.bit() == 0 || seen[c] {
			t.Fatalf("rule %d: accepted capabilities %q", idx, r.Capabilities)
		}
		seen[c] = true
	}
	if seen[Deny] && len(r.Capabilities) != 1 {
		t.Fatalf("rule %d: accepted deny with others: %q", idx, r.Capabilities)
	}
}

// marshalRules writes rules as a policy document.
func marshalRules(t *testing.T, rules []Rule) []byte {
	t.Helper()
	type yamlRule struct {
		SPIFFEID     string       `yaml:"spiffe_id"`
		Paths        []string     `yaml:"paths"`
		Capabilities []Capability `yaml:"capabilities"`
	}
	doc := struct {
		Rules []yamlRule `yaml:"rules"`
	}{}
	for _, r := range rules {
		doc.Rules = append(doc.Rules, yamlRule{r.SPIFFEID, r.Paths, r.Capabilities})
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatalf("marshalling rules: %v", err)
	}
	return out
}

// instantiateID turns a SPIFFE ID pattern into an ID it matches: {name}
// becomes "v<i>", a trailing * becomes "w". It returns the values bound.
func instantiateID(pattern string) (string, map[string]string) {
	rest := strings.TrimPrefix(pattern, "spiffe://")
	td, path, has := strings.Cut(rest, "/")
	vals := map[string]string{}
	out := "spiffe://" + td
	if has {
		for _, seg := range strings.Split(path, "/") {
			switch {
			case seg == "*":
				seg = "w"
			case strings.HasPrefix(seg, "{"):
				v := fmt.Sprintf("v%d", len(vals))
				vals[seg[1:len(seg)-1]] = v
				seg = v
			}
			out += "/" + seg
		}
	}
	return out, vals
}

// instantiatePath turns a path pattern into a path it matches, with the
// given values; for list, a trailing /* is dropped instead (the directory
// it covers).
func instantiatePath(pattern string, vals map[string]string, list bool) string {
	var segs []string
	for _, seg := range strings.Split(pattern, "/") {
		switch {
		case seg == "*" && list:
			continue
		case seg == "*":
			seg = "k"
		case strings.HasPrefix(seg, "{"):
			seg = vals[seg[1:len(seg)-1]]
		}
		segs = append(segs, seg)
	}
	return strings.Join(segs, "/")
}

// fuzzSetDoc is added to testdata/set for FuzzDecide: several names, tails
// on both sides, the trust domain's own ID, a second trust domain, and a
// deny that binds a name.
const fuzzSetDoc = `rules:
  - spiffe_id: spiffe://example.org/ns/{ns}/sa/{sa}
    paths: ["secret/{ns}/{sa}/*", "secret/{ns}/shared", "kv/{sa}/{ns}"]
    capabilities: [read, update]
  - spiffe_id: spiffe://example.org/tail/*
    paths: ["kv/tail/*", "kv/a"]
    capabilities: [read, list, delete]
  - spiffe_id: spiffe://example.org
    paths: ["kv/root", "kv/*"]
    capabilities: [create]
  - spiffe_id: spiffe://example.org/ns/{ns}/sa/*
    paths: ["secret/{ns}/private/*"]
    capabilities: [deny]
  - spiffe_id: spiffe://other.test/*
    paths: ["secret/*"]
    capabilities: [read, list]
  - spiffe_id: spiffe://other.test/x/{a}/{b}
    paths: ["secret/{b}/{a}"]
    capabilities: [deny]
`

// oracleRule is a rule compiled to regular expressions, independently of
// the package's matcher.
type oracleRule struct {
	policy string
	index  int
	src    Rule
	id     *regexp.Regexp
	names  []string
}

func newOracle(t testing.TB, set []*Policy) []oracleRule {
	t.Helper()
	var out []oracleRule
	for _, p := range set {
		for i, r := range p.Rules() {
			rest := strings.TrimPrefix(r.SPIFFEID, "spiffe://")
			td, path, has := strings.Cut(rest, "/")
			re := "^spiffe://" + regexp.QuoteMeta(td)
			var names []string
			if has {
				for _, seg := range strings.Split(path, "/") {
					switch {
					case seg == "*":
						re += "(?:/[^/]+)+"
					case strings.HasPrefix(seg, "{"):
						re += "/([^/]+)"
						names = append(names, seg[1:len(seg)-1])
					default:
						re += "/" + regexp.QuoteMeta(seg)
					}
				}
			}
			out = append(out, oracleRule{policy: p.Name(), index: i + 1, src: r, id: regexp.MustCompile(re + "$"), names: names})
		}
	}
	return out
}

// pathRegexps caches pathRegexp's results by their source, up to a bound
// (the fuzzer's values would otherwise grow it without limit).
var pathRegexps struct {
	sync.Mutex
	m map[string]*regexp.Regexp
}

// pathRegexp compiles a path pattern with the caller's values substituted.
func pathRegexp(pattern string, vals map[string]string, list bool) *regexp.Regexp {
	re := "^"
	for i, seg := range strings.Split(pattern, "/") {
		switch {
		case seg == "*" && list:
			re += "(?:/[^/]+)*"
			continue
		case seg == "*":
			re += "(?:/[^/]+)+"
			continue
		case strings.HasPrefix(seg, "{"):
			seg = vals[seg[1:len(seg)-1]]
		}
		if i > 0 {
			re += "/"
		}
		re += regexp.QuoteMeta(seg)
	}
	re += "$"
	pathRegexps.Lock()
	defer pathRegexps.Unlock()
	if cached, ok := pathRegexps.m[re]; ok {
		return cached
	}
	if len(pathRegexps.m) >= 4096 || pathRegexps.m == nil {
		pathRegexps.m = map[string]*regexp.Regexp{}
	}
	compiled := regexp.MustCompile(re)
	pathRegexps.m[re] = compiled
	return compiled
}

// applies reports whether the rule applies to a well-formed request for
// c: its SPIFFE ID pattern matches id and one of its paths matches path.
func (o oracleRule) applies(id, path string, c Capability) bool {
	m := o.id.FindStringSubmatch(id)
	if m == nil {
		return false
	}
	vals := map[string]string{}
	for i, n := range o.names {
		vals[n] = m[i+1]
	}
	for _, p := range o.src.Paths {
		if pathRegexp(p, vals, c == List).MatchString(path) {
			return true
		}
	}
	return false
}

// FuzzDecide decides arbitrary requests against a fixed Set and checks
// them against a regular-expression oracle: malformed requests are denied
// with Err; a well-formed request is allowed exactly when some rule
// grants it and no deny rule applies, and is denied by a deny rule
// exactly when one applies; the rule a Decision names really applies; and
// Decide is deterministic and independent of the order of policies. So
// that every input probes the boundaries of "/*", a well-formed request is
// also checked with each ancestor of its ID and of its path.
func FuzzDecide(f *testing.F) {
	for _, seed := range [][3]string{
		{"spiffe://example.org/ns/team-a/sa/web", "secret/team-a/db", "read"},
		{"spiffe://example.org/ns/team-a/sa/deployer", "secret/team-a", "list"},
		{"spiffe://example.org/billing", "secret/payments/root-key", "read"},
		{"spiffe://example.org/ns/a/sa/b", "secret/a/private/k", "update"},
		{"spiffe://example.org/ns/a/sa/b", "kv/b/a", "update"},
		{"spiffe://example.org/tail/x/y", "kv/tail", "list"},
		{"spiffe://example.org", "kv/root/x", "create"},
		{"spiffe://other.test/x/p/q", "secret/q/p", "read"},
		{"spiffe://other.test/x/p/q", "secret/q/p/r", "list"},
		{"spiffe://example.org/ns/a/b/sa/c", "secret/a/b/c/d", "read"},
		{"spiffe://example.org//ns", "secret/../a", "deny"},
		{"spiffe://EXAMPLE.org/ns/a/sa/b", "secret/a/b/x", "read"},
		{"spiffe://example.org/ns/a/sa/b", "secret/a/b/\u200b", "read"},
		{"", "", ""},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	policies := fuzzPolicies(f)
	set := NewSet(policies...)
	rev := slices.Clone(policies)
	slices.Reverse(rev)
	revSet := NewSet(rev...)
	oracle := newOracle(f, policies)
	f.Fuzz(func(t *testing.T, id, path, capability string) {
		c := Capability(capability)
		if !checkDecision(t, set, revSet, oracle, id, path, c) {
			return // malformed: no ancestors to try
		}
		ids := ancestors(id, len("spiffe://"))
		paths := ancestors(path, 0)
		for _, aid := range ids {
			for _, apath := range paths {
				checkDecision(t, set, revSet, oracle, aid, apath, c)
			}
		}
	})
}

// ancestors returns up to 6 of s and its ancestors, dropping one trailing
// "/segment" at a time, but never cutting at a slash before index min.
func ancestors(s string, min int) []string {
	out := []string{s}
	for len(out) < 6 {
		i := strings.LastIndexByte(s, '/')
		if i < min {
			break
		}
		s = s[:i]
		out = append(out, s)
	}
	return out
}

// checkDecision decides one request in set and checks it against the
// oracle and revSet (the same policies in reverse order). It reports
// whether the request was well-formed.
func checkDecision(t *testing.T, set, revSet *Set, oracle []oracleRule, id, path string, c Capability) bool {
	t.Helper()
	d := set.Decide(id, path, c)
	if d.SPIFFEID != id || d.Path != path || d.Capability != c {
		t.Fatalf("decision %+v does not echo the request", d)
	}
	if again := set.Decide(id, path, c); !sameDecision(d, again) {
		t.Fatalf("Decide is not deterministic: %+v then %+v", d, again)
	}
	if other := revSet.Decide(id, path, c); !sameDecision(d, other) {
		t.Fatalf("Decide depends on the order of policies: %v vs %v", d, other)
	}
	s := d.String()
	if strings.ContainsAny(s, "\n\r") || strings.HasPrefix(s, "allowed by ") != d.Allowed {
		t.Fatalf("String() = %q for %+v", s, d)
	}

	_, idErr := spiffeid.FromString(id)
	_, pathErr := CleanPath(path)
	if !c.grantable() || idErr != nil || pathErr != nil {
		if d.Allowed || d.Deny || d.Err == nil || d.Policy != "" || d.Rule != 0 {
			t.Fatalf("malformed request (%v, %v, capability %q) decided %+v", idErr, pathErr, c, d)
		}
		if c.grantable() && idErr == nil && !errors.Is(d.Err, ErrBadPath) {
			t.Fatalf("bad path refused with %v, which does not wrap ErrBadPath", d.Err)
		}
		return false
	}
	if d.Err != nil {
		t.Fatalf("well-formed request refused: %v", d.Err)
	}

	var allow, deny bool
	for _, o := range oracle {
		if !o.applies(id, path, c) {
			continue
		}
		if o.src.Capabilities[0] == Deny {
			deny = true
		} else if slices.Contains(o.src.Capabilities, c) {
			allow = true
		}
	}
	if d.Allowed != (allow && !deny) || d.Deny != deny {
		t.Fatalf("%s %s %s: %v; oracle: a rule allows: %v, a deny rule applies: %v", c, id, path, d, allow, deny)
	}
	if d.Policy == "" {
		if d.Rule != 0 || d.SPIFFEIDPattern != "" || d.PathPattern != "" || d.ResolvedPath() != "" {
			t.Fatalf("default deny with a rule: %+v", d)
		}
		return true
	}
	// The rule named really decided.
	var named *oracleRule
	for i := range oracle {
		if oracle[i].policy == d.Policy && oracle[i].index == d.Rule {
			named = &oracle[i]
		}
	}
	switch {
	case named == nil:
		t.Fatalf("%v names a rule that does not exist", d)
	case named.src.SPIFFEID != d.SPIFFEIDPattern || !slices.Contains(named.src.Paths, d.PathPattern):
		t.Fatalf("%v: the patterns are not those of the rule %+v", d, named.src)
	case !named.applies(id, path, c):
		t.Fatalf("%v: the rule does not apply", d)
	case d.Deny != (named.src.Capabilities[0] == Deny):
		t.Fatalf("%v: Deny is %v for the rule %+v", d, d.Deny, named.src)
	case d.Allowed && !slices.Contains(named.src.Capabilities, c):
		t.Fatalf("%v: the rule does not grant %s", d, c)
	}
	// The resolved path is a pattern without names that matches.
	resolved := d.ResolvedPath()
	if strings.ContainsAny(resolved, "{}") || !pathRegexp(resolved, nil, c == List).MatchString(path) {
		t.Fatalf("%v: resolved path %q does not match %q", d, resolved, path)
	}
	// A decision by a rule is for a caller of that rule's trust domain.
	if td := strings.SplitN(strings.TrimPrefix(d.SPIFFEIDPattern, "spiffe://"), "/", 2)[0]; !strings.HasPrefix(id, "spiffe://"+td+"/") && id != "spiffe://"+td {
		t.Fatalf("%v: caller outside the rule's trust domain", d)
	}
	return true
}

// fuzzPolicies is testdata/set plus fuzzSetDoc.
func fuzzPolicies(t testing.TB) []*Policy {
	return append(loadPolicies(t), mustParse(t, "fuzz-set", fuzzSetDoc))
}

// sameDecision compares decisions, comparing Err by its text.
func sameDecision(a, b Decision) bool {
	ea, eb := a.Err, b.Err
	a.Err, b.Err = nil, nil
	if (ea == nil) != (eb == nil) || ea != nil && ea.Error() != eb.Error() {
		return false
	}
	return a == b && a.String() == b.String()
}
