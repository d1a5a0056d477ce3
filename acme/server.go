package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/sigil-pki/sigil/acme/challenge"
	"github.com/sigil-pki/sigil/acme/jws"
	"github.com/sigil-pki/sigil/storage"
)

// Lifetimes of ACME objects.
const (
	nonceTTL       = time.Hour
	orderTTL       = 24 * time.Hour
	pendingAuthTTL = 24 * time.Hour
	validAuthTTL   = 30 * 24 * time.Hour
	// DefaultCertTTL is the certificate lifetime when Config names none.
	DefaultCertTTL = 24 * time.Hour
	// DefaultValidationWait is how long a challenge request waits for
	// its validation when Config names no wait.
	DefaultValidationWait = 2 * time.Second
	maxBody               = 64 << 10
	maxIdentifiers        = 100
)

// Store is the storage the server needs (storage.DB implements it).
type Store interface {
	PutACMEAccount(ctx context.Context, d storage.ACMEDoc, thumbprint string, expectRevision int64) error
	GetACMEAccount(ctx context.Context, id string) (storage.ACMEDoc, error)
	GetACMEAccountByThumbprint(ctx context.Context, thumbprint string) (storage.ACMEDoc, error)
	SetACMEAccountThumbprint(ctx context.Context, id, thumbprint string) error
	PutACMEOrder(ctx context.Context, d storage.ACMEDoc, accountID string, expectRevision int64) error
	GetACMEOrder(ctx context.Context, id string) (storage.ACMEDoc, error)
	ListACMEOrders(ctx context.Context, accountID, after string, limit int) ([]storage.ACMEDoc, error)
	PutACMEAuthz(ctx context.Context, d storage.ACMEDoc, accountID, identifier string, expiresAt time.Time, expectRevision int64) error
	GetACMEAuthz(ctx context.Context, id string) (storage.ACMEDoc, error)
	FindACMEAuthzs(ctx context.Context, accountID, identifier string, now time.Time) ([]storage.ACMEDoc, error)
}

// Issuer is the certificate authority.
type Issuer interface {
	// IssueACME signs a TLS server certificate for the CSR's key naming
	// exactly dns and ips, records and logs it (actor: the account URL),
	// and returns the leaf and its chain up to, not including, the root.
	// A non-empty spiffeID asks for the x509-svid profile: that ID as the
	// URI SAN alongside the DNS names.
	IssueACME(ctx context.Context, csr *x509.CertificateRequest, dns []string, ips []net.IP, spiffeID string, ttl time.Duration, account string) (*x509.Certificate, []*x509.Certificate, error)
	// Certificate returns an issued certificate and its chain.
	Certificate(ctx context.Context, serial string) (*x509.Certificate, []*x509.Certificate, error)
	// AlternateChains returns other chains for a certificate whose chain
	// is chain (to other trust anchors: cross-certificates).
	AlternateChains(chain []*x509.Certificate) [][]*x509.Certificate
	// Revoke revokes a certificate with an RFC 5280 reason; an already
	// revoked one is storage.ErrConflict.
	Revoke(ctx context.Context, serial string, reason int) error
	// Revoked reports whether the certificate is revoked.
	Revoked(ctx context.Context, serial string) bool
}

// Validator checks challenges (acme/challenge implements it).
type Validator interface {
	HTTP01(ctx context.Context, id challenge.Identifier, token, keyAuthorization string) *challenge.Problem
	DNS01(ctx context.Context, id challenge.Identifier, keyAuthorization string) *challenge.Problem
	TLSALPN01(ctx context.Context, id challenge.Identifier, keyAuthorization string) *challenge.Problem
}

// Config configures a Server.
type Config struct {
	Store     Store
	Issuer    Issuer
	Validator Validator
	// BaseURL is the scheme, host and port clients reach the server at,
	// e.g. https://ca.example.com:8443; the directory is BaseURL/acme/directory.
	BaseURL string
	// Domains are the DNS suffixes identifiers must fall under.
	Domains []string
	// IPRanges are the prefixes IP identifiers (RFC 8738) must fall in;
	// none means IP identifiers are refused.
	IPRanges []netip.Prefix
	// CertTTL is the certificates' lifetime. Default DefaultCertTTL.
	CertTTL time.Duration
	// Workers bounds concurrent challenge validations. Default 8.
	Workers int
	// ValidationWait is how long a challenge request waits for its
	// validation (which runs on a worker) before answering "processing"
	// with Retry-After; a quick validation is answered with its outcome
	// at once, so clients need not poll. Default 2 s; negative: no wait.
	ValidationWait time.Duration
	TermsOfService string
	Website        string
	// OrdersPerAccount and OrdersPerIdentifier cap new orders per hour
	// (0: no cap); past a cap newOrder answers rateLimited with
	// Retry-After.
	OrdersPerAccount    int
	OrdersPerIdentifier int
	// EABRequired refuses new accounts without an external account
	// binding; EABKey looks up a binding key's MAC key (nil: no EAB).
	EABRequired bool
	EABKey      jws.MACKeyFunc
	// EABBinding returns what an EAB key binds its accounts to.
	EABBinding func(ctx context.Context, keyID string) (EABBinding, error)
	Clock      func() time.Time
	Logger     *slog.Logger
}

// EABBinding is what an external account binding key binds the accounts
// made with it to.
type EABBinding struct {
	// SPIFFEID, when set, lets the accounts order the x509-svid profile
	// carrying it.
	SPIFFEID string
	// Domains, when set, are the only DNS names (each domain and every
	// name under it) the accounts may order; IP identifiers are refused.
	Domains []string
}

// Server serves ACME under /acme/.
type Server struct {
	cfg    Config
	now    func() time.Time
	log    *slog.Logger
	verify *jws.Verifier
	jobs   chan func()
	done   chan struct{}
	closed sync.Once

	perAccount, perIdentifier *limiter
	nonces                    *nonceStore
	accounts                  accountCache
}

