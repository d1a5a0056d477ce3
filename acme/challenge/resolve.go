package challenge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// lookupError is a failed DNS lookup. Its reason is fit for the client; err,
// the internal cause, may name the resolver.
type lookupError struct {
	name   string // the name looked up, without the trailing dot
	qtype  string // "A/AAAA" or "TXT"
	reason string // "NXDOMAIN", "SERVFAIL", "timeout", "no A or AAAA records", ...
	err    error
}

func (e *lookupError) Error() string {
	s := fmt.Sprintf("looking up %s for %s: %s", e.qtype, e.name, e.reason)
	if e.err != nil && e.err.Error() != e.reason {
		s += ": " + e.err.Error()
	}
	return s
}

func (e *lookupError) Unwrap() error { return e.err }

// lookupIP resolves host (a DNS name) to addresses with, in order of
// preference, Config.LookupIP, Config.Resolver or the system resolver.
func (v *Validator) lookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	var addrs []netip.Addr
	switch {
	case v.lookupIPHook != nil:
		var err error
		addrs, err = v.lookupIPHook(ctx, host)
		if err != nil {
			// The hook is the operator's: its words are fit for clients.
			return nil, &lookupError{name: host, qtype: "A/AAAA", reason: err.Error(), err: err}
		}
	case v.dns != nil:
		var err error
		addrs, err = v.dns.lookupIP(ctx, host)
		if err != nil {
			return nil, err
		}
	default:
		var err error
		addrs, err = v.system.LookupNetIP(ctx, "ip", absolute(host))
		if err != nil {
			return nil, systemLookupError(host, "A/AAAA", err)
		}
	}
	if len(addrs) == 0 {
		return nil, &lookupError{name: host, qtype: "A/AAAA", reason: "no A or AAAA records"}
	}
	return addrs, nil
}

// lookupTXT returns the TXT records at name, each record's strings joined.
// No records (NODATA) is an empty result, not an error.
func (v *Validator) lookupTXT(ctx context.Context, name string) ([]string, error) {
	if v.dns != nil {
		return v.dns.lookupTXT(ctx, name)
	}
	txts, err := v.system.LookupTXT(ctx, absolute(name))
	if err != nil {
		return nil, systemLookupError(name, "TXT", err)
	}
	return txts, nil
}

// absolute makes a name with a dot absolute for the system resolver, so no
// search domain is tried. A single-label name ("localhost") is left as it is
// so that /etc/hosts, whose single-label entries Go keeps relative, still
// answers for it.
func absolute(name string) string {
	if strings.Contains(name, ".") {
		return name + "."
	}
	return name
}

func systemLookupError(name, qtype string, err error) error {
	reason := "lookup failed"
	if de, ok := errors.AsType[*net.DNSError](err); ok {
		switch {
		case de.IsNotFound:
			reason = "NXDOMAIN"
		case de.IsTimeout:
			reason = "timeout"
		default:
			reason = de.Err // "server misbehaving" and the like; names no server
		}
	}
	return &lookupError{name: name, qtype: qtype, reason: reason, err: err}
}

// dnsClient asks one recursive resolver (Config.Resolver) with miekg/dns:
// UDP with EDNS0, retried on timeout, TCP when the answer is truncated, and
// CNAME chains followed.
type dnsClient struct {
	addr   string
	dialer *net.Dialer
}

const (
	maxCNAMEHops = 8
	udpAttempts  = 3
	udpTimeout   = 3 * time.Second
	ednsSize     = 4096
)

func (c *dnsClient) lookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	var addrs []netip.Addr
	var firstErr error
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := c.lookup(ctx, host, qtype, "A/AAAA")
		if err != nil {
			if le, ok := errors.AsType[*lookupError](err); ok && le.reason == "NXDOMAIN" {
				return nil, err
			}
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		for _, rr := range rrs {
			switch rr := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(rr.A); ok {
					addrs = append(addrs, a.Unmap())
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(rr.AAAA); ok {
					addrs = append(addrs, a)
				}
			}
		}
	}
	if len(addrs) == 0 && firstErr != nil {
		return nil, firstErr
	}
	return addrs, nil
}

func (c *dnsClient) lookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := c.lookup(ctx, name, dns.TypeTXT, "TXT")
	if err != nil {
		return nil, err
	}
	var txts []string
	for _, rr := range rrs {
		if t, ok := rr.(*dns.TXT); ok {
			txts = append(txts, strings.Join(t.Txt, ""))
		}
	}
	return txts, nil
}

