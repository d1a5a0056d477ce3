package policy

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// loadPolicies parses testdata/set/*.yaml, each named after its file.
func loadPolicies(t testing.TB) []*Policy {
	t.Helper()
	files, err := filepath.Glob("testdata/set/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/set/*.yaml: %v", err)
	}
	var ps []*Policy
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, mustParse(t, strings.TrimSuffix(filepath.Base(file), ".yaml"), string(data)))
	}
	return ps
}

// setOf parses each document, named p1, p2, ..., into one Set.
func setOf(t testing.TB, docs ...string) *Set {
	t.Helper()
	var ps []*Policy
	for i, doc := range docs {
		ps = append(ps, mustParse(t, "p"+string(rune('1'+i)), doc))
	}
	return NewSet(ps...)
}

var matrixCaps = []Capability{Read, Create, Update, Delete, List}

// TestAccessMatrix decides every capability for three callers on four
// paths against testdata/set, and compares with the matrix written out in
// full: one letter per capability allowed (r c u d l), '-' where denied.
func TestAccessMatrix(t *testing.T) {
	const (
		web      = "spiffe://example.org/ns/team-a/sa/web"
		deployer = "spiffe://example.org/ns/team-a/sa/deployer"
		billing  = "spiffe://example.org/billing"
	)
	want := []struct {
		id, path string
		caps     string // r c u d l
	}{
		{web, "secret/team-a", "----l"},
		{web, "secret/team-a/db", "r---l"},
		{web, "secret/payments/stripe", "-----"},
		{web, "secret/payments/root-key", "-----"},

		{deployer, "secret/team-a", "----l"},
		{deployer, "secret/team-a/db", "rcudl"},
		{deployer, "secret/payments/stripe", "-----"},
		{deployer, "secret/payments/root-key", "-----"},

		{billing, "secret/team-a", "-----"},
		{billing, "secret/team-a/db", "-----"},
		{billing, "secret/payments/stripe", "rcu-l"},
		{billing, "secret/payments/root-key", "-----"},
	}
	set := NewSet(loadPolicies(t)...)
	var got []string
	for _, w := range want {
		var b strings.Builder
		for i, c := range matrixCaps {
			d := set.Decide(w.id, w.path, c)
			if d.Err != nil {
				t.Fatalf("Decide(%s, %s, %s): %v", w.id, w.path, c, d.Err)
			}
			if d.Allowed {
				b.WriteByte("rcudl"[i])
			} else {
				b.WriteByte('-')
			}
		}
		got = append(got, w.id+" "+w.path+" "+b.String())
	}
	var wantRows []string
	for _, w := range want {
		wantRows = append(wantRows, w.id+" "+w.path+" "+w.caps)
	}
	if diff := cmp.Diff(wantRows, got); diff != "" {
		t.Errorf("access matrix (-want +got):\n%s", diff)
	}

	// The root key is denied to billing by the deny rule, not by default,
	// although billing's own policy grants secret/payments/*.
	for _, c := range matrixCaps {
		d := set.Decide(billing, "secret/payments/root-key", c)
		if d.Allowed || !d.Deny || d.Policy != "lockdown" || d.Rule != 1 {
			t.Errorf("%s on the root key: %v, want denied by lockdown rule 1", c, d)
		}
	}
}

