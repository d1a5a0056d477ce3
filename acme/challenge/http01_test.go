package challenge_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/acme/challenge"
	"github.com/sigil-pki/sigil/acme/challenge/challengetest"
)

// applicant is an http-01 responder on loopback: the handlers the test
// cases need, an https twin, and the Host headers it saw.
type applicant struct {
	http, https *httptest.Server
	httpPort    int
	httpsPort   int

	mu    sync.Mutex
	hosts []string
}

func newApplicant(t *testing.T) *applicant {
	a := &applicant{}
	mux := http.NewServeMux()
	const prefix = "/.well-known/acme-challenge/"
	serve := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) }
	}
	redirect := func(to func() string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, to(), http.StatusFound) }
	}
	mux.HandleFunc("GET "+prefix+token, serve(keyAuth+"\r\n \t\n"))
	mux.HandleFunc("GET "+prefix+"exact", serve(keyAuth))
	mux.HandleFunc("GET "+prefix+"wrong", serve("wrong"))
	mux.HandleFunc("GET "+prefix+"leadingspace", serve(" "+keyAuth))
	mux.HandleFunc("GET "+prefix+"otherkey", serve("otherkey.someoneElsesThumbprint"))
	mux.HandleFunc("GET "+prefix+"huge", serve(keyAuth+strings.Repeat(" ", 1<<20)))
	mux.HandleFunc("GET "+prefix+"error", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, keyAuth, http.StatusInternalServerError)
	})
	mux.HandleFunc("GET "+prefix+"slow", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	mux.HandleFunc("GET "+prefix+"slowbody", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(keyAuth)))
		fmt.Fprint(w, keyAuth[:5])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	// chainN redirects N times within the host, then serves the key
	// authorization.
	mux.HandleFunc("GET /hop/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.PathValue("n"))
		if n == 0 {
			fmt.Fprint(w, keyAuth)
			return
		}
		http.Redirect(w, r, "/hop/"+strconv.Itoa(n-1), http.StatusMovedPermanently)
	})
	for _, n := range []int{3, 10, 11} {
		mux.HandleFunc("GET "+prefix+"chain"+strconv.Itoa(n), redirect(func() string { return "/hop/" + strconv.Itoa(n-1) }))
	}
	mux.HandleFunc("GET "+prefix+"otherhost", redirect(func() string {
		return fmt.Sprintf("http://other.example.test:%d/hop/0", a.httpPort)
	}))
	mux.HandleFunc("GET "+prefix+"tohttps", redirect(func() string {
		return fmt.Sprintf("https://secure.example.test:%d/hop/0", a.httpsPort)
	}))
	mux.HandleFunc("GET "+prefix+"badport", redirect(func() string { return "http://web.example.test:1234/hop/0" }))
	mux.HandleFunc("GET "+prefix+"defaultport", redirect(func() string { return "http://web.example.test/hop/0" }))
	mux.HandleFunc("GET "+prefix+"ftp", redirect(func() string { return "ftp://web.example.test/hop/0" }))
	mux.HandleFunc("GET "+prefix+"file", redirect(func() string { return "file:///etc/passwd" }))
	mux.HandleFunc("GET "+prefix+"loopbackip", redirect(func() string { return fmt.Sprintf("http://127.0.0.1:%d/hop/0", a.httpPort) }))
	mux.HandleFunc("GET "+prefix+"metadata", redirect(func() string { return fmt.Sprintf("http://169.254.169.254:%d/hop/0", a.httpPort) }))
	mux.HandleFunc("GET "+prefix+"unresolvable", redirect(func() string { return fmt.Sprintf("http://nowhere.invalid:%d/hop/0", a.httpPort) }))

	record := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.mu.Lock()
			a.hosts = append(a.hosts, r.Host)
			a.mu.Unlock()
			h.ServeHTTP(w, r)
		})
	}
	a.http = httptest.NewServer(record(mux))
	t.Cleanup(a.http.Close)
	a.https = httptest.NewTLSServer(record(mux))
	t.Cleanup(a.https.Close)
	a.httpPort = portOf(t, a.http.Listener.Addr())
	a.httpsPort = portOf(t, a.https.Listener.Addr())
	return a
}

