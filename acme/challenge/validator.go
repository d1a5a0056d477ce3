package challenge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Config configures a Validator. The zero value is production's: ports 80
// and 443, the system resolver, 10 s per validation, 10 redirects.
type Config struct {
	// HTTPPort is the port http-01 dials, and the only port an http://
	// redirect may name. Default 80.
	HTTPPort int
	// TLSPort is the port tls-alpn-01 dials, and the only port an https://
	// redirect may name. Default 443.
	TLSPort int
	// Resolver is the "IP:port" of the DNS server asked for dns-01 TXT
	// records and for the A/AAAA records of http-01 and tls-alpn-01 targets.
	// It should be a validating recursive resolver. Default "": /etc/hosts
	// and the resolvers of /etc/resolv.conf, through Go's own resolver, with
	// names that have a dot made absolute so that no search domain applies.
	Resolver string
	// LookupIP, if set, replaces A/AAAA resolution for http-01 and
	// tls-alpn-01 (dns-01 still asks Resolver or the system). It is meant for
	// development, e.g. `sigil dev` mapping names under "localhost" to
	// 127.0.0.1 and ::1 (which also needs AllowLoopback). It must honour ctx.
	// Default nil.
	LookupIP func(ctx context.Context, host string) ([]netip.Addr, error)
	// AllowLoopback lets validations connect to loopback addresses (127/8,
	// ::1), and IP identifiers name them. For development and tests only.
	// Default false.
	AllowLoopback bool
	// Timeout bounds each validation, name resolution included. Default 10s.
	Timeout time.Duration
	// MaxRedirects is how many redirects http-01 follows. Default 10; a
	// negative value follows none.
	MaxRedirects int
	// Dialer makes the TCP and UDP connections. It is only ever handed IP
	// addresses. Default: a zero net.Dialer.
	Dialer *net.Dialer
}

// Validator validates challenges. It is safe for concurrent use.
type Validator struct {
	httpPort      int
	tlsPort       int
	timeout       time.Duration
	maxRedirects  int
	allowLoopback bool
	dialer        *net.Dialer
	lookupIPHook  func(ctx context.Context, host string) ([]netip.Addr, error)
	dns           *dnsClient    // when Config.Resolver is set
	system        *net.Resolver // otherwise
}

// New returns a Validator for cfg, or an error naming the first field that
// is out of range.
func New(cfg Config) (*Validator, error) {
	v := &Validator{
		httpPort:      cfg.HTTPPort,
		tlsPort:       cfg.TLSPort,
		timeout:       cfg.Timeout,
		maxRedirects:  cfg.MaxRedirects,
		allowLoopback: cfg.AllowLoopback,
		dialer:        cfg.Dialer,
		lookupIPHook:  cfg.LookupIP,
	}
	if v.httpPort == 0 {
		v.httpPort = 80
	}
	if v.tlsPort == 0 {
		v.tlsPort = 443
	}
	if v.timeout == 0 {
		v.timeout = 10 * time.Second
	}
	switch {
	case v.maxRedirects == 0:
		v.maxRedirects = 10
	case v.maxRedirects < 0:
		v.maxRedirects = 0
	}
	if v.dialer == nil {
		v.dialer = &net.Dialer{}
	}
	if v.httpPort < 0 || v.httpPort > 65535 {
		return nil, fmt.Errorf("challenge: HTTPPort %d out of range", cfg.HTTPPort)
	}
	if v.tlsPort < 0 || v.tlsPort > 65535 {
		return nil, fmt.Errorf("challenge: TLSPort %d out of range", cfg.TLSPort)
	}
	if v.timeout < 0 {
		return nil, fmt.Errorf("challenge: negative Timeout %v", cfg.Timeout)
	}
	if cfg.Resolver != "" {
		ap, err := netip.ParseAddrPort(cfg.Resolver)
		if err != nil {
			return nil, fmt.Errorf("challenge: Resolver %q is not an IP:port: %w", cfg.Resolver, err)
		}
		v.dns = &dnsClient{addr: ap.String(), dialer: v.dialer}
	} else {
		v.system = &net.Resolver{PreferGo: true}
	}
	return v, nil
}

// Identifier is an ACME identifier (RFC 8555 §9.7.7, RFC 8738).
type Identifier struct {
	Type  string // "dns" or "ip"
	Value string // a DNS name (A-labels; "*." only for dns-01) or an IP address
}