// New returns a Server; Close stops its validation workers.
func New(cfg Config) *Server {
	if cfg.CertTTL <= 0 {
		cfg.CertTTL = DefaultCertTTL
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.ValidationWait == 0 {
		cfg.ValidationWait = DefaultValidationWait
	}
	s := &Server{cfg: cfg, now: cfg.Clock, log: cfg.Logger, jobs: make(chan func(), 1024), done: make(chan struct{}),
		perAccount: newLimiter(cfg.OrdersPerAccount, time.Hour), perIdentifier: newLimiter(cfg.OrdersPerIdentifier, time.Hour),
		nonces: newNonceStore()}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.verify = &jws.Verifier{Accounts: accountKeys{s}, Nonces: nonces{s}}
	for range cfg.Workers {
		go func() {
			for {
				select {
				case <-s.done:
					return
				case job := <-s.jobs:
					job()
				}
			}
		}()
	}
	return s
}

// Close stops the validation workers; it may be called more than once.
func (s *Server) Close() { s.closed.Do(func() { close(s.done) }) }

func (s *Server) url(path string) string { return s.cfg.BaseURL + "/acme/" + path }

// accountURL is the kid of an account.
func (s *Server) accountURL(id string) string { return s.url("account/" + id) }

// Handler returns the ACME endpoints, to be mounted at /acme/.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /acme/directory", s.handleDirectory)
	mux.HandleFunc("HEAD /acme/new-nonce", s.handleNonce)
	mux.HandleFunc("GET /acme/new-nonce", s.handleNonce)
	mux.HandleFunc("POST /acme/new-account", s.post(true, s.handleNewAccount))
	mux.HandleFunc("POST /acme/account/{id}", s.post(false, s.handleAccount))
	mux.HandleFunc("POST /acme/account/{id}/orders", s.post(false, s.handleOrders))
	mux.HandleFunc("POST /acme/new-order", s.post(false, s.handleNewOrder))
	mux.HandleFunc("POST /acme/order/{id}", s.post(false, s.handleOrder))
	mux.HandleFunc("POST /acme/order/{id}/finalize", s.post(false, s.handleFinalize))
	mux.HandleFunc("POST /acme/authz/{id}", s.post(false, s.handleAuthz))
	mux.HandleFunc("POST /acme/chall/{authz}/{idx}", s.post(false, s.handleChallenge))
	mux.HandleFunc("POST /acme/cert/{serial}", s.post(false, s.handleCert))
	mux.HandleFunc("POST /acme/cert/{serial}/{alt}", s.post(false, s.handleCert))
	mux.HandleFunc("POST /acme/revoke-cert", s.postAny(s.handleRevoke))
	mux.HandleFunc("POST /acme/key-change", s.post(false, s.handleKeyChange))
	mux.HandleFunc("GET /acme/renewal-info/{id}", s.handleRenewalInfo)
	mux.HandleFunc("/acme/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, malformed("no ACME resource %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func (s *Server) handleDirectory(w http.ResponseWriter, r *http.Request) {
	meta := map[string]any{"externalAccountRequired": s.cfg.EABRequired, "profiles": map[string]string{
		profileTLSServer: "a TLS server certificate for the order's DNS names and IP addresses (the default)",
		profileSVID:      "an X.509-SVID: the SPIFFE ID the account's external account binding names, with the order's DNS names",
	}}
	if s.cfg.TermsOfService != "" {
		meta["termsOfService"] = s.cfg.TermsOfService
	}
	if s.cfg.Website != "" {
		meta["website"] = s.cfg.Website
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"newNonce": s.url("new-nonce"), "newAccount": s.url("new-account"), "newOrder": s.url("new-order"),
		"revokeCert": s.url("revoke-cert"), "keyChange": s.url("key-change"), "renewalInfo": s.url("renewal-info"), "meta": meta,
	})
}

// addNonce puts a fresh nonce in Replay-Nonce.
func (s *Server) addNonce(w http.ResponseWriter, r *http.Request) {
	n := newID()
	now := s.now()
	s.nonces.put(n, now.Add(nonceTTL), now)
	w.Header().Set("Replay-Nonce", n)
}

func (s *Server) handleNonce(w http.ResponseWriter, r *http.Request) {
	s.addNonce(w, r)
	w.Header().Set("Cache-Control", "no-store")
	if r.Method == http.MethodGet {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// fail answers a problem with a fresh nonce, so clients can retry.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, p *Problem) {
	s.addNonce(w, r)
	w.Header().Add("Link", `<`+s.url("directory")+`>;rel="index"`)
	writeProblem(w, p)
}

// failErr answers err as its problem; internal causes are logged only.
func (s *Server) failErr(w http.ResponseWriter, r *http.Request, err error) {
	p, known := asProblem(err)
	if !known {
		s.log.Error("ACME request failed", "path", r.URL.Path, "err", err)
	}
	s.fail(w, r, p)
}

// handler is an authenticated POST handler.
type handler func(w http.ResponseWriter, r *http.Request, req *jws.Request, acct *storage.ACMEDoc) error

// post authenticates a POST: with a jwk (newAccount) or a kid of a valid
// account.
func (s *Server) post(expectJWK bool, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var loaded storage.ACMEDoc
		r = r.WithContext(context.WithValue(r.Context(), loadedKey{}, &loaded))
		req, err := s.readJWS(r, expectJWK)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		var acct *storage.ACMEDoc
		if !expectJWK {
			if loaded.ID == "" {
				a, err := s.accountFromKID(r.Context(), req.KeyID)
				if err != nil {
					s.failErr(w, r, err)
					return
				}
				loaded = a.doc
			}
			acct = &loaded
		}
		s.answer(w, r, h(w, r, req, acct))
	}
}

// postAny authenticates a POST signed with either a jwk or a kid.
func (s *Server) postAny(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := readBody(r)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		req, err := s.verify.Verify(r.Context(), body, s.cfg.BaseURL+r.URL.RequestURI(), jws.KIDOrJWK)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		var acct *storage.ACMEDoc
		if req.KeyID != "" {
			a, err := s.accountFromKID(r.Context(), req.KeyID)
			if err != nil {
				s.failErr(w, r, err)
				return
			}
			acct = &a.doc
		}
		s.answer(w, r, h(w, r, req, acct))
	}
}

func (s *Server) answer(w http.ResponseWriter, r *http.Request, err error) {
	if err != nil {
		s.failErr(w, r, err)
	}
}

func readBody(r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/jose+json") {
		p := malformed("Content-Type must be application/jose+json, not %q", ct)
		p.Status = http.StatusUnsupportedMediaType
		return nil, p
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, malformed("reading the request body: %v", err)
	}
	if len(b) > maxBody {
		return nil, malformed("request body over %d bytes", maxBody)
	}
	return b, nil
}

func (s *Server) readJWS(r *http.Request, expectJWK bool) (*jws.Request, error) {
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	mode := jws.KID
	if expectJWK {
		mode = jws.JWK
	}
	return s.verify.Verify(r.Context(), body, s.cfg.BaseURL+r.URL.RequestURI(), mode)
}

// accountKeys is the jws lookup of an account's key by its URL.
type accountKeys struct{ s *Server }

// loadedKey carries the account the key lookup read to the handler, so a
// request reads its account once.
type loadedKey struct{}

