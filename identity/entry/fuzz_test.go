package entry

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FuzzValidate feeds arbitrary SPIFFE IDs, parent IDs and selectors to
// Validate. It must never panic, every refusal must be an ErrInvalid, and
// whatever it accepts must be a SPIFFE ID of the trust domain outside the
// reserved path, with selectors that survive Normalize unchanged in
// meaning.
func FuzzValidate(f *testing.F) {
	for _, seed := range [][3]string{
		{"spiffe://example.org/web", "", "unix:uid:1000"},
		{"spiffe://example.org/sigil/operator", "", "unix:user:root"},
		{"spiffe://other.org/web", "spiffe://example.org/agent", "unix:sha256:" + strings.Repeat("ab", 32)},
		{"spiffe://example.org/a/../b", "x", "unix:path:/usr/bin/x"},
		{"spiffe://EXAMPLE.org/web", "", "unix:gid:"},
		{"spiffe://example.org/web?q=1", "", "unix:group:a\x00b"},
		{"", "", ""},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	const td = "example.org"
	f.Fuzz(func(t *testing.T, id, parent, selector string) {
		e := Entry{
			ID:        strings.Repeat("a", idLen),
			SPIFFEID:  id,
			ParentID:  parent,
			Selectors: []string{selector, selector},
		}
		e = e.Normalize()
		err := e.Validate(td, 0)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("refusal %v does not match ErrInvalid", err)
			}
			return
		}
		parsed, perr := spiffeid.FromString(e.SPIFFEID)
		if perr != nil {
			t.Fatalf("accepted SPIFFE ID %q does not parse: %v", e.SPIFFEID, perr)
		}
		if parsed.TrustDomain().Name() != td {
			t.Fatalf("accepted SPIFFE ID %q outside %s", e.SPIFFEID, td)
		}
		if p := parsed.Path(); p == ReservedPath || strings.HasPrefix(p, ReservedPath+"/") {
			t.Fatalf("accepted reserved SPIFFE ID %q", e.SPIFFEID)
		}
		if len(e.Selectors) != 1 {
			t.Fatalf("Normalize kept duplicate selectors %q", e.Selectors)
		}
		if again := e.Normalize(); !slices.Equal(again.Selectors, e.Selectors) || again.SPIFFEID != e.SPIFFEID {
			t.Fatalf("Normalize is not idempotent: %+v then %+v", e, again)
		}
		if !e.Matches(e.Selectors) {
			t.Fatalf("a valid entry does not match its own selectors %q", e.Selectors)
		}
	})
}