// Problem types, from RFC 8555 §6.7. The package doc says which failure
// gets which.
const (
	ProblemConnection            = "urn:ietf:params:acme:error:connection"
	ProblemDNS                   = "urn:ietf:params:acme:error:dns"
	ProblemIncorrectResponse     = "urn:ietf:params:acme:error:incorrectResponse"
	ProblemMalformed             = "urn:ietf:params:acme:error:malformed"
	ProblemRejectedIdentifier    = "urn:ietf:params:acme:error:rejectedIdentifier"
	ProblemServerInternal        = "urn:ietf:params:acme:error:serverInternal"
	ProblemTLS                   = "urn:ietf:params:acme:error:tls"
	ProblemUnauthorized          = "urn:ietf:params:acme:error:unauthorized"
	ProblemUnsupportedIdentifier = "urn:ietf:params:acme:error:unsupportedIdentifier"
)

// Problem is why a validation failed, ready to be the challenge's error
// (RFC 8555 §8). Type and Detail are for the client. Cause, if not nil, is
// the internal error behind it, for the server's log only: it may name the
// resolver or other internals.
//
// Problem implements error for logging and errors.As; the validation methods
// return *Problem, nil on success, so assign their result to a *Problem, not
// to an error variable.
type Problem struct {
	Type   string
	Detail string
	Cause  error
}

func (p *Problem) Error() string {
	return strings.TrimPrefix(p.Type, "urn:ietf:params:acme:error:") + ": " + p.Detail
}

// Unwrap returns p.Cause.
func (p *Problem) Unwrap() error { return p.Cause }

func problemf(typ string, cause error, format string, args ...any) *Problem {
	return &Problem{Type: typ, Detail: fmt.Sprintf(format, args...), Cause: cause}
}

// errTimedOut is the cause of a validation context whose Timeout ran out, to
// tell it from the caller cancelling.
var errTimedOut = errors.New("challenge: validation timed out")

func (v *Validator) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, v.timeout, errTimedOut)
}

// target is where http-01 and tls-alpn-01 connect for an identifier.
type target struct {
	host string     // lowercase DNS name, or the IP's canonical text
	ip   netip.Addr // valid for IP identifiers
}

// urlHost is host as it goes in a URL: IPv6 in brackets.
func (t target) urlHost() string {
	if t.ip.Is6() {
		return "[" + t.host + "]"
	}
	return t.host
}

// parseIdentifier checks id and returns what to connect to; for DNS
// identifiers a leading "*." is stripped only when wildcardOK.
func (v *Validator) parseIdentifier(id Identifier, wildcardOK bool) (target, *Problem) {
	switch id.Type {
	case "dns":
		name := strings.ToLower(id.Value)
		if rest, ok := strings.CutPrefix(name, "*."); ok {
			if !wildcardOK {
				return target{}, problemf(ProblemMalformed, nil, "wildcard identifier %q can only be validated with dns-01 (RFC 8555 §7.1.3)", id.Value)
			}
			name = rest
		}
		if !validDNSName(name) {
			return target{}, problemf(ProblemMalformed, nil, "%q is not a valid DNS name", id.Value)
		}
		return target{host: name}, nil
	case "ip":
		ip, err := netip.ParseAddr(id.Value)
		if err != nil || ip.Zone() != "" {
			return target{}, problemf(ProblemMalformed, err, "%q is not a valid IP address", id.Value)
		}
		ip = ip.Unmap()
		if reason := v.refuse(ip); reason != "" {
			return target{}, problemf(ProblemRejectedIdentifier, nil, "will not validate %s: %s", ip, reason)
		}
		return target{host: ip.String(), ip: ip}, nil
	default:
		return target{}, problemf(ProblemUnsupportedIdentifier, nil, "identifier type %q is not supported", id.Type)
	}
}

// validDNSName reports whether name is a hostname in LDH form: 1 to 63
// letters, digits and inner hyphens per label, at most 253 characters, no
// trailing dot, and not an IP address in disguise.
func validDNSName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// refuse returns why the address policy will not connect to ip, or "".
func (v *Validator) refuse(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid():
		return "invalid address"
	case ip.IsLoopback():
		if v.allowLoopback {
			return ""
		}
		return "loopback addresses are not allowed"
	case ip.IsUnspecified():
		return "unspecified addresses are not allowed"
	case ip.IsLinkLocalUnicast():
		return "link-local addresses are not allowed"
	case ip.IsMulticast():
		return "multicast addresses are not allowed"
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the broadcast address is not allowed"
	}
	return ""
}

