package challengetest

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func query(t *testing.T, s *DNSServer, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: network}
	r, _, err := c.ExchangeContext(t.Context(), q, s.Addr())
	if err != nil {
		t.Fatalf("%s query %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}

func txts(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out
}

func TestDNSServer(t *testing.T) {
	s := NewDNSServer(t)
	long := strings.Repeat("x", 300)
	s.SetTXT("_acme-challenge.Example.test", "one", long)
	s.AddTXT("_acme-challenge.example.test.", "two")
	s.SetAddrs("web.example.test", netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"))
	s.SetCNAME("alias.example.test", "web.example.test")

	r := query(t, s, "udp", "_acme-challenge.example.test", dns.TypeTXT)
	if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
		t.Fatalf("rcode %s, aa %v", dns.RcodeToString[r.Rcode], r.Authoritative)
	}
	if got, want := txts(r), []string{"one", long, "two"}; !slices.Equal(got, want) {
		t.Errorf("TXT = %q, want %q", got, want)
	}

	s.RemoveTXT("_acme-challenge.example.test", "one")
	if got := txts(query(t, s, "tcp", "_acme-challenge.example.test", dns.TypeTXT)); !slices.Equal(got, []string{long, "two"}) {
		t.Errorf("TXT after RemoveTXT over TCP = %q", got)
	}

	r = query(t, s, "udp", "alias.example.test", dns.TypeAAAA)
	if len(r.Answer) != 2 || r.Answer[0].Header().Rrtype != dns.TypeCNAME || r.Answer[1].(*dns.AAAA).AAAA.String() != "::1" {
		t.Errorf("AAAA via CNAME = %v", r.Answer)
	}

	if r := query(t, s, "udp", "nope.example.test", dns.TypeTXT); r.Rcode != dns.RcodeNameError {
		t.Errorf("unknown name: rcode %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	// example.test has no records but names below it: NODATA.
	if r := query(t, s, "udp", "example.test", dns.TypeTXT); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("empty non-terminal: rcode %s, %d answers; want NOERROR, none", dns.RcodeToString[r.Rcode], len(r.Answer))
	}

	s.SetTXT("_acme-challenge.example.test")
	if r := query(t, s, "udp", "_acme-challenge.example.test", dns.TypeTXT); r.Rcode != dns.RcodeNameError {
		t.Errorf("after SetTXT with no values: rcode %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}

	s.SetCNAME("loop1.test", "loop2.test")
	s.SetCNAME("loop2.test", "loop1.test")
	if r := query(t, s, "udp", "loop1.test", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("CNAME loop: rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

func TestDNSServerTruncates(t *testing.T) {
	s := NewDNSServer(t)
	var values []string
	for i := range 40 {
		values = append(values, strings.Repeat(string(rune('a'+i%26)), 100))
	}
	s.SetTXT("big.test", values...)

	if r := query(t, s, "udp", "big.test", dns.TypeTXT); !r.Truncated {
		t.Errorf("UDP answer without EDNS0 of %d records is not truncated", len(r.Answer))
	}
	if got := txts(query(t, s, "tcp", "big.test", dns.TypeTXT)); len(got) != len(values) {
		t.Errorf("TCP answer has %d records, want %d", len(got), len(values))
	}
}