// TestDecide covers the matching rules case by case. Each case names the
// rule that must decide ("" for a default deny).
func TestDecide(t *testing.T) {
	named := `rules:
  - spiffe_id: spiffe://example.org/ns/{ns}/sa/{sa}
    paths: ["secret/{ns}/{sa}/*", "secret/{ns}/shared", "secret/shared/{sa}"]
    capabilities: [read]
  - spiffe_id: spiffe://example.org/tail/*
    paths: ["kv/tail/*"]
    capabilities: [read]
  - spiffe_id: spiffe://example.org
    paths: ["kv/root"]
    capabilities: [read]
  - spiffe_id: spiffe://example.org/*
    paths: ["kv/anyone/*"]
    capabilities: [read]
`
	set := setOf(t, named)
	tests := []struct {
		name      string
		id, path  string
		c         Capability
		allowedBy string // "p1 rule N", or "" for a default deny
	}{
		{"named segments substituted", "spiffe://example.org/ns/team-a/sa/web", "secret/team-a/web/db", Read, "p1 rule 1"},
		{"named path tail needs a segment", "spiffe://example.org/ns/team-a/sa/web", "secret/team-a/web", Read, ""},
		{"named path tail spans segments", "spiffe://example.org/ns/team-a/sa/web", "secret/team-a/web/x/y/z", Read, "p1 rule 1"},
		{"other namespace", "spiffe://example.org/ns/team-a/sa/web", "secret/team-b/web/db", Read, ""},
		{"other service", "spiffe://example.org/ns/team-a/sa/web", "secret/team-a/api/db", Read, ""},
		{"names swapped", "spiffe://example.org/ns/web/sa/team-a", "secret/team-a/web/db", Read, ""},
		{"second path", "spiffe://example.org/ns/team-a/sa/web", "secret/team-a/shared", Read, "p1 rule 1"},
		{"third path", "spiffe://example.org/ns/team-a/sa/web", "secret/shared/web", Read, "p1 rule 1"},
		{"name does not span segments in the ID", "spiffe://example.org/ns/team/a/sa/web", "secret/team/a/web/db", Read, ""},
		{"name does not span segments in the path", "spiffe://example.org/ns/team/sa/web", "secret/team/a/web/db", Read, ""},
		{"exact ID has no tail", "spiffe://example.org/ns/team-a/sa/web/extra", "secret/team-a/web/db", Read, ""},
		{"ID too short", "spiffe://example.org/ns/team-a/sa", "secret/team-a/sa/db", Read, ""},
		{"ID pattern is case-sensitive", "spiffe://example.org/NS/team-a/sa/web", "secret/team-a/web/db", Read, ""},
		{"path pattern is case-sensitive", "spiffe://example.org/ns/team-a/sa/web", "Secret/team-a/web/db", Read, ""},
		{"value compared case-sensitively", "spiffe://example.org/ns/Team-A/sa/web", "secret/team-a/web/db", Read, ""},
		{"not granted capability", "spiffe://example.org/ns/team-a/sa/web", "secret/team-a/web/db", Update, ""},

		{"ID tail matches one segment", "spiffe://example.org/tail/x", "kv/tail/k", Read, "p1 rule 2"},
		{"ID tail matches several segments", "spiffe://example.org/tail/x/y/z", "kv/tail/k", Read, "p1 rule 2"},
		{"ID tail does not match its prefix", "spiffe://example.org/tail", "kv/tail/k", Read, ""},
		{"ID tail is per segment", "spiffe://example.org/tailx/y", "kv/tail/k", Read, ""},
		{"path tail does not match its prefix", "spiffe://example.org/tail/x", "kv/tail", Read, ""},
		{"path tail is per segment", "spiffe://example.org/tail/x", "kv/tailx/k", Read, ""},

		{"trust domain ID", "spiffe://example.org", "kv/root", Read, "p1 rule 3"},
		{"trust domain ID only", "spiffe://example.org/x", "kv/root", Read, ""},
		{"trust domain wildcard", "spiffe://example.org/x", "kv/anyone/k", Read, "p1 rule 4"},
		{"trust domain wildcard excludes the trust domain", "spiffe://example.org", "kv/anyone/k", Read, ""},

		{"foreign trust domain", "spiffe://example.com/x", "kv/anyone/k", Read, ""},
		{"subdomain", "spiffe://evil.example.org/x", "kv/anyone/k", Read, ""},
		{"suffix", "spiffe://example.org.evil/x", "kv/anyone/k", Read, ""},
		{"foreign trust domain, named", "spiffe://example.net/ns/team-a/sa/web", "secret/team-a/web/db", Read, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := set.Decide(tt.id, tt.path, tt.c)
			if d.Err != nil {
				t.Fatalf("Decide: %v", d.Err)
			}
			got := ""
			if d.Allowed {
				got = d.Policy + " rule " + string(rune('0'+d.Rule))
			} else if d.Policy != "" {
				t.Fatalf("denied by a rule, but the policy has no deny rule: %v", d)
			}
			if got != tt.allowedBy {
				t.Errorf("Decide(%s, %s, %s) = %v; want allowed by %q", tt.id, tt.path, tt.c, d, tt.allowedBy)
			}
		})
	}
}

