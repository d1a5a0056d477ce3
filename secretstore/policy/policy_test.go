package policy

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata from the current output")

// allErrors flattens an error of Parse into its *Error values, failing the
// test on anything else.
func allErrors(t testing.TB, err error) []*Error {
	t.Helper()
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	out := make([]*Error, 0, len(errs))
	for _, e := range errs {
		pe, ok := e.(*Error)
		if !ok {
			t.Fatalf("error %v (%T) is not a *policy.Error", e, e)
		}
		out = append(out, pe)
	}
	return out
}

// mustParse parses a policy that the test expects to be valid.
func mustParse(t testing.TB, name, doc string) *Policy {
	t.Helper()
	p, err := Parse(name, []byte(doc))
	if err != nil {
		t.Fatalf("Parse(%q): %v", name, err)
	}
	return p
}

// TestBad parses each testdata/bad/*.yaml and compares the full error text
// with the sibling .err file. Run with -update to rewrite them.
func TestBad(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/bad/*.yaml: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			p, err := Parse(strings.ReplaceAll(name, "_", "-"), data)
			if err == nil {
				t.Fatalf("Parse accepted %s", file)
			}
			if p != nil {
				t.Errorf("Parse returned a policy with an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not match ErrInvalid: %v", err)
			}
			for _, e := range allErrors(t, err) {
				if e.Msg == "" {
					t.Errorf("error %#v has no message", e)
				}
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(file, ".yaml") + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("error for %s differs from %s (-want +got):\n%s", file, golden, diff)
			}
		})
	}
}

// TestBadErrFilesHaveYAML keeps testdata/bad free of stale .err files.
func TestBadErrFilesHaveYAML(t *testing.T) {
	errs, _ := filepath.Glob("testdata/bad/*.err")
	for _, e := range errs {
		if _, err := os.Stat(strings.TrimSuffix(e, ".err") + ".yaml"); err != nil {
			t.Errorf("%s has no .yaml: %v", e, err)
		}
	}
}

// TestErrorDetails checks the structured fields of errors, which the
// golden files could hide behind a plausible message.
func TestErrorDetails(t *testing.T) {
	tests := []struct {
		file string
		want []Error
	}{
		{"unknown_top_key.yaml", []Error{{Line: 1}}},
		{"unknown_rule_key.yaml", []Error{{Rule: 2, Line: 5}, {Rule: 2, Line: 5, Field: "spiffe_id"}}},
		{"empty.yaml", []Error{{}}},
		{"empty_rules.yaml", []Error{{Line: 1}}},
		{"missing_fields.yaml", []Error{
			{Rule: 1, Line: 2, Field: "paths"},
			{Rule: 1, Line: 2, Field: "capabilities"},
			{Rule: 2, Line: 3, Field: "spiffe_id"},
		}},
		{"capabilities.yaml", []Error{
			{Rule: 1, Line: 4, Field: "capabilities"},
			{Rule: 1, Line: 4, Field: "capabilities"},
			{Rule: 2, Line: 7, Field: "capabilities"},
			{Rule: 3, Line: 10, Field: "capabilities"},
			{Rule: 4, Line: 13, Field: "capabilities"},
		}},
		{"duplicate_key.yaml", []Error{{Rule: 1, Line: 5}}},
		{"duplicate_path.yaml", []Error{{Rule: 1, Line: 5, Field: "paths"}}},
		{"unbound_without_names.yaml", []Error{{Rule: 1, Line: 3, Field: "paths"}}},
		{"bound_twice.yaml", []Error{{Rule: 1, Line: 2, Field: "spiffe_id"}}},
		{"syntax_error.yaml", []Error{{Line: 2}}}, // the parser names the line before the open flow list
		{"two_documents.yaml", []Error{{Line: 5}}},
		{"alias.yaml", []Error{{Rule: 2, Line: 6, Field: "paths"}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata/bad", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse("p", data)
			if err == nil {
				t.Fatal("Parse accepted the document")
			}
			var got []Error
			for _, e := range allErrors(t, err) {
				if e.Policy != "p" {
					t.Errorf("error %q names policy %q, want %q", e, e.Policy, "p")
				}
				got = append(got, Error{Rule: e.Rule, Line: e.Line, Field: e.Field})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseGood(t *testing.T) {
	tests := []struct {
		file string
		want []Rule
	}{
		{"example.yaml", []Rule{
			{SPIFFEID: "spiffe://example.org/ns/{ns}/sa/*", Paths: []string{"secret/{ns}/*", "secret/shared/config"}, Capabilities: []Capability{Read, List}, Line: 3},
			{SPIFFEID: "spiffe://example.org/billing", Paths: []string{"secret/payments/*"}, Capabilities: []Capability{Read, Create, Update}, Line: 6},
			{SPIFFEID: "spiffe://example.org/*", Paths: []string{"secret/payments/root-key"}, Capabilities: []Capability{Deny}, Line: 9},
		}},
		{"flow.yaml", []Rule{
			{SPIFFEID: "spiffe://example.org", Paths: []string{"kv/root"}, Capabilities: []Capability{Read}, Line: 2},
			{
				SPIFFEID:     "spiffe://example.org/ns/{ns}/sa/{sa}",
				Paths:        []string{"secret/{ns}/{sa}/*", "secret/{ns}/{sa}/{ns}", "secret/ünïcode name/x"},
				Capabilities: []Capability{Delete, List},
				Line:         3,
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata/good", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			p, err := Parse("good", data)
			if err != nil {
				t.Fatal(err)
			}
			if p.Name() != "good" {
				t.Errorf("Name() = %q", p.Name())
			}
			if diff := cmp.Diff(tt.want, p.Rules()); diff != "" {
				t.Errorf("rules (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRulesIsACopy: changing what Rules returns changes nothing in the
// policy.
func TestRulesIsACopy(t *testing.T) {
	p := mustParse(t, "p", "rules: [{spiffe_id: spiffe://example.org/a, paths: [secret/a], capabilities: [read]}]")
	r := p.Rules()
	r[0].Paths[0] = "secret/b"
	r[0].Capabilities[0] = Delete
	r[0].SPIFFEID = "spiffe://example.org/b"
	if diff := cmp.Diff([]Rule{{SPIFFEID: "spiffe://example.org/a", Paths: []string{"secret/a"}, Capabilities: []Capability{Read}, Line: 1}}, p.Rules()); diff != "" {
		t.Errorf("rules changed (-want +got):\n%s", diff)
	}
}

func TestTooManyErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString("rules:\n")
	for range 30 {
		b.WriteString("  - {spiffe_id: x, paths: [secret/a], capabilities: [read]}\n")
	}
	_, err := Parse("p", []byte(b.String()))
	errs := allErrors(t, err)
	if len(errs) != maxErrors+1 {
		t.Fatalf("got %d errors, want %d", len(errs), maxErrors+1)
	}
	if last := errs[len(errs)-1]; last.Msg != "too many errors; stopping here" {
		t.Errorf("last error %q, want the stop marker", last)
	}
}

func TestLimits(t *testing.T) {
	rule := "  - {spiffe_id: spiffe://example.org/a, paths: [secret/a], capabilities: [read]}\n"
	tests := []struct {
		name string
		doc  string
		want string // substring of the error; "" for valid
	}{
		{"MaxRules", "rules:\n" + strings.Repeat(rule, MaxRules), ""},
		{"MaxRules+1", "rules:\n" + strings.Repeat(rule, MaxRules+1), "1001 rules, more than 1000"},
		{"MaxPathsPerRule", pathsDoc(MaxPathsPerRule), ""},
		{"MaxPathsPerRule+1", pathsDoc(MaxPathsPerRule + 1), "101 items, more than 100"},
		{"MaxDocumentSize+1", "rules:\n" + strings.Repeat("#", MaxDocumentSize), "more than 1048576"},
		{"MaxPathLen", pathDoc(MaxPathLen), ""},
		{"MaxPathLen+1", pathDoc(MaxPathLen + 1), "longer than 512 bytes"},
		{"maxIDLen", idDoc(maxIDLen), ""},
		{"maxIDLen+1", idDoc(maxIDLen + 1), "longer than 2048 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("p", []byte(tt.doc))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Parse: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func pathsDoc(n int) string {
	var b strings.Builder
	b.WriteString("rules:\n  - spiffe_id: spiffe://example.org/a\n    capabilities: [read]\n    paths:\n")
	for i := range n {
		b.WriteString("      - secret/p")
		b.WriteString(strings.Repeat("x", i+1))
		b.WriteString("\n")
	}
	return b.String()
}

func pathDoc(n int) string {
	return "rules: [{spiffe_id: spiffe://example.org/a, paths: [secret/" + strings.Repeat("x", n-len("secret/")) + "], capabilities: [read]}]"
}

func idDoc(n int) string {
	return "rules: [{spiffe_id: spiffe://example.org/" + strings.Repeat("x", n-len("spiffe://example.org/")) + ", paths: [secret/a], capabilities: [read]}]"
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"billing", true},
		{"0day", true},
		{"team-a.read_only", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"", false},
		{"-billing", false},
		{".hidden", false},
		{"_x", false},
		{"Billing", false},
		{"bill ing", false},
		{"billing/x", false},
		{"billing.yaml\n", false},
		{"bïlling", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidName(tt.name)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not match ErrInvalid: %v", err)
			}
			_, perr := Parse(tt.name, []byte("rules: [{spiffe_id: spiffe://example.org/a, paths: [secret/a], capabilities: [read]}]"))
			if (perr == nil) != tt.ok {
				t.Errorf("Parse with name %q: %v, want ok=%v", tt.name, perr, tt.ok)
			}
		})
	}
}

func TestParseCapability(t *testing.T) {
	for _, c := range []Capability{Read, Create, Update, Delete, List, Deny} {
		got, err := ParseCapability(string(c))
		if err != nil || got != c {
			t.Errorf("ParseCapability(%q) = %q, %v", c, got, err)
		}
	}
	for _, s := range []string{"", "READ", "write", "read ", "sudo", "*"} {
		if got, err := ParseCapability(s); err == nil {
			t.Errorf("ParseCapability(%q) = %q, want an error", s, got)
		}
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		name string
		err  Error
		want string
	}{
		{"all", Error{Policy: "p", Rule: 2, Line: 7, Field: "paths", Msg: "bad"}, `policy "p": rule 2, line 7: paths: bad`},
		{"no line", Error{Policy: "p", Rule: 2, Field: "paths", Msg: "bad"}, `policy "p": rule 2: paths: bad`},
		{"no rule", Error{Policy: "p", Line: 3, Msg: "bad"}, `policy "p": line 3: bad`},
		{"document", Error{Policy: "p", Msg: "bad"}, `policy "p": bad`},
		{"hostile name", Error{Policy: "a\nb", Msg: "bad"}, `policy "a\nb": bad`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