func (a *applicant) lastHost() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.hosts) == 0 {
		return ""
	}
	return a.hosts[len(a.hosts)-1]
}

func TestHTTP01(t *testing.T) {
	a := newApplicant(t)
	web := challenge.Identifier{Type: "dns", Value: "web.example.test"}
	cfg := challenge.Config{
		HTTPPort:      a.httpPort,
		TLSPort:       a.httpsPort,
		LookupIP:      lookupTest,
		AllowLoopback: true,
		Timeout:       5 * time.Second,
	}
	v := newValidator(t, cfg)

	for _, tc := range []struct {
		name  string
		id    challenge.Identifier
		token string
		want  string
	}{
		{"good, trailing whitespace", web, token, ""},
		{"good, exact", web, "exact", ""},
		{"good, upper-case name", challenge.Identifier{Type: "dns", Value: "WEB.Example.TEST"}, token, ""},
		{"good, IPv4 identifier", challenge.Identifier{Type: "ip", Value: "127.0.0.1"}, token, ""},
		{"wrong body", web, "wrong", challenge.ProblemIncorrectResponse},
		{"leading whitespace", web, "leadingspace", challenge.ProblemIncorrectResponse},
		{"other account's key", web, "otherkey", challenge.ProblemIncorrectResponse},
		{"huge body", web, "huge", challenge.ProblemIncorrectResponse},
		{"404", web, "missing", challenge.ProblemUnauthorized},
		{"500 with the key authorization", web, "error", challenge.ProblemUnauthorized},
		{"redirects within limit", web, "chain10", ""},
		{"redirect to another host", web, "otherhost", ""},
		{"redirect to https on TLSPort", web, "tohttps", ""},
		{"too many redirects", web, "chain11", challenge.ProblemConnection},
		{"redirect to another port", web, "badport", challenge.ProblemConnection},
		{"redirect to the default port", web, "defaultport", challenge.ProblemConnection},
		{"redirect to ftp", web, "ftp", challenge.ProblemConnection},
		{"redirect to file", web, "file", challenge.ProblemConnection},
		{"redirect to link-local IP", web, "metadata", challenge.ProblemConnection},
		{"redirect to an unresolvable name", web, "unresolvable", challenge.ProblemDNS},
		{"name that does not resolve", challenge.Identifier{Type: "dns", Value: "web.example.invalid"}, token, challenge.ProblemDNS},
		{"token with a slash", web, "a/../" + token, challenge.ProblemMalformed},
		{"empty token", web, "", challenge.ProblemMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkProblem(t, v.HTTP01(t.Context(), tc.id, tc.token, keyAuth), tc.want)
		})
	}

	t.Run("Host header", func(t *testing.T) {
		checkProblem(t, v.HTTP01(t.Context(), web, token, keyAuth), "")
		if got, want := a.lastHost(), "web.example.test:"+strconv.Itoa(a.httpPort); got != want {
			t.Errorf("Host = %q, want %q", got, want)
		}
	})

	t.Run("MaxRedirects", func(t *testing.T) {
		c := cfg
		c.MaxRedirects = 2
		checkProblem(t, newValidator(t, c).HTTP01(t.Context(), web, "chain3", keyAuth), challenge.ProblemConnection)
		c.MaxRedirects = 3
		checkProblem(t, newValidator(t, c).HTTP01(t.Context(), web, "chain3", keyAuth), "")
		c.MaxRedirects = -1
		checkProblem(t, newValidator(t, c).HTTP01(t.Context(), web, "otherhost", keyAuth), challenge.ProblemConnection)
	})

	t.Run("loopback refused by default", func(t *testing.T) {
		c := cfg
		c.AllowLoopback = false
		v := newValidator(t, c)
		checkProblem(t, v.HTTP01(t.Context(), web, token, keyAuth), challenge.ProblemConnection)
		checkProblem(t, v.HTTP01(t.Context(), challenge.Identifier{Type: "ip", Value: "127.0.0.1"}, token, keyAuth), challenge.ProblemRejectedIdentifier)
		checkProblem(t, v.HTTP01(t.Context(), challenge.Identifier{Type: "ip", Value: "::ffff:127.0.0.1"}, token, keyAuth), challenge.ProblemRejectedIdentifier)
	})

	t.Run("redirect to a loopback IP", func(t *testing.T) {
		checkProblem(t, v.HTTP01(t.Context(), web, "loopbackip", keyAuth), "")
	})
}