func (k accountKeys) AccountKey(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	a, err := k.s.accountFromKID(ctx, kid)
	if slot, ok := ctx.Value(loadedKey{}).(*storage.ACMEDoc); ok && err == nil {
		*slot = a.doc
	}
	if p, ok := err.(*Problem); ok {
		if p.Type == errNS+"accountDoesNotExist" {
			return nil, fmt.Errorf("%s: %w", p.Detail, jws.ErrNotFound)
		}
		return nil, &jws.Problem{Type: strings.TrimPrefix(p.Type, errNS), Detail: p.Detail, Status: p.Status}
	}
	if err != nil {
		return nil, err
	}
	return a.key, nil
}

// nonces is the jws nonce store over storage.
type nonces struct{ s *Server }

func (n nonces) Consume(_ context.Context, nonce string) (bool, error) {
	return n.s.nonces.consume(nonce, n.s.now()), nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// reply answers a resource with a fresh nonce and the index link.
func (s *Server) reply(w http.ResponseWriter, r *http.Request, code int, v any) error {
	s.addNonce(w, r)
	w.Header().Add("Link", `<`+s.url("directory")+`>;rel="index"`)
	writeJSON(w, code, v)
	return nil
}

func (s *Server) accountJSON(id string, a account) map[string]any {
	return map[string]any{"status": a.Status, "contact": a.Contact, "orders": s.url("account/" + id + "/orders"),
		"termsOfServiceAgreed": a.TermsAgreed, "key": a.Key}
}

func (s *Server) handleNewAccount(w http.ResponseWriter, r *http.Request, req *jws.Request, _ *storage.ACMEDoc) error {
	var in struct {
		Contact            []string        `json:"contact"`
		TermsAgreed        bool            `json:"termsOfServiceAgreed"`
		OnlyReturnExisting bool            `json:"onlyReturnExisting"`
		EAB                json.RawMessage `json:"externalAccountBinding"`
	}
	if err := req.Decode(&in); err != nil {
		return err
	}
	existing, err := s.cfg.Store.GetACMEAccountByThumbprint(r.Context(), req.Thumbprint)
	if err == nil {
		var a account
		if err := json.Unmarshal([]byte(existing.Data), &a); err != nil {
			return err
		}
		w.Header().Set("Location", s.accountURL(existing.ID))
		return s.reply(w, r, http.StatusOK, s.accountJSON(existing.ID, a))
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if in.OnlyReturnExisting {
		return accountDoesNotExist("no account for this key")
	}
	for _, c := range in.Contact {
		if !strings.HasPrefix(c, "mailto:") || strings.ContainsAny(c, ",\r\n") {
			return problem(http.StatusBadRequest, "invalidContact", "contact %q is not a mailto: URL", c)
		}
	}
	var eabKeyID string
	switch {
	case len(in.EAB) > 0 && s.cfg.EABKey != nil:
		if eabKeyID, err = jws.VerifyEAB(r.Context(), req, in.EAB, s.cfg.EABKey); err != nil {
			return err
		}
	case s.cfg.EABRequired:
		return problem(http.StatusUnauthorized, "externalAccountRequired", "this server requires an external account binding (ask the operator for a key made with 'sigil acme eab create')")
	}
	keyJSON, err := req.Key.MarshalJSON()
	if err != nil {
		return malformed("the account key cannot be encoded: %v", err)
	}
	a := account{Status: statusValid, Contact: in.Contact, Key: keyJSON, CreatedAt: s.now().UTC(), TermsAgreed: in.TermsAgreed, EABKeyID: eabKeyID}
	data, _ := json.Marshal(a)
	id := newID()
	if err := s.cfg.Store.PutACMEAccount(r.Context(), storage.ACMEDoc{ID: id, Data: string(data)}, req.Thumbprint, 0); err != nil {
		return err
	}
	w.Header().Set("Location", s.accountURL(id))
	return s.reply(w, r, http.StatusCreated, s.accountJSON(id, a))
}

func (s *Server) handleAccount(w http.ResponseWriter, r *http.Request, req *jws.Request, doc *storage.ACMEDoc) error {
	if r.PathValue("id") != doc.ID {
		return unauthorized("the request is signed by another account")
	}
	var a account
	if err := json.Unmarshal([]byte(doc.Data), &a); err != nil {
		return err
	}
	if !req.IsPostAsGet() {
		var in struct {
			Contact *[]string `json:"contact"`
			Status  string    `json:"status"`
		}
		if err := req.Decode(&in); err != nil {
			return err
		}
		if in.Contact != nil {
			a.Contact = *in.Contact
		}
		switch in.Status {
		case "":
		case statusDeactivated:
			a.Status = statusDeactivated
		default:
			return malformed("status may only be set to deactivated")
		}
		data, _ := json.Marshal(a)
		err := s.cfg.Store.PutACMEAccount(r.Context(), storage.ACMEDoc{ID: doc.ID, Data: string(data)}, "", doc.Revision)
		s.accounts.forget(doc.ID)
		if err != nil {
			return err
		}
	}
	return s.reply(w, r, http.StatusOK, s.accountJSON(doc.ID, a))
}

// ordersPage is how many stored orders one page of an orders list reads.
const ordersPage = 100

// handleOrders lists the account's orders (RFC 8555 §7.1.2.1) that are
// not invalid and have not expired, a page at a time; a full page links
// to the next with rel="next".
func (s *Server) handleOrders(w http.ResponseWriter, r *http.Request, req *jws.Request, acct *storage.ACMEDoc) error {
	if r.PathValue("id") != acct.ID {
		return unauthorized("the request is signed by another account")
	}
	if !req.IsPostAsGet() {
		return malformed("an orders list is read with POST-as-GET")
	}
	docs, err := s.cfg.Store.ListACMEOrders(r.Context(), acct.ID, r.URL.Query().Get("cursor"), ordersPage)
	if err != nil {
		return err
	}
	now := s.now()
	urls := []string{}
	for _, d := range docs {
		var o order
		if json.Unmarshal([]byte(d.Data), &o) == nil && o.Status != statusInvalid && now.Before(o.Expires) {
			urls = append(urls, s.url("order/"+d.ID))
		}
	}
	if len(docs) == ordersPage {
		next := s.url("account/"+acct.ID+"/orders") + "?cursor=" + url.QueryEscape(docs[len(docs)-1].ID)
		w.Header().Add("Link", `<`+next+`>;rel="next"`)
	}
	return s.reply(w, r, http.StatusOK, map[string]any{"orders": urls})
}

// Certificate profiles (the directory's meta.profiles).
const (
	profileTLSServer = "tls-server"
	profileSVID      = "x509-svid"
)

// binding returns what the account's EAB key binds it to; an account
// made without EAB is bound to nothing.
func (s *Server) binding(ctx context.Context, acct *storage.ACMEDoc) (EABBinding, error) {
	var a account
	if err := json.Unmarshal([]byte(acct.Data), &a); err != nil {
		return EABBinding{}, err
	}
	if a.EABKeyID == "" || s.cfg.EABBinding == nil {
		return EABBinding{}, nil
	}
	return s.cfg.EABBinding(ctx, a.EABKeyID)
}

// orderSPIFFEID returns the SPIFFE ID an x509-svid order may carry: the
// one the account's EAB key binds, or an error.
func (s *Server) orderSPIFFEID(ctx context.Context, acct *storage.ACMEDoc) (string, error) {
	b, err := s.binding(ctx, acct)
	if err != nil {
		return "", err
	}
	if b.SPIFFEID == "" {
		return "", unauthorized("the x509-svid profile is for accounts bound to a SPIFFE ID by their external account binding")
	}
	return b.SPIFFEID, nil
}

// checkBoundDomains refuses identifiers outside the domains the
// account's EAB key allows, with a subproblem for each.
func (s *Server) checkBoundDomains(ctx context.Context, acct *storage.ACMEDoc, ids []ID) error {
	b, err := s.binding(ctx, acct)
	if err != nil || len(b.Domains) == 0 {
		return err
	}
	var sub []Problem
	for _, id := range ids {
		name := strings.TrimPrefix(id.Value, "*.")
		if id.Type == "dns" && slices.ContainsFunc(b.Domains, func(d string) bool { return name == d || strings.HasSuffix(name, "."+d) }) {
			continue
		}
		sub = append(sub, Problem{Type: errNS + "rejectedIdentifier", Status: http.StatusForbidden, Identifier: &ID{Type: id.Type, Value: id.Value},
			Detail: fmt.Sprintf("this account's external account binding allows only %s", strings.Join(b.Domains, ", "))})
	}
	if len(sub) == 0 {
		return nil
	}
	return withSubproblems(sub, fmt.Sprintf("%d identifiers are outside the domains this account's external account binding allows (%s)", len(sub), strings.Join(b.Domains, ", ")))
}

// withSubproblems is the problem for refused identifiers: the first
// refusal's type and detail (many's detail when there are several),
// with subproblems saying which identifier each is about (RFC 8555
// §6.7.1).
func withSubproblems(sub []Problem, many string) *Problem {
	top := sub[0]
	top.Identifier = nil
	if len(sub) > 1 {
		top.Detail = many
	}
	top.Subproblems = sub
	return &top
}

// ValidDNSName reports whether name is a lowercase DNS name of letters,
// digits and hyphens, not an IP address.
func ValidDNSName(name string) bool {
	if name == "" || len(name) > 253 || net.ParseIP(name) != nil {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' ||
			strings.IndexFunc(label, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') }) >= 0 {
			return false
		}
	}
	return true
}

// checkIdentifier applies the identifier policy.
func (s *Server) checkIdentifier(id ID) error {
	if id.Type == "ip" {
		ip, err := netip.ParseAddr(id.Value)
		if err != nil || ip.Zone() != "" || ip.String() != id.Value {
			return malformed("%q is not an IP address in its canonical form", id.Value)
		}
		for _, p := range s.cfg.IPRanges {
			if p.Contains(ip) {
				return nil
			}
		}
		return rejectedIdentifier("%s is outside the IP ranges this server issues for", id.Value)
	}
	if id.Type != "dns" {
		return unsupportedIdentifier("identifier type %q is not supported", id.Type)
	}
	name := strings.TrimPrefix(id.Value, "*.")
	if !ValidDNSName(name) {
		return rejectedIdentifier("%q is not a lowercase DNS name", id.Value)
	}
	for _, d := range s.cfg.Domains {
		if name == d || strings.HasSuffix(name, "."+d) {
			return nil
		}
	}
	return rejectedIdentifier("%q is outside the domains this server issues for (%s)", id.Value, strings.Join(s.cfg.Domains, ", "))
}

func (s *Server) orderJSON(id string, o order) map[string]any {
	m := map[string]any{"status": o.Status, "expires": o.Expires.Format(time.RFC3339), "identifiers": o.Identifiers,
		"finalize": s.url("order/" + id + "/finalize")}
	if o.Profile != "" {
		m["profile"] = o.Profile
	}
	if o.Replaces != "" {
		m["replaces"] = o.Replaces
	}
	var authzs []string
	for _, a := range o.Authzs {
		authzs = append(authzs, s.url("authz/"+a))
	}
	m["authorizations"] = authzs
	if o.Error != nil {
		m["error"] = o.Error
	}
	if o.CertSerial != "" {
		m["certificate"] = s.url("cert/" + o.CertSerial)
	}
	return m
}

func (s *Server) handleNewOrder(w http.ResponseWriter, r *http.Request, req *jws.Request, acct *storage.ACMEDoc) error {
	var in struct {
		Identifiers []ID   `json:"identifiers"`
		NotBefore   string `json:"notBefore"`
		NotAfter    string `json:"notAfter"`
		Profile     string `json:"profile"`
		Replaces    string `json:"replaces"`
	}
	if err := req.Decode(&in); err != nil {
		return err
	}
	if len(in.Identifiers) == 0 || len(in.Identifiers) > maxIdentifiers {
		return malformed("an order names 1 to %d identifiers", maxIdentifiers)
	}
	if in.NotBefore != "" || in.NotAfter != "" {
		return malformed("notBefore and notAfter are not supported; certificates last %v", s.cfg.CertTTL)
	}
	var sub []Problem
	seen := map[string]bool{}
	var ids []ID
	for _, id := range in.Identifiers {
		id.Value = strings.TrimSuffix(id.Value, ".")
		if err := s.checkIdentifier(id); err != nil {
			p, _ := asProblem(err)
			p.Identifier = &ID{Type: id.Type, Value: id.Value}
			sub = append(sub, *p)
			continue
		}
		if !seen[id.key()] {
			seen[id.key()] = true
			ids = append(ids, id)
		}
	}
	if len(sub) > 0 {
		return withSubproblems(sub, fmt.Sprintf("%d identifiers are refused", len(sub)))
	}
	ctx := r.Context()
	if err := s.checkBoundDomains(ctx, acct, ids); err != nil {
		return err
	}
	switch in.Profile {
	case "", profileTLSServer:
		in.Profile = profileTLSServer
	case profileSVID:
		if _, err := s.orderSPIFFEID(ctx, acct); err != nil {
			return err
		}
		for _, id := range ids {
			if id.Type != "dns" || strings.HasPrefix(id.Value, "*.") {
				return rejectedIdentifier("an x509-svid carries DNS names only, without wildcards (%s)", id.Value)
			}
		}
	default:
		return problem(http.StatusBadRequest, "invalidProfile", "no profile %q; this server offers %s and %s", in.Profile, profileTLSServer, profileSVID)
	}
	if in.Replaces != "" {
		if err := s.checkReplaces(ctx, acct.ID, in.Replaces, ids); err != nil {
			return err
		}
	}
	now := s.now().UTC()
	if ok, wait := s.perAccount.take(acct.ID, now); !ok {
		retryAfter(w, wait)
		return rateLimited("new orders for this account")
	}
	for _, id := range ids {
		if ok, wait := s.perIdentifier.take(id.key(), now); !ok {
			retryAfter(w, wait)
			p := rateLimited("new orders for " + id.Value)
			p.Subproblems = []Problem{{Type: p.Type, Detail: p.Detail, Status: p.Status, Identifier: &ID{Type: id.Type, Value: id.Value}}}
			return p
		}
	}
	o := order{AccountID: acct.ID, Status: statusPending, Identifiers: ids, Expires: now.Add(orderTTL), Profile: in.Profile, Replaces: in.Replaces}
	ready := true
	for _, id := range ids {
		azID, status, err := s.authzFor(ctx, acct.ID, id, now)
		if err != nil {
			return err
		}
		o.Authzs = append(o.Authzs, azID)
		ready = ready && status == statusValid
	}
	if ready {
		o.Status = statusReady
	}
	data, _ := json.Marshal(o)
	id := newID()
	if err := s.cfg.Store.PutACMEOrder(ctx, storage.ACMEDoc{ID: id, Data: string(data)}, acct.ID, 0); err != nil {
		return err
	}
	w.Header().Set("Location", s.url("order/"+id))
	return s.reply(w, r, http.StatusCreated, s.orderJSON(id, o))
}

// checkReplaces checks a new order's "replaces" (RFC 9773 §5): the
// certificate exists, the account may act on it, and it shares an
// identifier with the order.
func (s *Server) checkReplaces(ctx context.Context, accountID, certID string, ids []ID) error {
	old, err := s.certByARIID(ctx, certID)
	if err != nil {
		if p, ok := asProblem(err); ok && p.Status == http.StatusNotFound {
			return malformed("replaces names no certificate of this server")
		}
		return err
	}
	if err := s.authorizedFor(ctx, accountID, old); err != nil {
		return unauthorized("replaces names a certificate this account holds no authorizations for")
	}
	for _, id := range certIDs(old) {
		if slices.ContainsFunc(ids, func(o ID) bool { return o.key() == id.key() }) {
			return nil
		}
	}
	return malformed("replaces names a certificate that shares no identifier with the order")
}

// authzFor reuses the account's valid authorization for id or makes a
// pending one.
func (s *Server) authzFor(ctx context.Context, accountID string, id ID, now time.Time) (azID, status string, err error) {
	docs, err := s.cfg.Store.FindACMEAuthzs(ctx, accountID, id.key(), now)
	if err != nil {
		return "", "", err
	}
	for _, d := range slices.Backward(docs) {
		var az authz
		if json.Unmarshal([]byte(d.Data), &az) == nil && (az.Status == statusValid || az.Status == statusPending) {
			return d.ID, az.Status, nil
		}
	}
	az := authz{AccountID: accountID, Identifier: id, Status: statusPending, Expires: now.Add(pendingAuthTTL)}
	if strings.HasPrefix(id.Value, "*.") {
		az.Wildcard = true
		az.Identifier.Value = strings.TrimPrefix(id.Value, "*.")
		az.Challenges = []chall{{Type: "dns-01", Token: newToken(), Status: statusPending}}
	} else {
		types := []string{"http-01", "dns-01", "tls-alpn-01"}
		if id.Type == "ip" {
			types = []string{"http-01", "tls-alpn-01"} // RFC 8738 §7: no dns-01
		}
		for _, t := range types {
			az.Challenges = append(az.Challenges, chall{Type: t, Token: newToken(), Status: statusPending})
		}
	}
	data, _ := json.Marshal(az)
	azID = newID()
	if err := s.cfg.Store.PutACMEAuthz(ctx, storage.ACMEDoc{ID: azID, Data: string(data)}, accountID, id.key(), az.Expires, 0); err != nil {
		return "", "", err
	}
	return azID, statusPending, nil
}

// loadDoc reads a stored ACME object and decodes it.
func loadDoc[T any](ctx context.Context, get func(context.Context, string) (storage.ACMEDoc, error), id, what string) (storage.ACMEDoc, T, error) {
	var v T
	d, err := get(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return d, v, notFound(what)
	}
	if err != nil {
		return d, v, err
	}
	if err := json.Unmarshal([]byte(d.Data), &v); err != nil {
		return d, v, fmt.Errorf("decoding %s %s: %w", what, id, err)
	}
	return d, v, nil
}

func (s *Server) loadAuthz(ctx context.Context, id string) (storage.ACMEDoc, authz, error) {
	d, az, err := loadDoc[authz](ctx, s.cfg.Store.GetACMEAuthz, id, "authorization")
	if err != nil {
		return d, az, err
	}
	if az.Status == statusPending && !s.now().Before(az.Expires) {
		az.Status = statusExpired
	}
	return d, az, nil
}

// refreshOrder derives a pending order's status from its authorizations:
// ready when all are valid, invalid when one is invalid or expired.
func (s *Server) refreshOrder(ctx context.Context, o *order) error {
	if o.Status == statusPending && !s.now().Before(o.Expires) {
		o.Status = statusInvalid
		o.Error = problem(http.StatusForbidden, "unauthorized", "the order expired")
		return nil
	}
	if o.Status != statusPending {
		return nil
	}
	all := true
	for _, id := range o.Authzs {
		_, az, err := s.loadAuthz(ctx, id)
		if err != nil {
			return err
		}
		switch az.Status {
		case statusValid:
		case statusPending:
			all = false
		default:
			o.Status = statusInvalid
			o.Error = problem(http.StatusForbidden, "unauthorized", "authorization for %s is %s", az.Identifier.Value, az.Status)
			return nil
		}
	}
	if all {
		o.Status = statusReady
	}
	return nil
}

func (s *Server) loadOrder(ctx context.Context, id string, acct *storage.ACMEDoc) (storage.ACMEDoc, order, error) {
	d, o, err := loadDoc[order](ctx, s.cfg.Store.GetACMEOrder, id, "order")
	if err != nil {
		return d, o, err
	}
	if o.AccountID != acct.ID {
		return d, order{}, unauthorized("the order belongs to another account")
	}
	before := o.Status
	if err := s.refreshOrder(ctx, &o); err != nil {
		return d, order{}, err
	}
	if o.Status != before {
		data, _ := json.Marshal(o)
		if err := s.cfg.Store.PutACMEOrder(ctx, storage.ACMEDoc{ID: id, Data: string(data)}, acct.ID, d.Revision); err != nil && !errors.Is(err, storage.ErrConflict) {
			return d, order{}, err
		}
		d.Revision++
	}
	return d, o, nil
}

func (s *Server) handleOrder(w http.ResponseWriter, r *http.Request, req *jws.Request, acct *storage.ACMEDoc) error {
	if !req.IsPostAsGet() {
		return malformed("an order is read with POST-as-GET (an empty payload)")
	}
	id := r.PathValue("id")
	_, o, err := s.loadOrder(r.Context(), id, acct)
	if err != nil {
		return err
	}
	if o.Status == statusProcessing {
		w.Header().Set("Retry-After", "1")
	}
	return s.reply(w, r, http.StatusOK, s.orderJSON(id, o))
}

func (s *Server) challengeJSON(azID string, idx int, c chall) map[string]any {
	m := map[string]any{"type": c.Type, "url": s.url("chall/" + azID + "/" + strconv.Itoa(idx)), "token": c.Token, "status": c.Status}
	if !c.Validated.IsZero() {
		m["validated"] = c.Validated.Format(time.RFC3339)
	}
	if c.Error != nil {
		m["error"] = c.Error
	}
	return m
}

func (s *Server) authzJSON(id string, az authz) map[string]any {
	chs := make([]map[string]any, 0, len(az.Challenges))
	for i, c := range az.Challenges {
		chs = append(chs, s.challengeJSON(id, i, c))
	}
	m := map[string]any{"identifier": az.Identifier, "status": az.Status, "expires": az.Expires.Format(time.RFC3339), "challenges": chs}
	if az.Wildcard {
		m["wildcard"] = true
	}
	return m
}

func (s *Server) handleAuthz(w http.ResponseWriter, r *http.Request, req *jws.Request, acct *storage.ACMEDoc) error {
	id := r.PathValue("id")
	d, az, err := s.loadAuthz(r.Context(), id)
	if err != nil {
		return err
	}
	if az.AccountID != acct.ID {
		return unauthorized("the authorization belongs to another account")
	}
	if !req.IsPostAsGet() {
		var in struct {
			Status string `json:"status"`
		}
		if err := req.Decode(&in); err != nil {
			return err
		}
		if in.Status != statusDeactivated {
			return malformed("an authorization may only be deactivated")
		}
		az.Status = statusDeactivated
		data, _ := json.Marshal(az)
		if err := s.cfg.Store.PutACMEAuthz(r.Context(), storage.ACMEDoc{ID: id, Data: string(data)}, acct.ID, az.Identifier.key(), az.Expires, d.Revision); err != nil {
			return err
		}
	}
	return s.reply(w, r, http.StatusOK, s.authzJSON(id, az))
}

func (s *Server) handleChallenge(w http.ResponseWriter, r *http.Request, req *jws.Request, acct *storage.ACMEDoc) error {
	azID := r.PathValue("authz")
	idx, err := strconv.Atoi(r.PathValue("idx"))
	d, az, lerr := s.loadAuthz(r.Context(), azID)
	if lerr != nil {
		return lerr
	}
	if err != nil || idx < 0 || idx >= len(az.Challenges) {
		return notFound("challenge")
	}
	if az.AccountID != acct.ID {
		return unauthorized("the challenge belongs to another account")
	}
	c := &az.Challenges[idx]
	w.Header().Set("Link", `<`+s.url("authz/"+azID)+`>;rel="up"`)
	if req.IsPostAsGet() || c.Status != statusPending || az.Status != statusPending {
		if c.Status == statusProcessing {
			w.Header().Set("Retry-After", "1")
		}
		return s.reply(w, r, http.StatusOK, s.challengeJSON(azID, idx, *c))
	}
	keyAuth, err := jws.KeyAuthorization(c.Token, req.Key)
	if err != nil {
		return err
	}
	c.Status = statusProcessing
	data, _ := json.Marshal(az)
	if err := s.cfg.Store.PutACMEAuthz(r.Context(), storage.ACMEDoc{ID: azID, Data: string(data)}, acct.ID, az.Identifier.key(), az.Expires, d.Revision); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return s.reply(w, r, http.StatusOK, s.challengeJSON(azID, idx, *c))
		}
		return err
	}
	done := make(chan struct{})
	var (
		outcome  chall
		recorded bool
	)
	// The worker gets its own copy: the handler keeps reading c.
	mine := az
	mine.Challenges = slices.Clone(az.Challenges)
	job := func() {
		defer close(done)
		outcome, recorded = s.validate(azID, d.Revision+1, mine, idx, keyAuth)
	}
	select {
	case s.jobs <- job:
	default:
		go job() // the queue is full: do not lose the validation
	}
	if s.cfg.ValidationWait > 0 {
		t := time.NewTimer(s.cfg.ValidationWait)
		select {
		case <-done:
			if recorded {
				*c = outcome
			}
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
	}
	if c.Status == statusProcessing {
		w.Header().Set("Retry-After", "1")
	}
	return s.reply(w, r, http.StatusOK, s.challengeJSON(azID, idx, *c))
}

// validate runs one challenge and records the outcome in its
// authorization.
func (s *Server) validate(azID string, rev int64, az authz, idx int, keyAuth string) (recorded chall, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := storage.ACMEDoc{ID: azID, Revision: rev}
	c := az.Challenges[idx]
	id := challenge.Identifier{Type: az.Identifier.Type, Value: az.Identifier.Value}
	var p *challenge.Problem
	switch c.Type {
	case "http-01":
		p = s.cfg.Validator.HTTP01(ctx, id, c.Token, keyAuth)
	case "dns-01":
		p = s.cfg.Validator.DNS01(ctx, id, keyAuth)
	case "tls-alpn-01":
		p = s.cfg.Validator.TLSALPN01(ctx, id, keyAuth)
	}
	for attempt := 0; attempt < 5; attempt++ {
		now := s.now().UTC()
		ch := &az.Challenges[idx]
		if p == nil {
			ch.Status, ch.Validated = statusValid, now
			az.Status, az.Expires = statusValid, now.Add(validAuthTTL)
		} else {
			ch.Status = statusInvalid
			ch.Error = &Problem{Type: errNS + p.Type, Detail: p.Detail, Status: http.StatusForbidden}
			az.Status = statusInvalid
		}
		data, _ := json.Marshal(az)
		err := s.cfg.Store.PutACMEAuthz(ctx, storage.ACMEDoc{ID: azID, Data: string(data)}, az.AccountID, az.Identifier.key(), az.Expires, d.Revision)
		if err == nil {
			return *ch, true
		}
		if errors.Is(err, storage.ErrConflict) {
			if d, az, err = s.loadAuthz(ctx, azID); err == nil {
				continue
			}
		}
		s.log.Error("recording a challenge's outcome", "authz", azID, "err", err)
		return chall{}, false
	}
	s.log.Error("recording a challenge's outcome: the authorization keeps changing", "authz", azID)
	return chall{}, false
}

func (s *Server) handleFinalize(w http.ResponseWriter, r *http.Request, req *jws.Request, acct *storage.ACMEDoc) error {
	ctx := r.Context()
	id := r.PathValue("id")
	d, o, err := s.loadOrder(ctx, id, acct)
	if err != nil {
		return err
	}
	if o.Status != statusReady {
		return orderNotReady("the order is %s, not ready", o.Status)
	}
	var in struct {
		CSR string `json:"csr"`
	}
	if err := req.Decode(&in); err != nil {
		return err
	}
	der, err := base64.RawURLEncoding.DecodeString(in.CSR)
	if err != nil {
		return badCSR("csr is not base64url: %v", err)
	}
	csr, dns, ips, err := checkCSR(der, o.Identifiers)
	if err != nil {
		return err
	}
	var spiffeID string
	if o.Profile == profileSVID {
		if spiffeID, err = s.orderSPIFFEID(ctx, acct); err != nil {
			return err
		}
	}
	o.Status = statusProcessing
	data, _ := json.Marshal(o)
	if err := s.cfg.Store.PutACMEOrder(ctx, storage.ACMEDoc{ID: id, Data: string(data)}, acct.ID, d.Revision); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return orderNotReady("the order is being finalized")
		}
		return err
	}
	leaf, _, ierr := s.cfg.Issuer.IssueACME(ctx, csr, dns, ips, spiffeID, s.cfg.CertTTL, s.accountURL(acct.ID))
	if ierr != nil {
		o.Status = statusInvalid
		o.Error, _ = asProblem(ierr)
		s.log.Error("issuing an ACME certificate", "order", id, "err", ierr)
	} else {
		o.Status, o.CertSerial = statusValid, fmt.Sprintf("%x", leaf.SerialNumber)
	}
	data, _ = json.Marshal(o)
	if err := s.cfg.Store.PutACMEOrder(ctx, storage.ACMEDoc{ID: id, Data: string(data)}, acct.ID, d.Revision+1); err != nil {
		return err
	}
	w.Header().Set("Location", s.url("order/"+id))
	return s.reply(w, r, http.StatusOK, s.orderJSON(id, o))
}

