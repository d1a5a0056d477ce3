package entry

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const td = "example.org"

var t0 = time.Date(2025, time.March, 14, 15, 9, 26, 0, time.UTC)

// valid is an entry that passes Validate(td, time.Hour*24).
func valid() Entry {
	return Entry{
		ID:          "00112233445566778899aabbccddeeff",
		SPIFFEID:    "spiffe://example.org/web",
		Selectors:   []string{"unix:uid:1000"},
		X509SVIDTTL: time.Hour,
		JWTSVIDTTL:  5 * time.Minute,
	}
}

func TestValidate(t *testing.T) {
	const maxTTL = 24 * time.Hour
	for _, tc := range []struct {
		name   string
		modify func(e *Entry)
		// wantFields are the fields named by the errors, in order; none
		// means valid.
		wantFields []string
		wantReason string
	}{
		{"valid", func(e *Entry) {}, nil, ""},
		{"default TTLs", func(e *Entry) { e.X509SVIDTTL, e.JWTSVIDTTL = 0, 0 }, nil, ""},
		{"TTL at max", func(e *Entry) { e.X509SVIDTTL = maxTTL }, nil, ""},
		{"parent in domain", func(e *Entry) { e.ParentID = "spiffe://example.org/agent/n1" }, nil, ""},
		{"DNS names and hint", func(e *Entry) {
			e.DNSNames = []string{"web.example.org", "*.web.example.org", "a-1.b"}
			e.Hint = "external"
		}, nil, ""},
		{"every selector kind", func(e *Entry) {
			e.Selectors = []string{"unix:uid:1", "unix:gid:2", "unix:user:a", "unix:group:b", "unix:path:/bin/x", "unix:sha256:" + strings.Repeat("f", 64)}
		}, nil, ""},

		{"bad ID", func(e *Entry) { e.ID = "XYZ" }, []string{"id"}, "lowercase hex"},
		{"uppercase ID", func(e *Entry) { e.ID = strings.ToUpper(e.ID) }, []string{"id"}, "lowercase hex"},
		{"no ID", func(e *Entry) { e.ID = "" }, []string{"id"}, "lowercase hex"},
		{"malformed SPIFFE ID", func(e *Entry) { e.SPIFFEID = "https://example.org/web" }, []string{"spiffe_id"}, "is not a SPIFFE ID"},
		{"empty SPIFFE ID", func(e *Entry) { e.SPIFFEID = "" }, []string{"spiffe_id"}, "is not a SPIFFE ID"},
		{"SPIFFE ID with uppercase", func(e *Entry) { e.SPIFFEID = "spiffe://Example.org/web" }, []string{"spiffe_id"}, "is not a SPIFFE ID"},
		{"foreign trust domain", func(e *Entry) { e.SPIFFEID = "spiffe://evil.org/web" }, []string{"spiffe_id"}, "outside the trust domain"},
		{"subdomain is foreign", func(e *Entry) { e.SPIFFEID = "spiffe://a.example.org/web" }, []string{"spiffe_id"}, "outside the trust domain"},
		{"trust domain ID", func(e *Entry) { e.SPIFFEID = "spiffe://example.org" }, []string{"spiffe_id"}, "trust domain's own ID"},
		{"reserved path", func(e *Entry) { e.SPIFFEID = "spiffe://example.org/sigil/server" }, []string{"spiffe_id"}, "reserved"},
		{"reserved path itself", func(e *Entry) { e.SPIFFEID = "spiffe://example.org/sigil" }, []string{"spiffe_id"}, "reserved"},
		{"reserved prefix only in name", func(e *Entry) { e.SPIFFEID = "spiffe://example.org/sigiling" }, nil, ""},
		{"foreign parent", func(e *Entry) { e.ParentID = "spiffe://evil.org/agent" }, []string{"parent_id"}, "outside the trust domain"},
		{"malformed parent", func(e *Entry) { e.ParentID = "agent" }, []string{"parent_id"}, "is not a SPIFFE ID"},
		{"no selectors", func(e *Entry) { e.Selectors = nil }, []string{"selectors"}, "at least one"},
		{"bad selector", func(e *Entry) { e.Selectors = []string{"unix:uid:1", "unix:uid:x"} }, []string{"selectors[1]"}, "not a decimal number"},
		{"foreign selector type", func(e *Entry) { e.Selectors = []string{"docker:label:a"} }, []string{"selectors[0]"}, "unknown type"},
		{"negative X.509 TTL", func(e *Entry) { e.X509SVIDTTL = -time.Second }, []string{"x509_svid_ttl"}, "negative"},
		{"JWT TTL above max", func(e *Entry) { e.JWTSVIDTTL = maxTTL + 1 }, []string{"jwt_svid_ttl"}, "exceeds the maximum"},
		{"uppercase DNS name", func(e *Entry) { e.DNSNames = []string{"Web.example.org"} }, []string{"dns_names[0]"}, "not allowed"},
		{"empty DNS label", func(e *Entry) { e.DNSNames = []string{"ok.org", "a..b"} }, []string{"dns_names[1]"}, "1 to 63"},
		{"hyphen DNS label", func(e *Entry) { e.DNSNames = []string{"-a.org"} }, []string{"dns_names[0]"}, "hyphen"},
		{"wildcard not first", func(e *Entry) { e.DNSNames = []string{"a.*.org"} }, []string{"dns_names[0]"}, "not allowed"},
		{"bare wildcard", func(e *Entry) { e.DNSNames = []string{"*"} }, []string{"dns_names[0]"}, "not allowed"},
		{"long DNS name", func(e *Entry) { e.DNSNames = []string{strings.Repeat("a.", 127) + "a"} }, []string{"dns_names[0]"}, "1 to 253"},
		{"long hint", func(e *Entry) { e.Hint = strings.Repeat("h", 257) }, []string{"hint"}, "at most 256"},
		{"hint control character", func(e *Entry) { e.Hint = "a\nb" }, []string{"hint"}, "control character"},
		{"several problems", func(e *Entry) { e.SPIFFEID = "spiffe://evil.org/x"; e.Selectors = nil; e.X509SVIDTTL = -1 },
			[]string{"spiffe_id", "selectors", "x509_svid_ttl"}, "outside the trust domain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := valid()
			tc.modify(&e)
			err := e.Validate(td, maxTTL)
			if len(tc.wantFields) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want an error matching ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.wantReason) {
				t.Errorf("Validate = %q, want it to say %q", err, tc.wantReason)
			}
			var fields []string
			for _, e := range fieldErrors(err) {
				fields = append(fields, e.Field)
			}
			if diff := cmp.Diff(tc.wantFields, fields); diff != "" {
				t.Errorf("fields named by Validate (-want +got):\n%s\nerror: %v", diff, err)
			}
			if !strings.Contains(err.Error(), tc.wantFields[0]+": ") {
				t.Errorf("Validate = %q, does not name the field %s", err, tc.wantFields[0])
			}
		})
	}
}