// TestDenyWins: a deny rule wins over any allow, in the same policy or
// another, whatever the order of policies and rules.
func TestDenyWins(t *testing.T) {
	allow := `rules:
  - spiffe_id: spiffe://example.org/*
    paths: ["secret/*"]
    capabilities: [read, create, update, delete, list]
`
	denyLater := `rules:
  - spiffe_id: spiffe://example.org/ns/{ns}/sa/*
    paths: ["secret/{ns}/*"]
    capabilities: [read, list]
  - spiffe_id: spiffe://example.org/ns/{ns}/sa/intruder
    paths: ["secret/{ns}/keys/*"]
    capabilities: [deny]
`
	const intruder = "spiffe://example.org/ns/a/sa/intruder"
	for _, order := range [][]string{{"allow", "deny"}, {"deny", "allow"}} {
		t.Run(strings.Join(order, "-"), func(t *testing.T) {
			var ps []*Policy
			for i, which := range order {
				doc := allow
				if which == "deny" {
					doc = denyLater
				}
				// Name them so that sorting keeps the given order.
				ps = append(ps, mustParse(t, string(rune('a'+i))+"-"+which, doc))
			}
			set := NewSet(ps...)
			for _, c := range matrixCaps {
				for _, path := range []string{"secret/a/keys/k", "secret/a/keys/k/v"} {
					d := set.Decide(intruder, path, c)
					if d.Allowed || !d.Deny || !strings.HasSuffix(d.Policy, "-deny") || d.Rule != 2 {
						t.Errorf("%s %s: %v, want denied by the deny rule", c, path, d)
					}
				}
				// Listing the keys directory is denied too, since the deny
				// pattern ends in "/*".
				if d := set.Decide(intruder, "secret/a/keys", List); d.Allowed || !d.Deny {
					t.Errorf("list secret/a/keys: %v, want denied", d)
				}
				// The deny binds {ns}: other namespaces are untouched.
				if d := set.Decide(intruder, "secret/b/keys/k", c); !d.Allowed {
					t.Errorf("%s secret/b/keys/k: %v, want allowed", c, d)
				}
				// Other callers are untouched.
				if d := set.Decide("spiffe://example.org/ns/a/sa/web", "secret/a/keys/k", c); !d.Allowed {
					t.Errorf("web: %s secret/a/keys/k: %v, want allowed", c, d)
				}
			}
		})
	}
}

func TestDefaultDeny(t *testing.T) {
	const id, path = "spiffe://example.org/web", "secret/web"
	var nilSet *Set
	sets := map[string]*Set{
		"nil":         nilSet,
		"empty":       NewSet(),
		"nil policy":  NewSet(nil, nil),
		"other rules": NewSet(loadPolicies(t)...),
		"deny only":   setOf(t, "rules: [{spiffe_id: 'spiffe://example.org/*', paths: [other/x], capabilities: [deny]}]"),
		"grants something else": setOf(t, "rules: [{spiffe_id: 'spiffe://example.org/web', paths: [secret/web], capabilities: [list]}]",
			"rules: [{spiffe_id: 'spiffe://example.org/web', paths: [secret/web/*], capabilities: [read]}]"),
	}
	for name, set := range sets {
		t.Run(name, func(t *testing.T) {
			d := set.Decide(id, path, Read)
			want := Decision{SPIFFEID: id, Path: path, Capability: Read}
			if diff := cmp.Diff(want, d, cmp.AllowUnexported(Decision{})); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
			if got, want := d.String(), "denied: no rule grants read on secret/web to spiffe://example.org/web (default deny)"; got != want {
				t.Errorf("String() = %q, want %q", got, want)
			}
		})
	}
}

