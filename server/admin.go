package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sigil-pki/sigil/barrier"
	"github.com/sigil-pki/sigil/ca"
	"github.com/sigil-pki/sigil/storage"
	"github.com/sigil-pki/sigil/tlog"
)

// maxAdminBody bounds admin request bodies.
const maxAdminBody = 64 << 10

// AdminHandler serves the HTTPS listener's API. Seal status and unseal are
// open to anyone who can reach the listener (the shares are the
// credential); everything else needs an operator certificate: a valid,
// unrevoked X.509-SVID from this CA for spiffe://<trust domain>/sigil/operator.
// Errors are Vault-shaped: {"errors":["..."]}.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/sys/seal-status", s.handleSealStatus)
	mux.HandleFunc("GET /v1/sys/health", s.handleHealth)
	mux.HandleFunc("PUT /v1/sys/unseal", s.handleUnseal)
	mux.HandleFunc("POST /v1/sys/unseal", s.handleUnseal)
	mux.Handle("PUT /v1/sys/seal", s.operator(s.handleSeal))
	mux.Handle("PUT /v1/sys/rotate", s.operator(s.handleRotate))
	mux.Handle("POST /v1/ca/issue", s.operator(s.handleIssue))
	mux.Handle("POST /v1/ca/revoke", s.operator(s.handleRevoke))
	mux.Handle("GET /v1/ca/certs", s.operator(s.handleListCerts))
	mux.Handle("POST /v1/ca/rotate", s.operator(s.handleRotateIntermediate))
	mux.Handle("POST /v1/ca/cross", s.operator(s.handleAddCross))
	mux.Handle("POST /v1/jwt/rotate", s.operator(s.handleRotateJWT))
	mux.Handle("GET /v1/policies", s.operator(s.handlePolicyList))
	mux.Handle("POST /v1/policies/check", s.operator(s.handlePolicyCheck))
	mux.Handle("PUT /v1/policies/{name}", s.operator(s.handlePolicyPut))
	mux.Handle("GET /v1/policies/{name}", s.operator(s.handlePolicyGet))
	mux.Handle("DELETE /v1/policies/{name}", s.operator(s.handlePolicyDelete))
	s.databaseRoutes(mux)
	mux.Handle("/acme/", s.acme.Handler())
	mux.Handle("POST /v1/acme/eab", s.operator(s.handleCreateEAB))
	mux.Handle("/v1/", s.secretsHandler())
	mux.Handle("POST /v1/entries", s.operator(s.handleEntryCreate))
	mux.Handle("GET /v1/entries", s.operator(s.handleEntryList))
	mux.Handle("GET /v1/entries/{id}", s.operator(s.handleEntryGet))
	mux.Handle("PUT /v1/entries/{id}", s.operator(s.handleEntryUpdate))
	mux.Handle("DELETE /v1/entries/{id}", s.operator(s.handleEntryDelete))
	s.agentRoutes(mux)
	mux.Handle("GET /log/", s.logHandler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErrors(w, http.StatusNotFound, "no handler for "+r.Method+" "+r.URL.Path)
	})
	return s.countRequests("https", mux)
}

type callerKey struct{}

// Caller returns the SPIFFE ID that authenticated the request, if any.
func Caller(ctx context.Context) string {
	id, _ := ctx.Value(callerKey{}).(string)
	return id
}

// operator admits only the operator identity.
func (s *Server) operator(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := s.authenticate(r)
		if err != nil {
			writeErrors(w, http.StatusUnauthorized, err.Error())
			return
		}
		if id != s.OperatorID() {
			writeErrors(w, http.StatusForbidden, "permission denied: "+id+" is not the operator identity")
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, id)))
	})
}

