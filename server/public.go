package server

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/crypto/ocsp"

	"github.com/sigil-pki/sigil/ca"
	"github.com/sigil-pki/sigil/storage"
)

// maxOCSPRequest bounds an OCSP request body; real ones are a few hundred bytes.
const maxOCSPRequest = 8 << 10

// PublicHandler serves the unauthenticated listener: OCSP, CRLs, issuer
// certificates, the trust bundle, health and metrics. Everything here is
// public and, except health, cacheable.
func (s *Server) PublicHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /crl/{file}", s.handleCRL)
	mux.HandleFunc("GET /ca/{file}", s.handleIssuerCert)
	mux.HandleFunc("GET /bundle", s.handleSPIFFEBundle)
	mux.HandleFunc("GET /bundle.pem", s.handleBundlePEM)
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.Handle("GET /log/", s.logHandler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	return s.countRequests("http", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// OCSP GET requests carry base64 in the path, which may contain "//";
		// route them before the mux cleans the path.
		if r.URL.Path == "/ocsp" || strings.HasPrefix(r.URL.Path, "/ocsp/") {
			s.handleOCSP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	}))
}

// handleOCSP answers RFC 6960 requests by POST (body) and GET (base64 in
// the path, Appendix A.1).
func (s *Server) handleOCSP(w http.ResponseWriter, r *http.Request) {
	var req []byte
	switch r.Method {
	case http.MethodPost:
		b, err := io.ReadAll(io.LimitReader(r.Body, maxOCSPRequest+1))
		if err != nil || len(b) > maxOCSPRequest {
			writeOCSPAnswer(w, ca.OCSPAnswer{DER: ocsp.MalformedRequestErrorResponse})
			return
		}
		req = b
	case http.MethodGet:
		enc := strings.TrimPrefix(r.URL.EscapedPath(), "/ocsp")
		enc = strings.TrimPrefix(enc, "/")
		if unesc, err := url.PathUnescape(enc); err == nil {
			enc = unesc
		}
		b, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			b, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
		}
		if err != nil {
			writeOCSPAnswer(w, ca.OCSPAnswer{DER: ocsp.MalformedRequestErrorResponse})
			return
		}
		req = b
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "OCSP takes GET or POST", http.StatusMethodNotAllowed)
		return
	}
	auth, err := s.Authority()
	if err != nil {
		// Sealed: sign nothing; RFC 6960's tryLater is unsigned.
		writeOCSPAnswer(w, ca.OCSPAnswer{DER: ocsp.TryLaterErrorResponse})
		return
	}
	s.metrics.ocsp.Inc()
	ans := auth.RespondOCSP(r.Context(), req)
	if r.Method != http.MethodGet {
		ans.NextUpdate = time.Time{} // POST answers are not cacheable
	}
	writeOCSPAnswer(w, ans)
}

// writeOCSPAnswer sends a response with caching headers derived from its
// validity window (RFC 5019 section 6), or no-store without one.
func writeOCSPAnswer(w http.ResponseWriter, ans ca.OCSPAnswer) {
	h := w.Header()
	h.Set("Content-Type", "application/ocsp-response")
	if maxAge := int(time.Until(ans.NextUpdate).Seconds()); !ans.NextUpdate.IsZero() && maxAge > 0 {
		h.Set("Cache-Control", "public, max-age="+strconv.Itoa(maxAge)+", no-transform, must-revalidate")
		h.Set("Last-Modified", ans.ThisUpdate.UTC().Format(http.TimeFormat))
		h.Set("Expires", ans.NextUpdate.UTC().Format(http.TimeFormat))
	} else {
		h.Set("Cache-Control", "no-store")
	}
	w.Write(ans.DER)
}

func (s *Server) handleCRL(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutSuffix(r.PathValue("file"), ".crl")
	if !ok {
		http.NotFound(w, r)
		return
	}
	var der []byte
	if auth, err := s.Authority(); err == nil {
		der, err = auth.CRL(r.Context(), id)
		if err != nil {
			s.writePublicError(w, r, err)
			return
		}
	} else {
		// Sealed: the last published CRL is already signed; serve it.
		crl, err := s.store.GetCRL(r.Context(), id)
		if err != nil {
			s.writePublicError(w, r, err)
			return
		}
		der = crl.DER
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Cache-Control", "public, max-age=60")
	w.Write(der)
}

func (s *Server) handleIssuerCert(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutSuffix(r.PathValue("file"), ".crt")
	if !ok {
		http.NotFound(w, r)
		return
	}
	issuers, err := s.store.ListIssuers(r.Context())
	if err != nil {
		s.writePublicError(w, r, err)
		return
	}
	for _, iss := range issuers {
		if iss.ID == id {
			w.Header().Set("Content-Type", "application/pkix-cert")
			w.Header().Set("Cache-Control", "public, max-age=86400, immutable")
			w.Write(iss.CertDER)
			return
		}
	}
	http.NotFound(w, r)
}

func (s *Server) handleBundlePEM(w http.ResponseWriter, r *http.Request) {
	certs, err := s.Bundle(r.Context())
	if err != nil {
		s.writePublicError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("Cache-Control", "public, max-age=60")
	w.Write(encodeCerts(certs))
}

// healthBody is the JSON of /healthz and /v1/sys/seal-status.
type healthBody struct {
	Initialized bool   `json:"initialized"`
	Sealed      bool   `json:"sealed"`
	Type        string `json:"type,omitempty"`
	Threshold   int    `json:"t,omitempty"`
	Shares      int    `json:"n,omitempty"`
	Progress    int    `json:"progress"`
	KeyTerm     uint32 `json:"key_term,omitempty"`
	TrustDomain string `json:"trust_domain"`
}

func (s *Server) health(r *http.Request) (healthBody, error) {
	st, err := s.barrier.Status(r.Context())
	if err != nil {
		return healthBody{}, err
	}
	_, aerr := s.Authority()
	return healthBody{
		Initialized: st.Initialized,
		Sealed:      st.Sealed || aerr != nil,
		Type:        st.Type,
		Threshold:   st.Threshold,
		Shares:      st.Shares,
		Progress:    st.Progress,
		KeyTerm:     st.KeyTerm,
		TrustDomain: s.cfg.TrustDomain,
	}, nil
}

// handleHealth: 200 unsealed, 503 sealed, 501 not initialised (as Vault).
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	h, err := s.health(r)
	if err != nil {
		s.writePublicError(w, r, err)
		return
	}
	code := http.StatusOK
	switch {
	case !h.Initialized:
		code = http.StatusNotImplemented
	case h.Sealed:
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, code, h)
}

func (s *Server) writePublicError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, storage.ErrNotFound) {
		http.NotFound(w, r)
		return
	}
	s.log.Error("public request failed", "path", r.URL.Path, "err", err)
	http.Error(w, "internal error", http.StatusInternalServerError)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// statusRecorder remembers the status code for metrics.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer (the
// agent sync stream flushes every message).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) countRequests(listener string, h http.Handler) http.Handler {
	// Resolve the label sets once, not per request.
	var byClass [6]prometheus.Counter
	for i, class := range [6]string{"0xx", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		byClass[i] = s.metrics.requests.WithLabelValues(listener, class)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		c := rec.code / 100
		if c < 1 || c > 5 {
			c = 0
		}
		byClass[c].Inc()
	})
}