// checkCSR verifies the CSR's signature and key, and that it names
// exactly the order's identifiers.
func checkCSR(der []byte, ids []ID) (*x509.CertificateRequest, []string, []net.IP, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, nil, nil, badCSR("the CSR does not parse: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, nil, badCSR("the CSR's signature does not verify: %v", err)
	}
	if err := checkKey(csr.PublicKey); err != nil {
		return nil, nil, nil, err
	}
	want := map[string]bool{}
	wantIPs := map[netip.Addr]bool{}
	for _, id := range ids {
		if id.Type == "ip" {
			wantIPs[netip.MustParseAddr(id.Value)] = true
			continue
		}
		want[id.Value] = true
	}
	got := map[string]bool{}
	for _, n := range csr.DNSNames {
		got[strings.ToLower(strings.TrimSuffix(n, "."))] = true
	}
	if cn := strings.ToLower(csr.Subject.CommonName); cn != "" {
		if ip, err := netip.ParseAddr(cn); err == nil && wantIPs[ip] {
			cn = ""
		}
	}
	if cn := strings.ToLower(csr.Subject.CommonName); cn != "" && net.ParseIP(cn) == nil {
		if !want[cn] {
			return nil, nil, nil, badCSR("the CSR's common name %q is not one of the order's identifiers", cn)
		}
		got[cn] = true
	}
	if len(csr.URIs) > 0 || len(csr.EmailAddresses) > 0 {
		return nil, nil, nil, badCSR("the CSR names URIs or emails, which ACME orders do not")
	}
	var ips []net.IP
	gotIPs := map[netip.Addr]bool{}
	for _, ip := range csr.IPAddresses {
		a, _ := netip.AddrFromSlice(ip)
		a = a.Unmap()
		if !wantIPs[a] {
			return nil, nil, nil, badCSR("the CSR names %s, which the order does not", a)
		}
		if !gotIPs[a] {
			gotIPs[a] = true
			ips = append(ips, net.IP(a.AsSlice()))
		}
	}
	if len(gotIPs) != len(wantIPs) {
		return nil, nil, nil, badCSR("the CSR does not name every IP address of the order")
	}
	var names []string
	for n := range got {
		if !want[n] {
			return nil, nil, nil, badCSR("the CSR names %q, which the order does not", n)
		}
		names = append(names, n)
	}
	for n := range want {
		if !got[n] {
			return nil, nil, nil, badCSR("the CSR does not name %q, which the order does", n)
		}
	}
	slices.Sort(names)
	return csr, names, ips, nil
}

