package challenge_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/sigil-pki/sigil/acme/challenge"
)

const (
	token      = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
	thumbprint = "9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
	keyAuth    = token + "." + thumbprint
)

var loopback4 = netip.MustParseAddr("127.0.0.1")

// lookupTest resolves every name under .test to 127.0.0.1 and fails others.
func lookupTest(ctx context.Context, host string) ([]netip.Addr, error) {
	if strings.HasSuffix(host, ".test") {
		return []netip.Addr{loopback4}, nil
	}
	return nil, fmt.Errorf("no test address for %q", host)
}

func newValidator(t *testing.T, cfg challenge.Config) *challenge.Validator {
	t.Helper()
	v, err := challenge.New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	return v
}

// checkProblem fails t unless p has type want ("" for success).
func checkProblem(t *testing.T, p *challenge.Problem, want string) {
	t.Helper()
	if p != nil {
		t.Logf("problem: %v (cause: %v)", p, p.Cause)
	}
	switch {
	case want == "" && p != nil:
		t.Errorf("validation failed with %v, want success", p)
	case want != "" && p == nil:
		t.Errorf("validation succeeded, want a %s problem", want)
	case want != "" && p.Type != want:
		t.Errorf("problem type %s, want %s", p.Type, want)
	}
	if p != nil && p.Detail == "" {
		t.Errorf("problem %s has no detail", p.Type)
	}
}

// portOf returns the port of a listener's address.
func portOf(t *testing.T, addr net.Addr) int {
	t.Helper()
	_, ps, err := net.SplitHostPort(addr.String())
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// closedPort returns a loopback TCP port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := portOf(t, l.Addr())
	l.Close()
	return port
}

// listen6 listens on [::1]:0, or skips the test where IPv6 loopback is
// missing.
func listen6(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	return l
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []challenge.Config{
		{HTTPPort: -1},
		{HTTPPort: 70000},
		{TLSPort: 65536},
		{Timeout: -1},
		{Resolver: "dns.example:53"},
		{Resolver: "127.0.0.1"},
	} {
		if _, err := challenge.New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
	}
}

func TestProblemUnwrapsCause(t *testing.T) {
	v := newValidator(t, challenge.Config{LookupIP: lookupTest, AllowLoopback: true})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	p := v.HTTP01(ctx, challenge.Identifier{Type: "dns", Value: "web.example.test"}, token, keyAuth)
	checkProblem(t, p, challenge.ProblemServerInternal)
	if !errors.Is(p, context.Canceled) {
		t.Errorf("errors.Is(%v, context.Canceled) = false", p)
	}
}

func TestIdentifierChecks(t *testing.T) {
	v := newValidator(t, challenge.Config{LookupIP: lookupTest})
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		id   challenge.Identifier
		want string
	}{
		{"unknown type", challenge.Identifier{Type: "email", Value: "a@example.test"}, challenge.ProblemUnsupportedIdentifier},
		{"empty name", challenge.Identifier{Type: "dns", Value: ""}, challenge.ProblemMalformed},
		{"trailing dot", challenge.Identifier{Type: "dns", Value: "example.test."}, challenge.ProblemMalformed},
		{"underscore", challenge.Identifier{Type: "dns", Value: "a_b.example.test"}, challenge.ProblemMalformed},
		{"slash", challenge.Identifier{Type: "dns", Value: "example.test/x"}, challenge.ProblemMalformed},
		{"IP as name", challenge.Identifier{Type: "dns", Value: "127.0.0.1"}, challenge.ProblemMalformed},
		{"wildcard", challenge.Identifier{Type: "dns", Value: "*.example.test"}, challenge.ProblemMalformed},
		{"bad IP", challenge.Identifier{Type: "ip", Value: "300.1.1.1"}, challenge.ProblemMalformed},
		{"IP with zone", challenge.Identifier{Type: "ip", Value: "fe80::1%eth0"}, challenge.ProblemMalformed},
		{"loopback IP", challenge.Identifier{Type: "ip", Value: "127.0.0.1"}, challenge.ProblemRejectedIdentifier},
		{"link-local IP", challenge.Identifier{Type: "ip", Value: "169.254.169.254"}, challenge.ProblemRejectedIdentifier},
		{"unspecified IP", challenge.Identifier{Type: "ip", Value: "::"}, challenge.ProblemRejectedIdentifier},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkProblem(t, v.HTTP01(ctx, tc.id, token, keyAuth), tc.want)
			checkProblem(t, v.TLSALPN01(ctx, tc.id, keyAuth), tc.want)
		})
	}
}