func TestHTTP01Timeout(t *testing.T) {
	a := newApplicant(t)
	const timeout = 300 * time.Millisecond
	v := newValidator(t, challenge.Config{HTTPPort: a.httpPort, LookupIP: lookupTest, AllowLoopback: true, Timeout: timeout})
	web := challenge.Identifier{Type: "dns", Value: "web.example.test"}
	for _, tok := range []string{"slow", "slowbody"} {
		t.Run(tok, func(t *testing.T) {
			start := time.Now()
			p := v.HTTP01(t.Context(), web, tok, keyAuth)
			elapsed := time.Since(start)
			checkProblem(t, p, challenge.ProblemConnection)
			if p != nil && !strings.Contains(p.Detail, "timeout") {
				t.Errorf("detail %q does not say timeout", p.Detail)
			}
			if elapsed < timeout || elapsed > timeout+2*time.Second {
				t.Errorf("took %v with Timeout %v", elapsed, timeout)
			}
		})
	}
}

func TestHTTP01ConnectionRefused(t *testing.T) {
	v := newValidator(t, challenge.Config{HTTPPort: closedPort(t), LookupIP: lookupTest, AllowLoopback: true})
	p := v.HTTP01(t.Context(), challenge.Identifier{Type: "dns", Value: "web.example.test"}, token, keyAuth)
	checkProblem(t, p, challenge.ProblemConnection)
	if p != nil && !strings.Contains(p.Detail, "refused") {
		t.Errorf("detail %q does not say refused", p.Detail)
	}
}

func TestHTTP01IPv6(t *testing.T) {
	l := listen6(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "["+"::1"+"]:"+strconv.Itoa(portOf(t, l.Addr())) {
			http.Error(w, "bad Host "+r.Host, http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, keyAuth)
	}))
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	v := newValidator(t, challenge.Config{HTTPPort: portOf(t, l.Addr()), AllowLoopback: true})
	checkProblem(t, v.HTTP01(t.Context(), challenge.Identifier{Type: "ip", Value: "::1"}, token, keyAuth), "")
}

// TestHTTP01Resolver resolves the identifier through Config.Resolver, and
// falls back from an IPv6 address nothing listens on to IPv4.
func TestHTTP01Resolver(t *testing.T) {
	a := newApplicant(t)
	dns := challengetest.NewDNSServer(t)
	dns.SetAddrs("web.example.test", loopback4)
	dns.SetAddrs("dual.example.test", netip.MustParseAddr("::1"), loopback4)
	dns.SetCNAME("www.example.test", "web.example.test")
	v := newValidator(t, challenge.Config{HTTPPort: a.httpPort, Resolver: dns.Addr(), AllowLoopback: true, Timeout: 5 * time.Second})
	for _, tc := range []struct {
		name, host, want string
	}{
		{"A record", "web.example.test", ""},
		{"CNAME", "www.example.test", ""},
		{"IPv6 first, then IPv4", "dual.example.test", ""},
		{"NXDOMAIN", "nowhere.example.test", challenge.ProblemDNS},
		{"NODATA", "example.test", challenge.ProblemDNS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkProblem(t, v.HTTP01(t.Context(), challenge.Identifier{Type: "dns", Value: tc.host}, token, keyAuth), tc.want)
		})
	}
}

// TestHTTP01SystemResolver resolves "localhost" through /etc/hosts, as the
// default configuration does. (Nothing here may reach the machine's DNS
// servers, so no failing lookup is tried.)
func TestHTTP01SystemResolver(t *testing.T) {
	a := newApplicant(t)
	v := newValidator(t, challenge.Config{HTTPPort: a.httpPort, AllowLoopback: true})
	checkProblem(t, v.HTTP01(t.Context(), challenge.Identifier{Type: "dns", Value: "localhost"}, token, keyAuth), "")
}