// authenticate verifies the client certificate against the trust bundle in
// storage and the certificate's revocation record, and returns its SPIFFE ID.
func (s *Server) authenticate(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", errors.New("a client certificate is required")
	}
	bundle, err := s.Bundle(r.Context())
	if err != nil {
		return "", errors.New("trust bundle unavailable")
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range bundle {
		if c.IsCA && isSelfSigned(c) {
			roots.AddCert(c)
		} else {
			inters.AddCert(c)
		}
	}
	leaf := r.TLS.PeerCertificates[0]
	for _, c := range r.TLS.PeerCertificates[1:] {
		inters.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inters, CurrentTime: s.clock(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return "", fmt.Errorf("client certificate not trusted: %v", err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].Scheme != "spiffe" {
		return "", errors.New("client certificate is not an X.509-SVID")
	}
	rec, err := s.store.GetCertificate(r.Context(), ca.Serial(leaf.SerialNumber))
	if err != nil {
		return "", errors.New("client certificate is not on record")
	}
	if rec.Revoked() {
		return "", errors.New("client certificate is revoked")
	}
	return leaf.URIs[0].String(), nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return c.CheckSignatureFrom(c) == nil
}

func (s *Server) handleSealStatus(w http.ResponseWriter, r *http.Request) {
	h, err := s.health(r)
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, h)
}

// UnsealRequest is the body of PUT /v1/sys/unseal.
type UnsealRequest struct {
	// Key is one share, hex or base64.
	Key string `json:"key"`
}

func (s *Server) handleUnseal(w http.ResponseWriter, r *http.Request) {
	var req UnsealRequest
	if !decodeBody(w, r, &req) {
		return
	}
	share, err := DecodeShare(req.Key)
	if err != nil {
		writeErrors(w, http.StatusBadRequest, err.Error())
		return
	}
	defer clear(share)
	st, err := s.barrier.Status(r.Context())
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	if st.Initialized && st.Type != "shamir" {
		writeErrors(w, http.StatusBadRequest, "the "+st.Type+" seal unseals itself; shares are not used")
		return
	}
	if _, err := s.SubmitShare(r.Context(), share); err != nil {
		s.writeAdminError(w, err)
		return
	}
	s.handleSealStatus(w, r)
}

// DecodeShare reads a share printed by 'sigil operator init' (hex), or base64.
func DecodeShare(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("missing unseal key")
	}
	if b, err := hex.DecodeString(s); err == nil {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return nil, errors.New("unseal key is neither hex nor base64")
}

func (s *Server) handleSeal(w http.ResponseWriter, r *http.Request) {
	// Sealing is the emergency stop: it happens even if its log entry
	// cannot be written (nothing is handed out by sealing).
	if err := s.audit(r.Context(), tlog.Entry{Kind: tlog.KindOperatorSeal}); err != nil && !errors.Is(err, ErrSealed) {
		s.log.Error("logging the seal request failed; sealing anyway", "err", err)
	}
	s.Seal()
	s.log.Warn("sealed by operator request", "spiffe_id", Caller(r.Context()))
	s.handleSealStatus(w, r)
}

func (s *Server) handleRotate(w http.ResponseWriter, r *http.Request) {
	term, err := s.RotateBarrier(r.Context())
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"term": term})
}

// IssueRequest is the body of POST /v1/ca/issue.
type IssueRequest struct {
	// CSR is a PEM certificate request; its key becomes the subject key.
	CSR string `json:"csr"`
	// SPIFFEID, when set, issues an X.509-SVID for it, whatever the CSR names.
	SPIFFEID string `json:"spiffe_id,omitempty"`
	// DNSNames and IPAddresses, when set, replace the CSR's.
	DNSNames    []string `json:"dns_names,omitempty"`
	IPAddresses []string `json:"ip_addresses,omitempty"`
	Profile     string   `json:"profile,omitempty"`
	// TTL is a Go duration; empty means the CA's default.
	TTL string `json:"ttl,omitempty"`
}

