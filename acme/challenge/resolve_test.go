package challenge

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// startDNS serves h over UDP on loopback until the test ends.
func startDNS(t *testing.T, h dns.HandlerFunc) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(started) }}
	done := make(chan struct{})
	go func() { defer close(done); srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { srv.Shutdown(); <-done })
	return pc.LocalAddr().String()
}

// TestLookupFollowsCNAMEAcrossQueries covers a server that answers a CNAME
// without the target's records, as an authoritative server does for an
// out-of-zone target: the client asks again for the target.
func TestLookupFollowsCNAMEAcrossQueries(t *testing.T) {
	addr := startDNS(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 60}
		switch q.Name {
		case "_acme-challenge.a.test.":
			hdr.Rrtype = dns.TypeCNAME
			m.Answer = []dns.RR{&dns.CNAME{Hdr: hdr, Target: "b.test."}}
		case "b.test.":
			hdr.Rrtype = dns.TypeCNAME
			m.Answer = []dns.RR{&dns.CNAME{Hdr: hdr, Target: "c.other.test."}}
		case "c.other.test.":
			hdr.Rrtype = dns.TypeTXT
			m.Answer = []dns.RR{&dns.TXT{Hdr: hdr, Txt: []string{"val", "ue"}}}
		case "loop.test.":
			hdr.Rrtype = dns.TypeCNAME
			m.Answer = []dns.RR{&dns.CNAME{Hdr: hdr, Target: "loop.test."}}
		case "x1.test.", "x2.test.":
			hdr.Rrtype = dns.TypeCNAME
			m.Answer = []dns.RR{&dns.CNAME{Hdr: hdr, Target: map[string]string{"x1.test.": "x2.test.", "x2.test.": "x1.test."}[q.Name]}}
		case "mismatch.test.":
			m.Question[0].Name = "other.test."
		case "v4.test.":
			if q.Qtype == dns.TypeA {
				hdr.Rrtype = dns.TypeA
				m.Answer = []dns.RR{&dns.A{Hdr: hdr, A: net.IPv4(192, 0, 2, 1)}}
			} else {
				m.Rcode = dns.RcodeServerFailure
			}
		default:
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	v, err := New(Config{Resolver: addr})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	txts, err := v.lookupTXT(ctx, "_acme-challenge.a.test")
	if err != nil || !slices.Equal(txts, []string{"value"}) {
		t.Errorf("lookupTXT via two CNAMEs = %q, %v; want [value]", txts, err)
	}
	if _, err := v.lookupTXT(ctx, "loop.test"); err == nil {
		t.Error("lookupTXT of a CNAME loop succeeded")
	}
	if _, err := v.lookupTXT(ctx, "x1.test"); err == nil {
		t.Error("lookupTXT of a CNAME loop across queries succeeded")
	}
	if _, err := v.lookupTXT(ctx, "mismatch.test"); err == nil {
		t.Error("lookupTXT accepted an answer to another question")
	}
	// A SERVFAIL for AAAA does not spoil a good A answer.
	addrs, err := v.lookupIP(ctx, "v4.test")
	if err != nil || !slices.Equal(addrs, []netip.Addr{netip.MustParseAddr("192.0.2.1")}) {
		t.Errorf("lookupIP = %v, %v; want [192.0.2.1]", addrs, err)
	}
}

func TestReverseName(t *testing.T) {
	for ip, want := range map[string]string{
		"192.0.2.1":   "1.2.0.192.in-addr.arpa",
		"2001:db8::1": "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
	} {
		if got := reverseName(netip.MustParseAddr(ip)); got != want {
			t.Errorf("reverseName(%s) = %q, want %q", ip, got, want)
		}
		// miekg/dns as a second opinion.
		if alt, err := dns.ReverseAddr(ip); err != nil || alt != want+"." {
			t.Errorf("dns.ReverseAddr(%s) = %q, %v", ip, alt, err)
		}
	}
}

func TestValidDNSName(t *testing.T) {
	long := func(n int) string { return string(slices.Repeat([]byte("a"), n)) }
	for name, want := range map[string]bool{
		"example.com":           true,
		"xn--bcher-kva.example": true,
		"a":                     true,
		"a-b.c":                 true,
		long(63) + ".com":       true,
		long(64) + ".com":       false,
		long(63) + "." + long(63) + "." + long(63) + "." + long(61): true,
		long(63) + "." + long(63) + "." + long(63) + "." + long(62): false,
		"":               false,
		".":              false,
		"example..com":   false,
		"-a.com":         false,
		"a-.com":         false,
		"a_b.com":        false,
		"*.example.com":  false,
		"1.2.3.4":        false,
		"::1":            false,
		"example.com.":   false,
		"exa mple.com":   false,
		"bücher.example": false,
	} {
		if got := validDNSName(name); got != want {
			t.Errorf("validDNSName(%q) = %v, want %v", name, got, want)
		}
	}
}
