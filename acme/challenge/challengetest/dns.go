// Package challengetest has test doubles for the parties ACME challenge
// validation talks to, for tests of package challenge and of the ACME server
// (for instance with lego's dns-01 "exec" provider writing into DNSServer).
//
// It listens on loopback only and never imports package challenge, so the
// latter's own tests can use it.
package challengetest

import (
	"iter"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DNSServer is an authoritative DNS server on 127.0.0.1, over UDP and TCP
// on the same port, for every name. It answers what was set: A/AAAA, TXT and
// CNAME records (following CNAMEs to targets it knows), NODATA for a name
// that has other records or names below it, NXDOMAIN for the rest. UDP
// answers larger than the query's EDNS0 buffer (512 bytes without EDNS0) are
// truncated, so clients must fall back to TCP as in the wild. Its methods are
// safe for concurrent use, including while it answers.
type DNSServer struct {
	addr string

	mu    sync.Mutex
	txt   map[string][]string
	addrs map[string][]netip.Addr
	cname map[string]string
}

// NewDNSServer starts a DNSServer and stops it when tb's test ends.
func NewDNSServer(tb testing.TB) *DNSServer {
	tb.Helper()
	s := &DNSServer{
		txt:   map[string][]string{},
		addrs: map[string][]netip.Addr{},
		cname: map[string]string{},
	}
	pc, l, err := listenPair()
	if err != nil {
		tb.Fatalf("challengetest: starting the DNS server: %v", err)
	}
	s.addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: dns.HandlerFunc(s.serve)},
		{Listener: l, Handler: dns.HandlerFunc(s.serve)},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan error, 1)
		go func() { done <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-done:
			tb.Fatalf("challengetest: serving DNS: %v", err)
		}
		tb.Cleanup(func() {
			if err := srv.Shutdown(); err != nil {
				tb.Errorf("challengetest: stopping the DNS server: %v", err)
			}
			<-done
		})
	}
	return s
}

// listenPair listens on UDP and TCP on the same loopback port.
func listenPair() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, lastErr
}

// Addr is the server's "127.0.0.1:port", for challenge.Config.Resolver.
func (s *DNSServer) Addr() string { return s.addr }

// SetTXT makes values the TXT records at name, one record each (a value
// longer than 255 bytes is split into several strings of one record). No
// values removes them.
func (s *DNSServer) SetTXT(name string, values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set(s.txt, canonical(name), slices.Clone(values))
}

// AddTXT adds a TXT record with value at name, as a DNS provider's
// "present" step does; lego adds one per authorization, so a name and its
// wildcard can be pending at once.
func (s *DNSServer) AddTXT(name, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := canonical(name)
	s.txt[n] = append(s.txt[n], value)
}

// RemoveTXT removes the TXT records with value at name, as a DNS provider's
// "cleanup" step does.
func (s *DNSServer) RemoveTXT(name, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := canonical(name)
	set(s.txt, n, slices.DeleteFunc(s.txt[n], func(v string) bool { return v == value }))
}

// SetAddrs makes addrs the A and AAAA records at name. No addrs removes
// them.
func (s *DNSServer) SetAddrs(name string, addrs ...netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set(s.addrs, canonical(name), slices.Clone(addrs))
}

// SetCNAME makes name an alias of target; an empty target removes it. A name
// with a CNAME answers with it whatever the question's type.
func (s *DNSServer) SetCNAME(name, target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if target == "" {
		delete(s.cname, canonical(name))
		return
	}
	s.cname[canonical(name)] = canonical(target)
}

func set[V any](m map[string][]V, k string, vs []V) {
	if len(vs) == 0 {
		delete(m, k)
		return
	}
	m[k] = vs
}

func canonical(name string) string { return strings.ToLower(dns.Fqdn(name)) }

func (s *DNSServer) serve(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	m.RecursionAvailable = false
	if len(r.Question) != 1 || r.Question[0].Qclass != dns.ClassINET {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	s.mu.Lock()
	m.Answer, m.Rcode = s.answer(canonical(q.Name), q.Qtype)
	s.mu.Unlock()

	size := dns.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
		m.SetEdns0(opt.UDPSize(), false)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// answer is the answer section and rcode for name and qtype. s.mu is held.
func (s *DNSServer) answer(name string, qtype uint16) ([]dns.RR, int) {
	var out []dns.RR
	for range 8 {
		hdr := func(t uint16) dns.RR_Header {
			return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: 0}
		}
		if target, ok := s.cname[name]; ok {
			out = append(out, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: target})
			if qtype == dns.TypeCNAME {
				return out, dns.RcodeSuccess
			}
			name = target
			continue
		}
		if !s.exists(name) {
			return out, dns.RcodeNameError
		}
		switch qtype {
		case dns.TypeTXT:
			for _, v := range s.txt[name] {
				out = append(out, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: split(v)})
			}
		case dns.TypeA, dns.TypeAAAA:
			for _, a := range s.addrs[name] {
				switch {
				case a.Is4() && qtype == dns.TypeA:
					out = append(out, &dns.A{Hdr: hdr(dns.TypeA), A: a.AsSlice()})
				case a.Is6() && qtype == dns.TypeAAAA:
					out = append(out, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: a.AsSlice()})
				}
			}
		}
		return out, dns.RcodeSuccess
	}
	return out, dns.RcodeServerFailure // a CNAME loop
}

// exists reports whether name has records or names below it. s.mu is held.
func (s *DNSServer) exists(name string) bool {
	suffix := "." + name
	for _, names := range []iter.Seq[string]{maps.Keys(s.txt), maps.Keys(s.addrs), maps.Keys(s.cname)} {
		for n := range names {
			if n == name || strings.HasSuffix(n, suffix) {
				return true
			}
		}
	}
	return false
}

// split cuts v into the at most 255-byte strings of one TXT record.
func split(v string) []string {
	if v == "" {
		return []string{""}
	}
	var out []string
	for len(v) > 255 {
		out = append(out, v[:255])
		v = v[255:]
	}
	return append(out, v)
}