// fieldErrors unpacks Validate's joined errors.
func fieldErrors(err error) []*FieldError {
	var out []*FieldError
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, fieldErrors(e)...)
		}
		return out
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		out = append(out, fe)
	}
	return out
}

func TestValidateTrustDomain(t *testing.T) {
	e := valid()
	if err := e.Validate("Not A Domain", time.Hour); err == nil || errors.Is(err, ErrInvalid) {
		t.Errorf("Validate with a malformed trust domain = %v, want an error about the trust domain, not the entry", err)
	}
	if err := e.Validate("spiffe://example.org", 0); err != nil {
		t.Errorf("Validate with the trust domain as an ID (and no TTL cap): %v", err)
	}
	e.X509SVIDTTL = 1000 * time.Hour
	if err := e.Validate(td, 0); err != nil {
		t.Errorf("Validate with maxTTL 0 (no cap): %v", err)
	}
}

func TestDefaults(t *testing.T) {
	for _, tc := range []struct {
		name              string
		x509, jwt         time.Duration
		wantX509, wantJWT time.Duration
	}{
		{"both zero", 0, 0, time.Hour, 5 * time.Minute},
		{"both set", 2 * time.Hour, time.Minute, 2 * time.Hour, time.Minute},
		{"x509 only", 3 * time.Hour, 0, 3 * time.Hour, 5 * time.Minute},
		{"jwt only", 0, 7 * time.Minute, time.Hour, 7 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := Entry{X509SVIDTTL: tc.x509, JWTSVIDTTL: tc.jwt}.Defaults(time.Hour, 5*time.Minute)
			if e.X509SVIDTTL != tc.wantX509 || e.JWTSVIDTTL != tc.wantJWT {
				t.Errorf("Defaults = (%s, %s), want (%s, %s)", e.X509SVIDTTL, e.JWTSVIDTTL, tc.wantX509, tc.wantJWT)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sel, dns []string
		wantSel  []string
		wantDNS  []string
	}{
		{"empty", nil, nil, nil, nil},
		{"sorted", []string{"unix:uid:2", "unix:gid:1", "unix:uid:10"}, nil, []string{"unix:gid:1", "unix:uid:10", "unix:uid:2"}, nil},
		{"duplicates", []string{"unix:uid:1", "unix:uid:1", "unix:gid:1", "unix:uid:1"}, nil, []string{"unix:gid:1", "unix:uid:1"}, nil},
		{"DNS order kept, duplicates dropped", []string{"unix:uid:1"}, []string{"b.org", "a.org", "b.org"}, []string{"unix:uid:1"}, []string{"b.org", "a.org"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := Entry{Selectors: tc.sel, DNSNames: tc.dns}
			orig := append([]string(nil), tc.sel...)
			got := in.Normalize()
			if diff := cmp.Diff(tc.wantSel, got.Selectors); diff != "" {
				t.Errorf("selectors (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantDNS, got.DNSNames); diff != "" {
				t.Errorf("DNS names (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(orig, in.Selectors); diff != "" {
				t.Errorf("Normalize changed its receiver's selectors (-before +after):\n%s", diff)
			}
		})
	}
	a := Entry{Selectors: []string{"unix:uid:1", "unix:gid:2", "unix:uid:1"}}.Normalize()
	b := Entry{Selectors: []string{"unix:gid:2", "unix:uid:1"}}.Normalize()
	if !cmp.Equal(a, b) {
		t.Errorf("the same selector set normalises differently: %v and %v", a.Selectors, b.Selectors)
	}
}

func TestNew(t *testing.T) {
	r := bytes.NewReader(bytes.Repeat([]byte{0xab}, 16))
	e, err := New(r, t0, Entry{SPIFFEID: "spiffe://example.org/web", Selectors: []string{"unix:uid:2", "unix:uid:1"}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	want := Entry{
		ID:        strings.Repeat("ab", 16),
		SPIFFEID:  "spiffe://example.org/web",
		Selectors: []string{"unix:uid:1", "unix:uid:2"},
		CreatedAt: t0,
		UpdatedAt: t0,
		Revision:  1,
	}
	if diff := cmp.Diff(want, e); diff != "" {
		t.Errorf("New (-want +got):\n%s", diff)
	}
	if err := e.Validate(td, time.Hour); err != nil {
		t.Errorf("Validate(New(...)): %v", err)
	}
	if _, err := New(bytes.NewReader([]byte{1, 2, 3}), t0, Entry{}); err == nil {
		t.Error("New with a short random source succeeded")
	}
	seen := map[string]bool{}
	for range 100 {
		id, err := NewID(nil)
		if err != nil {
			t.Fatalf("NewID: %v", err)
		}
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("NewID = %q, want 32 lowercase hex digits", id)
		}
		if seen[id] {
			t.Fatalf("NewID repeated %q", id)
		}
		seen[id] = true
	}
}

func TestMatches(t *testing.T) {
	e := Entry{Selectors: []string{"unix:gid:50", "unix:uid:1000"}}
	for _, tc := range []struct {
		name     string
		entry    Entry
		workload []string
		want     bool
	}{
		{"exact", e, []string{"unix:uid:1000", "unix:gid:50"}, true},
		{"superset", e, []string{"unix:path:/bin/x", "unix:uid:1000", "unix:gid:50", "unix:user:web"}, true},
		{"workload duplicates", e, []string{"unix:uid:1000", "unix:uid:1000", "unix:gid:50"}, true},
		{"one missing", e, []string{"unix:uid:1000"}, false},
		{"other value", e, []string{"unix:uid:1001", "unix:gid:50"}, false},
		{"no workload selectors", e, nil, false},
		{"entry without selectors matches nothing", Entry{}, []string{"unix:uid:1"}, false},
		{"prefix is not a match", Entry{Selectors: []string{"unix:uid:1"}}, []string{"unix:uid:10"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.entry.Matches(tc.workload); got != tc.want {
				t.Errorf("Matches(%v) for %v = %v, want %v", tc.workload, tc.entry.Selectors, got, tc.want)
			}
		})
	}
}