// checkKey refuses weak or unknown keys.
func checkKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return badCSR("RSA keys must have at least 2048 bits, not %d", k.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return badCSR("ECDSA keys must be on P-256 or P-384")
		}
	case ed25519.PublicKey:
	default:
		return badCSR("unsupported key type %T", pub)
	}
	return nil
}

func (s *Server) handleCert(w http.ResponseWriter, r *http.Request, req *jws.Request, _ *storage.ACMEDoc) error {
	if !req.IsPostAsGet() {
		return malformed("a certificate is read with POST-as-GET")
	}
	leaf, chain, err := s.cfg.Issuer.Certificate(r.Context(), r.PathValue("serial"))
	if errors.Is(err, storage.ErrNotFound) {
		return notFound("certificate")
	}
	if err != nil {
		return err
	}
	// The default chain is at cert/<serial>, alternates (RFC 8555 §7.4.2)
	// at cert/<serial>/<n>, and every answer links to the others.
	chains := append([][]*x509.Certificate{chain}, s.cfg.Issuer.AlternateChains(chain)...)
	n := 0
	if alt := r.PathValue("alt"); alt != "" {
		if n, err = strconv.Atoi(alt); err != nil || n < 1 || n >= len(chains) || alt != strconv.Itoa(n) {
			return notFound("alternate chain")
		}
	}
	serial := r.PathValue("serial")
	for i := range chains {
		if i == n {
			continue
		}
		u := s.url("cert/" + serial)
		if i > 0 {
			u += "/" + strconv.Itoa(i)
		}
		w.Header().Add("Link", `<`+u+`>;rel="alternate"`)
	}
	var out []byte
	for _, c := range append([]*x509.Certificate{leaf}, chains[n]...) {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	s.addNonce(w, r)
	w.Header().Add("Link", `<`+s.url("directory")+`>;rel="index"`)
	w.Header().Set("Content-Type", "application/pem-certificate-chain")
	w.WriteHeader(http.StatusOK)
	w.Write(out)
	return nil
}

// revocable are the reason codes RFC 8555 §7.6 clients may give.
var revocable = []int{0, 1, 3, 4, 5, 9}

func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request, req *jws.Request, acct *storage.ACMEDoc) error {
	var in struct {
		Certificate string `json:"certificate"`
		Reason      *int   `json:"reason"`
	}
	if err := req.Decode(&in); err != nil {
		return err
	}
	der, err := base64.RawURLEncoding.DecodeString(in.Certificate)
	if err != nil {
		return malformed("certificate is not base64url")
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return malformed("certificate does not parse")
	}
	reason := 0
	if in.Reason != nil {
		reason = *in.Reason
	}
	if !slices.Contains(revocable, reason) {
		return badRevocationReason("reason %d may not be given", reason)
	}
	serial := fmt.Sprintf("%x", cert.SerialNumber)
	ours, _, err := s.cfg.Issuer.Certificate(r.Context(), serial)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !ours.Equal(cert)) {
		return notFound("certificate")
	}
	if err != nil {
		return err
	}
	if acct == nil {
		// Signed with the certificate's own key.
		if !publicKeysEqual(req.Key.Key, cert.PublicKey) {
			return unauthorized("the request is signed neither by an account nor by the certificate's key")
		}
	} else if err := s.authorizedFor(r.Context(), acct.ID, cert); err != nil {
		return err
	}
	if err := s.cfg.Issuer.Revoke(r.Context(), serial, reason); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return alreadyRevoked()
		}
		return err
	}
	s.addNonce(w, r)
	w.Header().Add("Link", `<`+s.url("directory")+`>;rel="index"`)
	w.WriteHeader(http.StatusOK)
	return nil
}