// IssueResponse carries PEM.
type IssueResponse struct {
	Serial      string `json:"serial"`
	Certificate string `json:"certificate"`
	Chain       string `json:"chain"`
	NotAfter    string `json:"not_after"`
}

func (s *Server) handleIssue(w http.ResponseWriter, r *http.Request) {
	var req IssueRequest
	if !decodeBody(w, r, &req) {
		return
	}
	auth, err := s.Authority()
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	blk, _ := pem.Decode([]byte(req.CSR))
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" && blk.Type != "NEW CERTIFICATE REQUEST" {
		writeErrors(w, http.StatusBadRequest, "csr must be a PEM CERTIFICATE REQUEST")
		return
	}
	csr, err := ca.ParseCSR(blk.Bytes)
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			writeErrors(w, http.StatusBadRequest, "ttl must be a positive duration such as 1h")
			return
		}
	}
	creq := ca.RequestFromCSR(csr, req.Profile, ttl)
	if req.SPIFFEID != "" {
		creq.SPIFFEID = req.SPIFFEID
		if req.Profile == "" {
			creq.Profile = ca.ProfileSVID
		}
	}
	if len(req.DNSNames) > 0 {
		creq.DNSNames = req.DNSNames
	}
	if len(req.IPAddresses) > 0 {
		creq.IPAddresses = nil
		for _, a := range req.IPAddresses {
			ip := net.ParseIP(a)
			if ip == nil {
				writeErrors(w, http.StatusBadRequest, "bad IP address "+strconv.Quote(a))
				return
			}
			creq.IPAddresses = append(creq.IPAddresses, ip)
		}
	}
	iss, err := auth.Issue(r.Context(), creq)
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	s.metrics.issued.WithLabelValues(iss.Record.Profile).Inc()
	s.log.Info("certificate issued", "serial", iss.Record.Serial, "subject", iss.Record.Subject, "profile", iss.Record.Profile, "spiffe_id", Caller(r.Context()))
	writeJSON(w, http.StatusOK, IssueResponse{
		Serial:      iss.Record.Serial,
		Certificate: string(encodeCerts([]*x509.Certificate{iss.Certificate})),
		Chain:       string(encodeCerts(iss.Chain)),
		NotAfter:    iss.Certificate.NotAfter.UTC().Format(time.RFC3339),
	})
}

// RevokeRequest is the body of POST /v1/ca/revoke.
type RevokeRequest struct {
	Serial string `json:"serial"`
	// Reason is an RFC 5280 reason name (keyCompromise, key-compromise) or code.
	Reason string `json:"reason"`
}

func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	var req RevokeRequest
	if !decodeBody(w, r, &req) {
		return
	}
	reason, err := ParseReason(req.Reason)
	if err != nil {
		writeErrors(w, http.StatusBadRequest, err.Error())
		return
	}
	serial, err := normaliseSerial(req.Serial)
	if err != nil {
		writeErrors(w, http.StatusBadRequest, err.Error())
		return
	}
	auth, err := s.Authority()
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	rec, err := auth.Revoke(r.Context(), serial, reason)
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	s.metrics.revoked.Inc()
	s.markRevoked(rec.Serial)
	if err := s.audit(r.Context(), tlog.Entry{Kind: tlog.KindCertRevoke, Subject: tlog.Subject{
		Serial: rec.Serial, CertSHA256: sha256.Sum256(rec.DER), Detail: ReasonName(reason)}}); err != nil {
		s.writeAdminError(w, err)
		return
	}
	s.log.Info("certificate revoked", "serial", rec.Serial, "reason", reason, "spiffe_id", Caller(r.Context()))
	writeJSON(w, http.StatusOK, certJSON(rec))
}

// CertInfo is one certificate in API listings.
type CertInfo struct {
	Seq       int64  `json:"seq"`
	Serial    string `json:"serial"`
	Issuer    string `json:"issuer"`
	Profile   string `json:"profile"`
	Subject   string `json:"subject"`
	NotBefore string `json:"not_before"`
	NotAfter  string `json:"not_after"`
	RevokedAt string `json:"revoked_at,omitempty"`
	Reason    string `json:"revocation_reason,omitempty"`
}

