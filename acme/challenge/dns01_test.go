package challenge_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/acme/challenge"
	"github.com/sigil-pki/sigil/acme/challenge/challengetest"
)

func TestDNS01Digest(t *testing.T) {
	// RFC 8555 §8.4's example gives no key authorization with its value, so
	// this one was computed apart: printf %s token.thumbprint | openssl dgst
	// -sha256 -binary | basenc --base64url | tr -d =
	const want = "61rBZ_4knHblO0MNoxFsXZ_eTFUHum0B6IVRbhvUn5I"
	if got := challenge.DNS01Digest("token.thumbprint"); got != want {
		t.Errorf("DNS01Digest = %q, want %q", got, want)
	}
}

func TestDNS01(t *testing.T) {
	srv := challengetest.NewDNSServer(t)
	digest := challenge.DNS01Digest(keyAuth)
	other := challenge.DNS01Digest("someone.else")

	srv.SetTXT("_acme-challenge.good.test", digest)
	srv.SetTXT("_acme-challenge.wrong.test", other)
	srv.SetTXT("_acme-challenge.several.test", other, "v=spf1 -all", digest)
	srv.SetTXT("_acme-challenge.padded.test", digest+"=")
	srv.SetTXT("_acme-challenge.spaced.test", " "+digest)
	srv.SetTXT("_acme-challenge.upper.test", strings.ToUpper(digest))
	srv.SetTXT("below._acme-challenge.nodata.test", digest) // _acme-challenge.nodata.test exists, with no TXT
	srv.SetCNAME("_acme-challenge.delegated.test", "good.validation.test")
	srv.SetTXT("good.validation.test", digest)
	srv.SetCNAME("_acme-challenge.loop.test", "_acme-challenge.loop.test")
	var many []string
	for range 60 {
		many = append(many, strings.Repeat("x", 100)) // > 4096 bytes: truncated over UDP
	}
	srv.SetTXT("_acme-challenge.big.test", append(many, digest)...)

	v := newValidator(t, challenge.Config{Resolver: srv.Addr(), Timeout: 5 * time.Second})
	for _, tc := range []struct {
		name string
		id   challenge.Identifier
		want string
	}{
		{"good", challenge.Identifier{Type: "dns", Value: "good.test"}, ""},
		{"upper-case name", challenge.Identifier{Type: "dns", Value: "GOOD.test"}, ""},
		{"wildcard", challenge.Identifier{Type: "dns", Value: "*.good.test"}, ""},
		{"one of several records", challenge.Identifier{Type: "dns", Value: "several.test"}, ""},
		{"CNAME to another zone", challenge.Identifier{Type: "dns", Value: "delegated.test"}, ""},
		{"truncated over UDP, whole over TCP", challenge.Identifier{Type: "dns", Value: "big.test"}, ""},
		{"wrong value", challenge.Identifier{Type: "dns", Value: "wrong.test"}, challenge.ProblemIncorrectResponse},
		{"padded value", challenge.Identifier{Type: "dns", Value: "padded.test"}, challenge.ProblemIncorrectResponse},
		{"leading space", challenge.Identifier{Type: "dns", Value: "spaced.test"}, challenge.ProblemIncorrectResponse},
		{"wrong case", challenge.Identifier{Type: "dns", Value: "upper.test"}, challenge.ProblemIncorrectResponse},
		{"NXDOMAIN", challenge.Identifier{Type: "dns", Value: "missing.test"}, challenge.ProblemDNS},
		{"no TXT record", challenge.Identifier{Type: "dns", Value: "nodata.test"}, challenge.ProblemUnauthorized},
		{"SERVFAIL", challenge.Identifier{Type: "dns", Value: "loop.test"}, challenge.ProblemDNS},
		{"double wildcard", challenge.Identifier{Type: "dns", Value: "*.*.good.test"}, challenge.ProblemMalformed},
		{"IP identifier", challenge.Identifier{Type: "ip", Value: "192.0.2.1"}, challenge.ProblemUnsupportedIdentifier},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkProblem(t, v.DNS01(t.Context(), tc.id, keyAuth), tc.want)
		})
	}
}

// TestDNS01AddRemove drives the server the way lego's exec provider does for
// an order with a name and its wildcard: two values present at once.
func TestDNS01AddRemove(t *testing.T) {
	srv := challengetest.NewDNSServer(t)
	v := newValidator(t, challenge.Config{Resolver: srv.Addr()})
	const ka2 = token + "2." + thumbprint
	srv.AddTXT("_acme-challenge.example.test.", challenge.DNS01Digest(keyAuth))
	srv.AddTXT("_acme-challenge.example.test.", challenge.DNS01Digest(ka2))
	checkProblem(t, v.DNS01(t.Context(), challenge.Identifier{Type: "dns", Value: "example.test"}, keyAuth), "")
	checkProblem(t, v.DNS01(t.Context(), challenge.Identifier{Type: "dns", Value: "*.example.test"}, ka2), "")
	srv.RemoveTXT("_acme-challenge.example.test.", challenge.DNS01Digest(keyAuth))
	checkProblem(t, v.DNS01(t.Context(), challenge.Identifier{Type: "dns", Value: "example.test"}, keyAuth), challenge.ProblemIncorrectResponse)
}

func TestDNS01ResolverDown(t *testing.T) {
	// A UDP socket that never answers: every attempt times out.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	const timeout = 300 * time.Millisecond
	v := newValidator(t, challenge.Config{Resolver: pc.LocalAddr().String(), Timeout: timeout})
	start := time.Now()
	p := v.DNS01(t.Context(), challenge.Identifier{Type: "dns", Value: "example.test"}, keyAuth)
	elapsed := time.Since(start)
	checkProblem(t, p, challenge.ProblemDNS)
	if p != nil && !strings.Contains(p.Detail, "timeout") {
		t.Errorf("detail %q does not say timeout", p.Detail)
	}
	if elapsed > timeout+2*time.Second {
		t.Errorf("took %v with Timeout %v", elapsed, timeout)
	}

	// Nothing listening at all: ICMP port unreachable, seen as refused.
	addr := pc.LocalAddr().String()
	pc.Close()
	v = newValidator(t, challenge.Config{Resolver: addr, Timeout: timeout})
	checkProblem(t, v.DNS01(t.Context(), challenge.Identifier{Type: "dns", Value: "example.test"}, keyAuth), challenge.ProblemDNS)
}