// certIDs returns the identifiers a certificate names.
func certIDs(cert *x509.Certificate) []ID {
	var ids []ID
	for _, n := range cert.DNSNames {
		ids = append(ids, ID{Type: "dns", Value: n})
	}
	for _, ip := range cert.IPAddresses {
		ids = append(ids, ID{Type: "ip", Value: ip.String()})
	}
	return ids
}

// authorizedFor checks that the account holds valid authorizations for
// every identifier of cert (RFC 8555 §7.6).
func (s *Server) authorizedFor(ctx context.Context, accountID string, cert *x509.Certificate) error {
	ids := certIDs(cert)
	if len(ids) == 0 {
		return unauthorized("the account cannot act on this certificate")
	}
	for _, id := range ids {
		n := id.Value
		docs, err := s.cfg.Store.FindACMEAuthzs(ctx, accountID, id.key(), s.now())
		if err != nil {
			return err
		}
		ok := false
		for _, d := range docs {
			var az authz
			if json.Unmarshal([]byte(d.Data), &az) == nil && az.Status == statusValid {
				ok = true
			}
		}
		if !ok {
			return unauthorized("the account holds no valid authorization for %s", n)
		}
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if e, ok := a.(equaler); ok {
		return e.Equal(b)
	}
	return false
}

// handleKeyChange replaces an account's key (RFC 8555 §7.3.5).
func (s *Server) handleKeyChange(w http.ResponseWriter, r *http.Request, req *jws.Request, acct *storage.ACMEDoc) error {
	newKey, err := jws.VerifyKeyChange(req)
	if err != nil {
		return err
	}
	thumb, err := jws.Thumbprint(newKey)
	if err != nil {
		return err
	}
	if other, err := s.cfg.Store.GetACMEAccountByThumbprint(r.Context(), thumb); err == nil {
		w.Header().Set("Location", s.accountURL(other.ID))
		return problem(http.StatusConflict, "malformed", "the new key belongs to another account")
	}
	var a account
	if err := json.Unmarshal([]byte(acct.Data), &a); err != nil {
		return err
	}
	if a.Key, err = newKey.MarshalJSON(); err != nil {
		return malformed("the new key cannot be encoded: %v", err)
	}
	defer s.accounts.forget(acct.ID)
	if err := s.cfg.Store.SetACMEAccountThumbprint(r.Context(), acct.ID, thumb); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return problem(http.StatusConflict, "malformed", "the new key belongs to another account")
		}
		return err
	}
	data, _ := json.Marshal(a)
	if err := s.cfg.Store.PutACMEAccount(r.Context(), storage.ACMEDoc{ID: acct.ID, Data: string(data)}, "", acct.Revision); err != nil {
		return err
	}
	return s.reply(w, r, http.StatusOK, s.accountJSON(acct.ID, a))
}