// lookup returns the records of qtype at name, following CNAMEs: those in
// an answer, and a chain that ends in a name the answer has nothing for by
// asking again for that name.
func (c *dnsClient) lookup(ctx context.Context, name string, qtype uint16, label string) ([]dns.RR, error) {
	qname := dns.Fqdn(name)
	seen := map[string]bool{}
	for range maxCNAMEHops {
		seen[strings.ToLower(qname)] = true
		msg, err := c.exchange(ctx, qname, qtype)
		if err != nil {
			reason := "lookup failed"
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || ctx.Err() != nil {
				reason = "timeout"
			}
			return nil, &lookupError{name: name, qtype: label, reason: reason, err: err}
		}
		switch msg.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
		default:
			return nil, &lookupError{name: name, qtype: label, reason: dns.RcodeToString[msg.Rcode]}
		}
		rrs, last, ok := answerFor(msg, qname, qtype)
		switch {
		case !ok:
			return nil, &lookupError{name: name, qtype: label, reason: "CNAME loop"}
		case len(rrs) > 0:
			return rrs, nil
		case msg.Rcode == dns.RcodeNameError:
			return nil, &lookupError{name: name, qtype: label, reason: "NXDOMAIN"}
		case strings.EqualFold(last, qname):
			return nil, nil // NODATA
		case seen[strings.ToLower(last)]:
			return nil, &lookupError{name: name, qtype: label, reason: "CNAME loop"}
		}
		qname = last
	}
	return nil, &lookupError{name: name, qtype: label, reason: "too many CNAMEs"}
}

// answerFor returns the records of qtype in msg's answer for qname or the
// end of the CNAME chain starting there, and the name the chain ends at; ok
// is false for a chain that loops or is too long.
func answerFor(msg *dns.Msg, qname string, qtype uint16) (rrs []dns.RR, end string, ok bool) {
	name := qname
	seen := map[string]bool{}
	for range maxCNAMEHops {
		seen[strings.ToLower(name)] = true
		var next string
		for _, rr := range msg.Answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, name) || h.Class != dns.ClassINET {
				continue
			}
			if h.Rrtype == qtype {
				rrs = append(rrs, rr)
			}
			if cn, ok := rr.(*dns.CNAME); ok && qtype != dns.TypeCNAME {
				next = cn.Target
			}
		}
		if len(rrs) > 0 || next == "" {
			return rrs, name, true
		}
		if seen[strings.ToLower(next)] {
			return nil, "", false
		}
		name = next
	}
	return nil, "", false
}

// exchange asks the resolver one question: over UDP up to udpAttempts times
// while it times out, then over TCP if the answer came back truncated.
func (c *dnsClient) exchange(ctx context.Context, qname string, qtype uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(qname, qtype) // sets RD
	q.SetEdns0(ednsSize, false)
	var msg *dns.Msg
	var err error
	for range udpAttempts {
		msg, err = c.exchangeOnce(ctx, "udp", q, udpTimeout)
		var ne net.Error
		if err == nil || ctx.Err() != nil || !(errors.As(err, &ne) && ne.Timeout()) {
			break
		}
	}
	if err == nil && msg.Truncated {
		msg, err = c.exchangeOnce(ctx, "tcp", q, 0)
	}
	if err != nil {
		return nil, err
	}
	if !msg.Response || len(msg.Question) != 1 || !strings.EqualFold(msg.Question[0].Name, qname) || msg.Question[0].Qtype != qtype {
		return nil, fmt.Errorf("answer from %s does not match the question %s %s", c.addr, qname, dns.TypeToString[qtype])
	}
	return msg, nil
}

// exchangeOnce sends q over network and reads the answer, within timeout
// (if not zero) and ctx.
func (c *dnsClient) exchangeOnce(ctx context.Context, network string, q *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	conn, err := c.dialer.DialContext(ctx, network, c.addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// miekg/dns obeys the context's deadline, not its cancellation.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	client := &dns.Client{Net: network}
	if deadline, ok := ctx.Deadline(); ok {
		client.Timeout = time.Until(deadline) // else miekg/dns caps reads at 2s
	}
	msg, _, err := client.ExchangeWithConnContext(ctx, q, &dns.Conn{Conn: conn, UDPSize: ednsSize})
	if err != nil {
		return nil, fmt.Errorf("asking %s over %s: %w", c.addr, network, err)
	}
	return msg, nil
}
