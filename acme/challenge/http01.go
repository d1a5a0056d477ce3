package challenge

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

const (
	// maxBody is how much of an http-01 response body is read. A key
	// authorization is under 200 bytes.
	maxBody = 8 << 10
	// maxHeader bounds an http-01 response's headers.
	maxHeader = 16 << 10
	// userAgent is sent with every http-01 request.
	userAgent = "Sigil ACME validator"
)

// HTTP01 validates an http-01 challenge (RFC 8555 §8.3, RFC 8738 §5 for IP
// identifiers): it GETs http://<identifier>:<HTTPPort>/.well-known/acme-challenge/<token>
// and wants status 200 and a body that, once trailing whitespace is trimmed,
// is keyAuthorization. Redirects are followed within the limits the package
// doc gives; an https target's certificate is not checked (the name may not
// have one yet). It returns nil when the challenge is met.
func (v *Validator) HTTP01(ctx context.Context, id Identifier, token, keyAuthorization string) *Problem {
	t, p := v.parseIdentifier(id, false)
	if p != nil {
		return p
	}
	if !validToken(token) {
		return problemf(ProblemMalformed, nil, "token %q is not base64url", token)
	}
	ctx, cancel := v.withTimeout(ctx)
	defer cancel()

	u := &url.URL{
		Scheme: "http",
		Host:   hostPort(t.urlHost(), v.httpPort, 80),
		Path:   "/.well-known/acme-challenge/" + token,
	}
	current := u.String() // the URL being fetched, for details
	tr := v.transport()
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if p := v.checkRedirect(req.URL, len(via)); p != nil {
				return p
			}
			current = req.URL.String()
			return nil
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, current, nil)
	if err != nil {
		return problemf(ProblemServerInternal, err, "building the http-01 request")
	}
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept", "*/*")
	resp, err := client.Do(req)
	if err != nil {
		return v.problem(ctx, "fetching "+current, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return problemf(ProblemUnauthorized, nil, "fetching %s: status %d, want 200", current, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return v.problem(ctx, "reading the body of "+current, err)
	}
	if len(body) > maxBody {
		return problemf(ProblemIncorrectResponse, nil, "the body of %s is longer than %d bytes", current, maxBody)
	}
	if !matchKeyAuthorization(body, keyAuthorization) {
		// Never quote the body: see the package doc.
		hint := ""
		if bytes.HasPrefix(body, []byte(token+".")) {
			hint = " (the token matches; is the account key thumbprint that of the account asking?)"
		}
		return problemf(ProblemIncorrectResponse, nil, "the body of %s (%d bytes) is not the key authorization%s", current, len(body), hint)
	}
	return nil
}

// matchKeyAuthorization reports whether body, less trailing whitespace, is
// exactly want (RFC 8555 §8.3: "The server SHOULD ignore whitespace
// characters at the end of the body").
func matchKeyAuthorization(body []byte, want string) bool {
	if len(body) > maxBody || want == "" {
		return false
	}
	return string(bytes.TrimRight(body, " \t\r\n")) == want
}

// validToken reports whether token uses only the base64url alphabet (RFC
// 8555 §8.3), so it is safe as a path segment.
func validToken(token string) bool {
	if token == "" {
		return false
	}
	for i := 0; i < len(token); i++ {
		c := token[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// checkRedirect decides whether to follow a redirect to u, the n-th.
func (v *Validator) checkRedirect(u *url.URL, n int) *Problem {
	if n > v.maxRedirects {
		if v.maxRedirects == 0 {
			return problemf(ProblemConnection, nil, "redirect to %s: redirects are not followed", u.Redacted())
		}
		return problemf(ProblemConnection, nil, "too many redirects (more than %d), the last to %s", v.maxRedirects, u.Redacted())
	}
	var want, def int
	switch u.Scheme {
	case "http":
		want, def = v.httpPort, 80
	case "https":
		want, def = v.tlsPort, 443
	default:
		return problemf(ProblemConnection, nil, "redirect to %s: only http and https redirects are followed", u.Redacted())
	}
	port := def
	if ps := u.Port(); ps != "" {
		var err error
		if port, err = strconv.Atoi(ps); err != nil {
			return problemf(ProblemConnection, nil, "redirect to %s: bad port", u.Redacted())
		}
	}
	if port != want {
		return problemf(ProblemConnection, nil, "redirect to %s: only port %d is followed for %s", u.Redacted(), want, u.Scheme)
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return problemf(ProblemConnection, nil, "redirect to %s: addresses with a zone are not followed", u.Redacted())
		}
		if reason := v.refuse(ip); reason != "" {
			return problemf(ProblemConnection, nil, "redirect to %s: %s", u.Redacted(), reason)
		}
	} else if !validDNSName(strings.ToLower(host)) {
		return problemf(ProblemConnection, nil, "redirect to %s: %q is not a valid host name", u.Redacted(), host)
	}
	return nil
}

// transport is an http.Transport that dials through the validator's
// resolution and address policy, never a proxy, one connection per request.
func (v *Validator) transport() *http.Transport {
	return &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return v.dialHostPort(ctx, addr)
		},
		DialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			conn, err := v.dialHostPort(ctx, addr)
			if err != nil {
				return nil, err
			}
			host, _, _ := net.SplitHostPort(addr)
			tc := tls.Client(conn, &tls.Config{
				ServerName: host,
				// RFC 8555 §8.3 asks for the key authorization, not a
				// trusted certificate; a name being validated may have none.
				InsecureSkipVerify: true,
				MinVersion:         tls.VersionTLS12,
				NextProtos:         []string{"http/1.1"},
			})
			if err := tc.HandshakeContext(ctx); err != nil {
				tc.Close()
				return nil, &handshakeError{addr: conn.RemoteAddr().String(), err: err}
			}
			return tc, nil
		},
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: maxHeader,
		ForceAttemptHTTP2:      false,
	}
}

func (v *Validator) dialHostPort(ctx context.Context, addr string) (net.Conn, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("splitting %q: %w", addr, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		return nil, fmt.Errorf("port in %q: %w", addr, err)
	}
	return v.dial(ctx, strings.ToLower(host), port)
}