// certByARIID finds the certificate an RFC 9773 certificate identifier,
// base64url(AKI).base64url(serial), names.
func (s *Server) certByARIID(ctx context.Context, id string) (*x509.Certificate, error) {
	aki, serialB64, ok := strings.Cut(id, ".")
	serial, err := base64.RawURLEncoding.DecodeString(serialB64)
	if _, kerr := base64.RawURLEncoding.DecodeString(aki); !ok || err != nil || kerr != nil || len(serial) == 0 {
		return nil, malformed("a certificate identifier is base64url(AKI).base64url(serial)")
	}
	leaf, _, err := s.cfg.Issuer.Certificate(ctx, fmt.Sprintf("%x", new(big.Int).SetBytes(serial)))
	if errors.Is(err, storage.ErrNotFound) || (err == nil && base64.RawURLEncoding.EncodeToString(leaf.AuthorityKeyId) != aki) {
		return nil, notFound("certificate")
	}
	return leaf, err
}

// renewalRetry is the Retry-After of renewal information.
const renewalRetry = 6 * time.Hour

// handleRenewalInfo answers ARI (RFC 9773): the window in which to renew
// the certificate named by <base64url AKI>.<base64url serial>: the last
// third of its life, or now if it was revoked.
func (s *Server) handleRenewalInfo(w http.ResponseWriter, r *http.Request) {
	leaf, err := s.certByARIID(r.Context(), r.PathValue("id"))
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	start := leaf.NotBefore.Add(life * 2 / 3)
	end := leaf.NotAfter.Add(-life / 9)
	if s.cfg.Issuer.Revoked(r.Context(), fmt.Sprintf("%x", leaf.SerialNumber)) {
		now := s.now()
		start, end = now.Add(-time.Hour), now
	}
	w.Header().Set("Retry-After", strconv.Itoa(int(renewalRetry/time.Second)))
	writeJSON(w, http.StatusOK, map[string]any{"suggestedWindow": map[string]string{
		"start": start.UTC().Format(time.RFC3339), "end": end.UTC().Format(time.RFC3339)}})
}