func certJSON(c storage.Certificate) CertInfo {
	ci := CertInfo{
		Seq: c.Seq, Serial: c.Serial, Issuer: c.IssuerID, Profile: c.Profile, Subject: c.Subject,
		NotBefore: c.NotBefore.UTC().Format(time.RFC3339), NotAfter: c.NotAfter.UTC().Format(time.RFC3339),
	}
	if c.Revoked() {
		ci.RevokedAt = c.RevokedAt.UTC().Format(time.RFC3339)
		ci.Reason = ReasonName(c.RevocationReason)
	}
	return ci
}

func (s *Server) handleListCerts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := storage.CertificateFilter{IssuerID: q.Get("issuer"), RevokedOnly: q.Get("revoked") == "true"}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeErrors(w, http.StatusBadRequest, "after must be a non-negative integer")
			return
		}
		f.AfterSeq = n
	}
	var ok bool
	if f.Limit, ok = queryLimit(w, r); !ok {
		return
	}
	certs, err := s.store.ListCertificates(r.Context(), f)
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	writeList(w, "certificates", certs, certJSON)
}

// writeList answers a listing: each item converted by conv, under key.
func writeList[T, J any](w http.ResponseWriter, key string, items []T, conv func(T) J) {
	out := make([]J, 0, len(items))
	for _, it := range items {
		out = append(out, conv(it))
	}
	writeJSON(w, http.StatusOK, map[string]any{key: out})
}

func (s *Server) handleRotateIntermediate(w http.ResponseWriter, r *http.Request) {
	auth, err := s.Authority()
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	rotated, err := auth.Rotate(r.Context(), r.URL.Query().Get("force") == "true")
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	if rotated {
		s.refreshTrust()
	}
	active := auth.Intermediates()[0]
	writeJSON(w, http.StatusOK, map[string]any{
		"rotated": rotated, "active": ca.IssuerID(active), "not_after": active.NotAfter.UTC().Format(time.RFC3339),
	})
}

// queryLimit reads the optional limit parameter of a listing: 0 when
// absent; false (with a 400 written) when out of range.
func queryLimit(w http.ResponseWriter, r *http.Request) (int, bool) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 0, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		writeErrors(w, http.StatusBadRequest, "limit must be between 1 and 1000")
		return 0, false
	}
	return n, true
}

// CrossRequest is the body of POST /v1/ca/cross.
type CrossRequest struct {
	// Certificate is the PEM of another CA's certificate for a root.
	Certificate string `json:"certificate"`
}

// CrossAdded answers POST /v1/ca/cross.
type CrossAdded struct {
	ID       string `json:"id"`
	Issuer   string `json:"issuer"`
	NotAfter string `json:"not_after"`
}

// handleAddCross records another CA's certificate for a root, after
// which ACME downloads link to the chain through it (rel="alternate");
// the addition is logged first.
func (s *Server) handleAddCross(w http.ResponseWriter, r *http.Request) {
	var req CrossRequest
	if !decodeBody(w, r, &req) {
		return
	}
	blk, rest := pem.Decode([]byte(req.Certificate))
	if blk == nil || blk.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		writeErrors(w, http.StatusBadRequest, "certificate must be exactly one PEM CERTIFICATE block")
		return
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		writeErrors(w, http.StatusBadRequest, "certificate does not parse: "+err.Error())
		return
	}
	auth, err := s.Authority()
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	sum := sha256.Sum256(cert.Raw)
	if err := s.audit(r.Context(), tlog.Entry{Kind: tlog.KindCACross, Subject: tlog.Subject{
		Serial: ca.Serial(cert.SerialNumber), Path: "ca/cross", CertSHA256: sum, Detail: "cross-certificate from " + cert.Issuer.String()}}); err != nil {
		s.writeAdminError(w, err)
		return
	}
	id, err := auth.AddCrossCertificate(r.Context(), cert)
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, CrossAdded{ID: id, Issuer: cert.Issuer.String(), NotAfter: cert.NotAfter.UTC().Format(time.RFC3339)})
}