// TestList pins down which list paths a pattern covers.
func TestList(t *testing.T) {
	set := setOf(t, `rules:
  - spiffe_id: spiffe://example.org/ns/{ns}/sa/*
    paths: ["secret/{ns}/*", "secret/exact/dir"]
    capabilities: [list]
  - spiffe_id: spiffe://example.org/ns/{ns}/sa/*
    paths: ["secret/{ns}/*"]
    capabilities: [read]
`)
	const caller = "spiffe://example.org/ns/team-a/sa/web"
	tests := []struct {
		path      string
		list      bool
		read      bool
		rule      int    // rule that allows listing
		pattern   string // its path pattern
		substPath string // ResolvedPath
	}{
		{"secret", false, false, 0, "", ""},
		{"secret/team-a", true, false, 1, "secret/{ns}/*", "secret/team-a/*"},
		{"secret/team-a/sub", true, true, 1, "secret/{ns}/*", "secret/team-a/*"},
		{"secret/team-a/sub/deeper", true, true, 1, "secret/{ns}/*", "secret/team-a/*"},
		{"secret/team-ab", false, false, 0, "", ""},
		{"secret/team-b", false, false, 0, "", ""},
		{"secret/exact/dir", true, false, 1, "secret/exact/dir", "secret/exact/dir"},
		{"secret/exact", false, false, 0, "", ""},
		{"secret/exact/dir/sub", false, false, 0, "", ""},
		{"other/team-a", false, false, 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			d := set.Decide(caller, tt.path, List)
			if d.Allowed != tt.list || d.Rule != tt.rule || d.PathPattern != tt.pattern || d.ResolvedPath() != tt.substPath {
				t.Errorf("list %s: %v (resolved %q); want allowed=%v by rule %d via %q as %q",
					tt.path, d, d.ResolvedPath(), tt.list, tt.rule, tt.pattern, tt.substPath)
			}
			if d := set.Decide(caller, tt.path, Read); d.Allowed != tt.read {
				t.Errorf("read %s: %v, want allowed=%v", tt.path, d, tt.read)
			}
		})
	}
}

// TestMalformedRequests: a request that is not well-formed is denied with
// Err set, never matched.
func TestMalformedRequests(t *testing.T) {
	// This set would allow anything well-formed in example.org.
	set := setOf(t, "rules: [{spiffe_id: 'spiffe://example.org/*', paths: ['secret/*'], capabilities: [read, create, update, delete, list]}]")
	tests := []struct {
		name     string
		id, path string
		c        Capability
		badPath  bool
	}{
		{"deny capability", "spiffe://example.org/web", "secret/a", Deny, false},
		{"unknown capability", "spiffe://example.org/web", "secret/a", "write", false},
		{"empty capability", "spiffe://example.org/web", "secret/a", "", false},
		{"uppercase capability", "spiffe://example.org/web", "secret/a", "READ", false},
		{"empty ID", "", "secret/a", Read, false},
		{"not a SPIFFE ID", "https://example.org/web", "secret/a", Read, false},
		{"ID with empty segment", "spiffe://example.org//web", "secret/a", Read, false},
		{"ID with dot segment", "spiffe://example.org/./web", "secret/a", Read, false},
		{"ID with trailing slash", "spiffe://example.org/web/", "secret/a", Read, false},
		{"uppercase trust domain", "spiffe://EXAMPLE.org/web", "secret/a", Read, false},
		{"ID with query", "spiffe://example.org/web?x", "secret/a", Read, false},
		{"ID that is a pattern", "spiffe://example.org/*", "secret/a", Read, false},
		{"empty path", "spiffe://example.org/web", "", Read, true},
		{"dotdot path", "spiffe://example.org/web", "secret/../other/a", Read, true},
		{"dot path", "spiffe://example.org/web", "secret/./a", Read, true},
		{"leading slash", "spiffe://example.org/web", "/secret/a", Read, true},
		{"trailing slash", "spiffe://example.org/web", "secret/a/", Read, true},
		{"double slash", "spiffe://example.org/web", "secret//a", Read, true},
		{"star path", "spiffe://example.org/web", "secret/*", Read, true},
		{"NUL", "spiffe://example.org/web", "secret/a\x00", Read, true},
		{"invalid UTF-8", "spiffe://example.org/web", "secret/\xff", Read, true},
		{"too long", "spiffe://example.org/web", "secret/" + strings.Repeat("a", MaxPathLen), Read, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := set.Decide(tt.id, tt.path, tt.c)
			if d.Allowed || d.Err == nil || d.Policy != "" || d.Deny {
				t.Fatalf("Decide(%q, %q, %q) = %+v, want a default deny with Err", tt.id, tt.path, tt.c, d)
			}
			if got := errors.Is(d.Err, ErrBadPath); got != tt.badPath {
				t.Errorf("errors.Is(%v, ErrBadPath) = %v, want %v", d.Err, got, tt.badPath)
			}
			if s := d.String(); !strings.HasPrefix(s, "denied: ") || !strings.HasSuffix(s, " (default deny)") || strings.ContainsAny(s, "\x00\n") {
				t.Errorf("String() = %q", s)
			}
		})
	}
}