// dial connects over TCP to host (a name or an IP literal) on port. A name
// is resolved with the identifier's own resolution and addresses the policy
// refuses are dropped. IPv6 is tried first, then IPv4, one address of each,
// the first attempt getting half the remaining time when a second follows.
func (v *Validator) dial(ctx context.Context, host string, port int) (net.Conn, error) {
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		addrs, err = v.lookupIP(ctx, host)
		if err != nil {
			return nil, err
		}
	}
	var v6, v4 netip.Addr
	var refused []string
	for _, a := range addrs {
		a = a.Unmap()
		if reason := v.refuse(a); reason != "" {
			refused = append(refused, a.String()+" ("+reason+")")
			continue
		}
		if a.Is4() && !v4.IsValid() {
			v4 = a
		}
		if a.Is6() && !v6.IsValid() {
			v6 = a
		}
	}
	var candidates []netip.Addr
	for _, a := range []netip.Addr{v6, v4} {
		if a.IsValid() {
			candidates = append(candidates, a)
		}
	}
	if len(candidates) == 0 {
		return nil, problemf(ProblemConnection, nil, "will not connect to %s: %s", host, strings.Join(refused, ", "))
	}
	var lastErr error
	for i, a := range candidates {
		actx := ctx
		if i < len(candidates)-1 {
			if deadline, ok := ctx.Deadline(); ok {
				var cancel context.CancelFunc
				actx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(deadline)/2))
				defer cancel()
			}
		}
		addr := netip.AddrPortFrom(a, uint16(port)).String()
		conn, err := v.dialer.DialContext(actx, "tcp", addr)
		if err == nil {
			return conn, nil
		}
		lastErr = &dialError{addr: addr, err: err}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// dialError is a failed connection to addr.
type dialError struct {
	addr string
	err  error
}

func (e *dialError) Error() string { return "connecting to " + e.addr + ": " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// handshakeError is a failed TLS handshake.
type handshakeError struct {
	addr string
	err  error
}

func (e *handshakeError) Error() string { return "TLS handshake with " + e.addr + ": " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

// problem turns an error met while doing action (e.g. "fetching URL") into
// the Problem for the client. ctx is the validation's context.
func (v *Validator) problem(ctx context.Context, action string, err error) *Problem {
	if ctx.Err() != nil && !errors.Is(context.Cause(ctx), errTimedOut) {
		return problemf(ProblemServerInternal, context.Cause(ctx), "validation was cancelled")
	}
	if p, ok := errors.AsType[*Problem](err); ok {
		return p
	}
	if le, ok := errors.AsType[*lookupError](err); ok {
		return problemf(ProblemDNS, err, "DNS problem: looking up %s for %s: %s", le.qtype, le.name, le.reason)
	}
	var ne net.Error
	if errors.Is(context.Cause(ctx), errTimedOut) || errors.As(err, &ne) && ne.Timeout() {
		return problemf(ProblemConnection, err, "%s: timeout after %v", action, v.timeout)
	}
	if he, ok := errors.AsType[*handshakeError](err); ok {
		return problemf(ProblemTLS, err, "%s: TLS handshake with %s failed: %v", action, he.addr, he.err)
	}
	where := ""
	if de, ok := errors.AsType[*dialError](err); ok {
		where = ": connecting to " + de.addr
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return problemf(ProblemConnection, err, "%s%s: connection refused", action, where)
	case errors.Is(err, syscall.ECONNRESET):
		return problemf(ProblemConnection, err, "%s%s: connection reset by peer", action, where)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return problemf(ProblemConnection, err, "%s%s: no route to host", action, where)
	}
	// Anything else stays generic: its text could quote bytes from a host
	// a redirect pointed at. Cause has it for the log.
	var errno syscall.Errno
	switch {
	case errors.As(err, &errno):
		return problemf(ProblemConnection, err, "%s%s: %v", action, where, errno)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return problemf(ProblemConnection, err, "%s%s: the connection was closed early", action, where)
	}
	return problemf(ProblemConnection, err, "%s%s: the connection failed", action, where)
}

// hostPort joins host (a urlHost) and port, leaving out the scheme's
// default port as browsers and clients do in the Host header.
func hostPort(host string, port, defaultPort int) string {
	if port == defaultPort {
		return host
	}
	return host + ":" + strconv.Itoa(port)
}