// writeAdminError maps domain errors to HTTP statuses in one place.
func (s *Server) writeAdminError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	msg := err.Error()
	switch {
	case errors.Is(err, ErrSealed), errors.Is(err, barrier.ErrSealed):
		code, msg = http.StatusServiceUnavailable, ErrSealed.Error()
	case errors.Is(err, ErrNotInitialized), errors.Is(err, barrier.ErrNotInitialized), errors.Is(err, ca.ErrNotInitialized):
		code, msg = http.StatusServiceUnavailable, ErrNotInitialized.Error()
	case errors.Is(err, barrier.ErrDuplicateShare):
		code, msg = http.StatusBadRequest, "unseal share refused: this share was already given; the progress so far is kept"
	case errors.Is(err, barrier.ErrInvalidShare):
		code, msg = http.StatusBadRequest, "unseal share refused: it is not one of the shares made at init; the progress so far is kept"
	case errors.Is(err, ca.ErrPolicy), errors.Is(err, ca.ErrBadCSR), errors.Is(err, ca.ErrTTL), errors.Is(err, ca.ErrUnknownProfile),
		errors.Is(err, ca.ErrBadCrossCertificate):
		code = http.StatusBadRequest
	case errors.Is(err, storage.ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, ca.ErrNotFound), errors.Is(err, storage.ErrNotFound):
		code, msg = http.StatusNotFound, "not found"
	case errors.Is(err, ca.ErrAlreadyRevoked):
		code = http.StatusConflict
	default:
		s.log.Error("admin request failed", "err", err)
		msg = "internal error"
	}
	writeErrors(w, code, msg)
}

func writeErrors(w http.ResponseWriter, code int, msgs ...string) {
	writeJSON(w, code, map[string][]string{"errors": msgs})
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeErrors(w, http.StatusBadRequest, "malformed JSON body: "+err.Error())
		return false
	}
	return true
}

// normaliseSerial accepts hex with or without colons and leading zeros.
func normaliseSerial(s string) (string, error) {
	h := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	h = strings.TrimPrefix(h, "0x")
	if h == "" {
		return "", errors.New("missing serial")
	}
	if _, err := hex.DecodeString(strings.Repeat("0", len(h)%2) + h); err != nil {
		return "", fmt.Errorf("serial %q is not hexadecimal", s)
	}
	h = strings.TrimLeft(h, "0")
	if h == "" {
		h = "0"
	}
	return h, nil
}

// reasonNames are RFC 5280 §5.3.1 CRLReason names by code (7 is unused).
var reasonNames = map[int]string{
	0: "unspecified", 1: "keyCompromise", 2: "cACompromise", 3: "affiliationChanged",
	4: "superseded", 5: "cessationOfOperation", 6: "certificateHold",
	8: "removeFromCRL", 9: "privilegeWithdrawn", 10: "aACompromise",
}

// ParseReason accepts an RFC 5280 reason name in any case, with or without
// dashes (key-compromise), or its code.
func ParseReason(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if _, ok := reasonNames[n]; ok {
			return n, nil
		}
		return 0, fmt.Errorf("unknown revocation reason code %d", n)
	}
	want := strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(s))
	for code, name := range reasonNames {
		if strings.ToLower(name) == want {
			return code, nil
		}
	}
	return 0, fmt.Errorf("unknown revocation reason %q (use one of unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise)", s)
}

// ReasonName returns the RFC 5280 name of a reason code.
func ReasonName(code int) string {
	if n, ok := reasonNames[code]; ok {
		return n
	}
	return strconv.Itoa(code)
}