func TestCleanPath(t *testing.T) {
	tests := []struct {
		path string
		want error // nil for clean
	}{
		{"secret", nil},
		{"secret/a", nil},
		{"secret/team-a/db.password_v2", nil},
		{"secret/with space/x", nil},
		{"secret/ünïcode/日本", nil},
		{"secret/..a/a..", nil},
		{"secret/.hidden", nil},
		{"secret/" + strings.Repeat("a", MaxPathLen-len("secret/")), nil},
		{"secret/%2e%2e/x", nil}, // not decoded here: the HTTP layer decodes first
		{"", errPathEmpty},
		{"secret/" + strings.Repeat("a", MaxPathLen-len("secret/")+1), errPathTooLong},
		{"/secret", errLeadingSlash},
		{"/", errLeadingSlash},
		{"secret/", errTrailingSlash},
		{"secret//a", errEmptySegment},
		{"secret/../a", errDotSegment},
		{"secret/..", errDotSegment},
		{"./secret", errDotSegment},
		{"secret/.", errDotSegment},
		{"secret/a\x00", errNotPrintable},
		{"secret/a\nb", errNotPrintable},
		{"secret/a\x7f", errNotPrintable},
		{"secret/a\u0085", errNotPrintable},
		{"secret/a\u200bb", errNotPrintable},
		{"secret/a\u00a0b", errNotPrintable},
		{"secret/a\u202eb", errNotPrintable},
		{"secret/\xffa", errInvalidUTF8},
		{"secret/\xc3", errInvalidUTF8},
		{"secret/*", errReservedInPath},
		{"secret/a*", errReservedInPath},
		{"secret/{ns}", errReservedInPath},
		{"secret/a}", errReservedInPath},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := CleanPath(tt.path)
			if tt.want == nil {
				if err != nil || got != tt.path {
					t.Fatalf("CleanPath(%q) = %q, %v; want it unchanged", tt.path, got, err)
				}
				// Every clean path is a valid literal path pattern that
				// matches exactly itself.
				pp, err := compilePath(tt.path, nil, true)
				if err != nil {
					t.Fatalf("clean path %q is not a valid pattern: %v", tt.path, err)
				}
				if !pp.match(tt.path, &bindings{}, false) {
					t.Errorf("pattern %q does not match itself", tt.path)
				}
				return
			}
			if err == nil || got != "" {
				t.Fatalf("CleanPath(%q) = %q, %v; want an error", tt.path, got, err)
			}
			if !errors.Is(err, ErrBadPath) || !errors.Is(err, tt.want) {
				t.Errorf("CleanPath(%q) = %v; want it to wrap ErrBadPath and %v", tt.path, err, tt.want)
			}
		})
	}
}

