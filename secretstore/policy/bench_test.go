package policy

import (
	"fmt"
	"testing"
)

// benchSet builds 50 policies of 5 rules each, shaped like a platform's
// real ones: per-team read and write rules with named segments, a
// cross-namespace monitoring rule, service credentials under a tail, and
// a trust-domain-wide deny per team.
func benchSet(b *testing.B) *Set {
	b.Helper()
	var ps []*Policy
	for i := range 50 {
		doc := fmt.Sprintf(`rules:
  - spiffe_id: spiffe://example.org/ns/team-%02[1]d/sa/{sa}
    paths: ["secret/team-%02[1]d/{sa}/*", "secret/team-%02[1]d/shared/*"]
    capabilities: [read, list]
  - spiffe_id: spiffe://example.org/ns/team-%02[1]d/sa/deployer
    paths: ["secret/team-%02[1]d/*"]
    capabilities: [create, update, delete, list]
  - spiffe_id: spiffe://example.org/ns/{ns}/sa/monitor-%02[1]d
    paths: ["secret/{ns}/monitoring/*"]
    capabilities: [read]
  - spiffe_id: spiffe://example.org/svc/svc-%02[1]d/*
    paths: ["db/creds/svc-%02[1]d", "secret/svc-%02[1]d/*"]
    capabilities: [read]
  - spiffe_id: spiffe://example.org/*
    paths: ["secret/team-%02[1]d/root-key"]
    capabilities: [deny]
`, i)
		p, err := Parse(fmt.Sprintf("team-%02d", i), []byte(doc))
		if err != nil {
			b.Fatal(err)
		}
		ps = append(ps, p)
	}
	return NewSet(ps...)
}

// BenchmarkDecide decides typical requests against 50 policies x 5 rules.
func BenchmarkDecide(b *testing.B) {
	set := benchSet(b)
	cases := []struct {
		name, id, path string
		c              Capability
		allowed        bool
	}{
		{"allowed-named", "spiffe://example.org/ns/team-25/sa/web", "secret/team-25/web/db-password", Read, true},
		{"allowed-tail", "spiffe://example.org/svc/svc-49/pod/abc", "db/creds/svc-49", Read, true},
		{"allowed-list", "spiffe://example.org/ns/team-07/sa/deployer", "secret/team-07", List, true},
		{"denied-by-rule", "spiffe://example.org/ns/team-25/sa/deployer", "secret/team-25/root-key", Read, false},
		{"default-deny", "spiffe://example.org/ns/team-25/sa/web", "secret/team-26/web/db-password", Read, false},
		{"foreign", "spiffe://other.org/ns/team-25/sa/web", "secret/team-25/web/db-password", Read, false},
	}
	for _, tc := range cases {
		if d := set.Decide(tc.id, tc.path, tc.c); d.Allowed != tc.allowed || d.Err != nil {
			b.Fatalf("%s: %v", tc.name, d)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				set.Decide(tc.id, tc.path, tc.c)
			}
		})
	}
}