// TestDecisionStrings decides each request of testdata/decisions.txt
// against testdata/set and compares the explanation with the line below
// it. Run with -update to rewrite the file.
func TestDecisionStrings(t *testing.T) {
	const file = "testdata/decisions.txt"
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	set := NewSet(loadPolicies(t)...)
	// The file is blocks separated by blank lines: comment lines, then
	// "capability spiffe-id path", then the expected String().
	var out strings.Builder
	blocks := strings.Split(strings.TrimSpace(string(data)), "\n\n")
	for i, block := range blocks {
		lines := strings.Split(block, "\n")
		var comments []string
		for len(lines) > 0 && strings.HasPrefix(lines[0], "#") {
			comments, lines = append(comments, lines[0]), lines[1:]
		}
		if len(lines) == 0 || len(lines) > 2 {
			t.Fatalf("%s: block %d: want a request line and an expected line:\n%s", file, i+1, block)
		}
		req := strings.Fields(lines[0])
		if len(req) != 3 {
			t.Fatalf("%s: block %d: request %q is not \"capability spiffe-id path\"", file, i+1, lines[0])
		}
		got := set.Decide(req[1], req[2], Capability(req[0])).String()
		if *update {
			if i > 0 {
				out.WriteString("\n")
			}
			for _, c := range comments {
				out.WriteString(c + "\n")
			}
			out.WriteString(lines[0] + "\n" + got + "\n")
			continue
		}
		if len(lines) != 2 {
			t.Errorf("%s: block %d: no expected line (run go test -update)", file, i+1)
			continue
		}
		if got != lines[1] {
			t.Errorf("%s: %s\n got: %s\nwant: %s", file, lines[0], got, lines[1])
		}
	}
	if *update {
		if err := os.WriteFile(file, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSetOrder: the order of NewSet's arguments changes no decision and
// no explanation.
func TestSetOrder(t *testing.T) {
	ps := loadPolicies(t)
	rev := slices.Clone(ps)
	slices.Reverse(rev)
	a, b := NewSet(ps...), NewSet(rev...)
	for _, id := range []string{"spiffe://example.org/ns/team-a/sa/web", "spiffe://example.org/ns/team-a/sa/deployer", "spiffe://example.org/billing"} {
		for _, path := range []string{"secret/team-a", "secret/team-a/db", "secret/shared/config", "secret/payments/root-key", "secret/payments/x"} {
			for _, c := range matrixCaps {
				if da, db := a.Decide(id, path, c), b.Decide(id, path, c); da.String() != db.String() {
					t.Errorf("%s %s %s: %v in one order, %v in the other", c, id, path, da, db)
				}
			}
		}
	}
}

// TestSameName: two policies sharing a name both apply.
func TestSameName(t *testing.T) {
	set := NewSet(
		mustParse(t, "p", "rules: [{spiffe_id: 'spiffe://example.org/a', paths: [secret/a], capabilities: [read]}]"),
		mustParse(t, "p", "rules: [{spiffe_id: 'spiffe://example.org/*', paths: [secret/a], capabilities: [deny]}]"),
	)
	if d := set.Decide("spiffe://example.org/a", "secret/a", Read); d.Allowed || !d.Deny {
		t.Errorf("got %v, want denied by the second policy p", d)
	}
}

// TestFirstRuleReported: of several rules that allow, the first by policy
// name and rule order is reported.
func TestFirstRuleReported(t *testing.T) {
	doc := `rules:
  - {spiffe_id: 'spiffe://example.org/web', paths: [secret/x], capabilities: [list]}
  - {spiffe_id: 'spiffe://example.org/*', paths: [secret/*], capabilities: [read]}
  - {spiffe_id: 'spiffe://example.org/web', paths: [secret/x], capabilities: [read]}
`
	set := NewSet(mustParse(t, "b", doc), mustParse(t, "a", doc))
	d := set.Decide("spiffe://example.org/web", "secret/x", Read)
	if !d.Allowed || d.Policy != "a" || d.Rule != 2 || d.PathPattern != "secret/*" {
		t.Errorf("got %v, want allowed by policy a rule 2", d)
	}
}

// TestDecideAllocs: deciding a well-formed request does not allocate.
func TestDecideAllocs(t *testing.T) {
	set := NewSet(loadPolicies(t)...)
	for _, tt := range []struct{ id, path string }{
		{"spiffe://example.org/ns/team-a/sa/web", "secret/team-a/db"},          // allowed, named
		{"spiffe://example.org/billing", "secret/payments/root-key"},           // deny rule
		{"spiffe://example.org/billing", "secret/team-a/db"},                   // default deny
		{"spiffe://other.org/billing", "secret/payments/x"},                    // foreign
		{"spiffe://example.org/ns/team-a/sa/web/x/y", "secret/team-a/a/b/c/d"}, // deep
	} {
		if n := testing.AllocsPerRun(100, func() { set.Decide(tt.id, tt.path, Read) }); n != 0 {
			t.Errorf("Decide(%s, %s) allocates %v times", tt.id, tt.path, n)
		}
	}
}

// TestConcurrentDecide runs Decide from several goroutines on one Set, for
// the race detector.
func TestConcurrentDecide(t *testing.T) {
	set := NewSet(loadPolicies(t)...)
	done := make(chan bool)
	for range 4 {
		go func() {
			ok := true
			for range 200 {
				ok = ok && set.Decide("spiffe://example.org/ns/team-a/sa/web", "secret/team-a/db", Read).Allowed
				ok = ok && !set.Decide("spiffe://example.org/billing", "secret/payments/root-key", Read).Allowed
			}
			done <- ok
		}()
	}
	for range 4 {
		if !<-done {
			t.Error("a concurrent decision differs")
		}
	}
}
