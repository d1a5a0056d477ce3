package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"github.com/sigil-pki/sigil/ca"
	"github.com/sigil-pki/sigil/identity/agentapi"
	"github.com/sigil-pki/sigil/identity/entry"
	"github.com/sigil-pki/sigil/identity/workload"
	"github.com/sigil-pki/sigil/storage"
	"github.com/sigil-pki/sigil/tlog"
)

// maxAgentBody bounds agent request bodies (a sign request carries up to
// agentapi.MaxSignRequests CSRs).
const maxAgentBody = 1 << 20

// signParallelism bounds the SVIDs signed at once for one sign request, so
// that they share group commits of the log.
const signParallelism = 32

// joinTokenBytes is the entropy of a join token.
const joinTokenBytes = 32

// defaultJoinTokenTTL is a join token's lifetime when none is asked for.
const defaultJoinTokenTTL = time.Hour

// reasonPrivilegeWithdrawn is the RFC 5280 reason given to the
// certificates of an evicted agent.
const reasonPrivilegeWithdrawn = 9

// agentRoutes registers the agent protocol and the operator's agent API.
func (s *Server) agentRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+agentapi.PathAttest, s.handleAgentAttest)
	mux.HandleFunc("POST "+agentapi.PathRenew, s.agent(s.handleAgentRenew))
	mux.HandleFunc("POST "+agentapi.PathSign, s.agent(s.handleAgentSign))
	mux.HandleFunc("POST "+agentapi.PathJWT, s.agent(s.handleAgentJWT))
	mux.HandleFunc("GET "+agentapi.PathSync, s.agent(s.handleAgentSync))
	mux.Handle("POST /v1/agents/join-tokens", s.operator(s.handleJoinTokenCreate))
	mux.Handle("GET /v1/agents", s.operator(s.handleAgentList))
	mux.Handle("GET /v1/agents/{id}", s.operator(s.handleAgentGet))
	mux.Handle("POST /v1/agents/{id}/evict", s.operator(s.handleAgentEvict))
}

// agentError is an answer in the agent protocol's error form.
type agentError struct {
	status int
	code   string
	msg    string
}

func (e *agentError) Error() string { return e.msg }

func agentErr(status int, code, format string, args ...any) *agentError {
	return &agentError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// writeAgentError answers with err; anything but an *agentError is an
// internal failure, logged here and reported without its cause.
func (s *Server) writeAgentError(w http.ResponseWriter, err error) {
	var ae *agentError
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, ErrSealed), errors.Is(err, ErrNotInitialized):
		ae = agentErr(http.StatusServiceUnavailable, agentapi.CodeUnavailable, "%v", err)
	case errors.Is(err, ca.ErrBadCSR), errors.Is(err, ca.ErrPolicy), errors.Is(err, ca.ErrTTL):
		ae = agentErr(http.StatusBadRequest, agentapi.CodeBadRequest, "%v", err)
	default:
		s.log.Error("agent request failed", "err", err)
		ae = agentErr(http.StatusServiceUnavailable, agentapi.CodeUnavailable, "internal error; try again later")
	}
	writeJSON(w, ae.status, agentapi.ErrorDocument{Errors: []string{ae.msg}, Code: ae.code})
}

// agentCallerKey carries the authenticated agent of a request.
type agentCallerKey struct{}

// agent admits requests made with the SVID of an agent in good standing.
func (s *Server) agent(h func(http.ResponseWriter, *http.Request, storage.Agent)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a, err := s.authenticateAgent(r)
		if err != nil {
			s.writeAgentError(w, err)
			return
		}
		// An agent is answered from the entry snapshot: load it first, or
		// a server just started would hand out an empty set.
		if err := s.entriesLoaded(r.Context()); err != nil {
			s.writeAgentError(w, err)
			return
		}
		ctx := context.WithValue(r.Context(), callerKey{}, a.SPIFFEID)
		h(w, r.WithContext(context.WithValue(ctx, agentCallerKey{}, a.ID)), a)
	}
}

// authenticateAgent returns the agent whose unrevoked, unexpired SVID
// made the request, if that agent is not evicted.
func (s *Server) authenticateAgent(r *http.Request) (storage.Agent, error) {
	id, err := s.authenticateSVID(r)
	if err != nil {
		if errors.Is(err, ErrSealed) {
			return storage.Agent{}, err
		}
		// An evicted agent's SVID is revoked: say it was evicted, so that
		// the agent stops rather than retries.
		if node, ok := agentapi.NodeOf(s.cfg.TrustDomain, id); ok && errors.Is(err, errRevokedSVID) {
			if a, gerr := s.store.GetAgent(r.Context(), node); gerr == nil && a.Evicted() {
				return storage.Agent{}, agentErr(http.StatusForbidden, agentapi.CodeEvicted, "agent %s was evicted", node)
			}
		}
		return storage.Agent{}, agentErr(http.StatusUnauthorized, agentapi.CodeUnauthenticated, "%v", err)
	}
	node, ok := agentapi.NodeOf(s.cfg.TrustDomain, id)
	if !ok {
		return storage.Agent{}, agentErr(http.StatusForbidden, agentapi.CodeUnauthenticated, "%s is not an agent identity", id)
	}
	return s.agentInGoodStanding(r.Context(), node)
}

// agentInGoodStanding reads the agent and refuses an unknown or evicted one.
func (s *Server) agentInGoodStanding(ctx context.Context, node string) (storage.Agent, error) {
	a, err := s.store.GetAgent(ctx, node)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Agent{}, agentErr(http.StatusUnauthorized, agentapi.CodeUnauthenticated, "agent %s is unknown", node)
	}
	if err != nil {
		return storage.Agent{}, err
	}
	if a.Evicted() {
		return storage.Agent{}, agentErr(http.StatusForbidden, agentapi.CodeEvicted, "agent %s was evicted", node)
	}
	return a, nil
}

// decodeAgentBody decodes a JSON body strictly.
func decodeAgentBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAgentBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return agentErr(http.StatusBadRequest, agentapi.CodeBadRequest, "malformed JSON body: %v", err)
	}
	return nil
}

// parseAgentCSR parses and checks a DER certificate request.
func parseAgentCSR(der []byte) (*x509.CertificateRequest, error) {
	if len(der) == 0 {
		return nil, agentErr(http.StatusBadRequest, agentapi.CodeBadRequest, "csr is required")
	}
	csr, err := ca.ParseCSR(der)
	if err != nil {
		return nil, agentErr(http.StatusBadRequest, agentapi.CodeBadRequest, "%v", err)
	}
	return csr, nil
}

// tokenHash is how a join token is stored and looked up.
func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// handleAgentAttest admits a node by join token or node certificate and
// issues its agent SVID.
func (s *Server) handleAgentAttest(w http.ResponseWriter, r *http.Request) {
	var req agentapi.AttestRequest
	if err := decodeAgentBody(r, &req); err != nil {
		s.writeAgentError(w, err)
		return
	}
	resp, err := s.attestAgent(r, req)
	if err != nil {
		s.writeAgentError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) attestAgent(r *http.Request, req agentapi.AttestRequest) (*agentapi.SVIDResponse, error) {
	ctx := r.Context()
	csr, err := parseAgentCSR(req.CSR)
	if err != nil {
		return nil, err
	}
	if req.NodeID != "" {
		if err := agentapi.CheckNodeID(req.NodeID); err != nil {
			return nil, agentErr(http.StatusBadRequest, agentapi.CodeBadRequest, "%v", err)
		}
	}
	auth, err := s.Authority()
	if err != nil {
		return nil, err
	}
	var (
		node, method string
		selectors    []string
	)
	if req.JoinToken != "" {
		method = agentapi.MethodJoinToken
		if node, selectors, err = s.consumeJoinToken(ctx, req.JoinToken, req.NodeID); err != nil {
			return nil, err
		}
	} else {
		method = agentapi.MethodX509PoP
		if req.NodeID != "" {
			return nil, agentErr(http.StatusBadRequest, agentapi.CodeBadRequest, "node_id goes with a join token; with x509pop the certificate names the node")
		}
		if node, selectors, err = s.x509PoPNode(r); err != nil {
			return nil, err
		}
	}
	prev, err := s.store.GetAgent(ctx, node)
	exists := err == nil
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	// An evicted node comes back only with a join token the operator made
	// after the eviction, never by its certificate alone.
	if exists && prev.Evicted() && method == agentapi.MethodX509PoP {
		return nil, agentErr(http.StatusForbidden, agentapi.CodeEvicted, "agent %s was evicted; it may rejoin with a new join token", node)
	}
	agentID := agentapi.AgentID(s.cfg.TrustDomain, node)
	ctx = context.WithValue(ctx, callerKey{}, agentID)
	iss, err := s.issueForAgent(ctx, auth, node, ca.Request{
		Profile: ca.ProfileSVID, SPIFFEID: agentID, PublicKey: csr.PublicKey, TTL: s.cfg.Agents.SVIDTTL.D(),
	})
	if err != nil {
		return nil, err
	}
	now := s.clock()
	a := storage.Agent{
		ID: node, SPIFFEID: agentID, Attestation: method, Selectors: selectors, Serial: iss.Record.Serial,
		NotAfter: iss.Certificate.NotAfter, AttestedAt: now, UpdatedAt: now,
	}
	var expect int64
	if exists {
		expect = prev.Revision
	}
	if err := s.store.PutAgent(ctx, a, expect); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return nil, agentErr(http.StatusConflict, agentapi.CodeUnavailable, "agent %s changed during attestation; try again", node)
		}
		return nil, err
	}
	if err := s.audit(ctx, tlog.Entry{Kind: tlog.KindAgentAttest, Subject: tlog.Subject{
		Path: "agent/" + node, Serial: iss.Record.Serial, Detail: method,
	}}); err != nil {
		return nil, err
	}
	s.agents.reopen(agentID)
	s.log.Info("agent attested", "node", node, "method", method, "serial", iss.Record.Serial)
	return s.svidResponse(node, agentID, iss), nil
}

// consumeJoinToken uses up a join token and returns the node it admits
// and the node selectors it gives (group:<name> for each of its groups).
// A token naming another node than the request is put back: bad input
// changes nothing.
func (s *Server) consumeJoinToken(ctx context.Context, token, requested string) (string, []string, error) {
	jt, err := s.store.ConsumeJoinToken(ctx, tokenHash(token), s.clock())
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil, agentErr(http.StatusUnauthorized, agentapi.CodeUnauthenticated, "join token unknown, already used or expired")
	}
	if err != nil {
		return "", nil, err
	}
	node := jt.NodeID
	switch {
	case node == "" && requested == "":
		err = agentErr(http.StatusBadRequest, agentapi.CodeBadRequest, "this join token names no node: node_id is required")
	case node == "":
		node = requested
	case requested != "" && requested != node:
		err = agentErr(http.StatusBadRequest, agentapi.CodeBadRequest, "this join token is for node %s, not %s", node, requested)
	}
	if err != nil {
		if perr := s.store.CreateJoinToken(ctx, jt); perr != nil {
			return "", nil, errors.Join(err, fmt.Errorf("restoring the join token: %w", perr))
		}
		return "", nil, err
	}
	var sels []string
	for _, g := range jt.Groups {
		sels = append(sels, agentapi.SelectorGroup+":"+g)
	}
	return node, sels, nil
}

// x509PoPNode verifies the TLS client certificate against the node CAs
// and returns the node its common name names, and its node selectors:
// x509pop:ca:<fingerprint of the CA that verified it> and x509pop:ou:<ou>
// for each organizational unit usable as one. The TLS handshake proved
// possession of the certificate's key.
func (s *Server) x509PoPNode(r *http.Request) (string, []string, error) {
	file := s.cfg.Agents.X509PoPCAFile
	if file == "" {
		return "", nil, agentErr(http.StatusUnauthorized, agentapi.CodeUnauthenticated, "a join token is required (x509pop attestation is not configured)")
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", nil, agentErr(http.StatusUnauthorized, agentapi.CodeUnauthenticated, "a join token or a node certificate is required")
	}
	pemBytes, err := os.ReadFile(file)
	if err != nil {
		return "", nil, fmt.Errorf("reading agents.x509pop_ca_file: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		return "", nil, fmt.Errorf("agents.x509pop_ca_file %s holds no certificate", file)
	}
	inters := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inters.AddCert(c)
	}
	leaf := r.TLS.PeerCertificates[0]
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inters, CurrentTime: s.clock(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return "", nil, agentErr(http.StatusUnauthorized, agentapi.CodeUnauthenticated, "node certificate not trusted: %v", err)
	}
	node := leaf.Subject.CommonName
	if err := agentapi.CheckNodeID(node); err != nil {
		return "", nil, agentErr(http.StatusBadRequest, agentapi.CodeBadRequest, "node certificate's common name: %v", err)
	}
	ca := chains[0][len(chains[0])-1]
	fp := sha256.Sum256(ca.Raw)
	sels := []string{agentapi.SelectorX509PoP + ":ca:" + hex.EncodeToString(fp[:16])}
	for _, ou := range leaf.Subject.OrganizationalUnit {
		if agentapi.CheckNodeID(ou) == nil {
			sels = append(sels, agentapi.SelectorX509PoP+":ou:"+ou)
		}
	}
	return node, sels, nil
}

// issueForAgent issues a certificate and notes it under the agent, both
// durably (the issuance on the log) before it is returned.
func (s *Server) issueForAgent(ctx context.Context, auth *ca.Authority, node string, req ca.Request) (*ca.Issued, error) {
	iss, err := auth.Issue(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := s.store.RecordAgentCertificate(ctx, storage.AgentCertificate{
		Serial: iss.Record.Serial, AgentID: node, NotAfter: iss.Certificate.NotAfter,
	}); err != nil {
		return nil, fmt.Errorf("noting certificate %s under agent %s: %w", iss.Record.Serial, node, err)
	}
	s.metrics.issued.WithLabelValues(iss.Record.Profile).Inc()
	return iss, nil
}

func (s *Server) svidResponse(node, agentID string, iss *ca.Issued) *agentapi.SVIDResponse {
	resp := &agentapi.SVIDResponse{NodeID: node, SPIFFEID: agentID, Chain: [][]byte{iss.Certificate.Raw}}
	for _, c := range iss.Chain {
		resp.Chain = append(resp.Chain, c.Raw)
	}
	for _, c := range (workloadAuthority{s}).Trust().X509Authorities {
		resp.Roots = append(resp.Roots, c.Raw)
	}
	return resp
}

// handleAgentRenew issues a fresh agent SVID to an agent in good standing.
func (s *Server) handleAgentRenew(w http.ResponseWriter, r *http.Request, a storage.Agent) {
	var req agentapi.RenewRequest
	if err := decodeAgentBody(r, &req); err != nil {
		s.writeAgentError(w, err)
		return
	}
	csr, err := parseAgentCSR(req.CSR)
	if err != nil {
		s.writeAgentError(w, err)
		return
	}
	auth, err := s.Authority()
	if err != nil {
		s.writeAgentError(w, err)
		return
	}
	iss, err := s.issueForAgent(r.Context(), auth, a.ID, ca.Request{
		Profile: ca.ProfileSVID, SPIFFEID: a.SPIFFEID, PublicKey: csr.PublicKey, TTL: s.cfg.Agents.SVIDTTL.D(),
	})
	if err != nil {
		s.writeAgentError(w, err)
		return
	}
	a.Serial, a.NotAfter, a.UpdatedAt = iss.Record.Serial, iss.Certificate.NotAfter, s.clock()
	if err := s.store.PutAgent(r.Context(), a, a.Revision); err != nil {
		s.writeAgentError(w, fmt.Errorf("recording the renewal of agent %s: %w", a.ID, err))
		return
	}
	// An eviction that raced with this renewal wins: it either revoked
	// the certificate just noted, or is seen here.
	if _, err := s.agentInGoodStanding(r.Context(), a.ID); err != nil {
		s.writeAgentError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.svidResponse(a.ID, a.SPIFFEID, iss))
}

// handleAgentSign signs workload SVIDs for entries parented to the agent.
// Every request is checked before anything is signed.
func (s *Server) handleAgentSign(w http.ResponseWriter, r *http.Request, a storage.Agent) {
	var req agentapi.SignRequest
	if err := decodeAgentBody(r, &req); err != nil {
		s.writeAgentError(w, err)
		return
	}
	if n := len(req.Requests); n == 0 || n > agentapi.MaxSignRequests {
		s.writeAgentError(w, agentErr(http.StatusBadRequest, agentapi.CodeBadRequest, "%d requests: 1 to %d allowed", n, agentapi.MaxSignRequests))
		return
	}
	creqs := make([]ca.Request, len(req.Requests))
	for i, cr := range req.Requests {
		e, ok := s.agents.entry(s.agentParents(a), cr.EntryID)
		if !ok {
			s.writeAgentError(w, agentErr(http.StatusForbidden, agentapi.CodeNotParent, "entry %q is not parented to %s or its node selectors", cr.EntryID, a.SPIFFEID))
			return
		}
		csr, err := parseAgentCSR(cr.CSR)
		if err != nil {
			s.writeAgentError(w, fmt.Errorf("requests[%d]: %w", i, err))
			return
		}
		creqs[i] = ca.Request{Profile: ca.ProfileSVID, SPIFFEID: e.SPIFFEID, DNSNames: e.DNSNames, PublicKey: csr.PublicKey, TTL: e.X509SVIDTTL}
	}
	auth, err := s.Authority()
	if err != nil {
		s.writeAgentError(w, err)
		return
	}
	resp := agentapi.SignResponse{SVIDs: make([]agentapi.SignedSVID, len(creqs))}
	g, gctx := errgroup.WithContext(r.Context())
	g.SetLimit(signParallelism)
	for i, creq := range creqs {
		g.Go(func() error {
			iss, err := s.issueForAgent(gctx, auth, a.ID, creq)
			if err != nil {
				return err
			}
			chain := [][]byte{iss.Certificate.Raw}
			for _, c := range iss.Chain {
				chain = append(chain, c.Raw)
			}
			resp.SVIDs[i] = agentapi.SignedSVID{EntryID: req.Requests[i].EntryID, Chain: chain}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		s.writeAgentError(w, err)
		return
	}
	if _, err := s.agentInGoodStanding(r.Context(), a.ID); err != nil {
		s.writeAgentError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// handleAgentJWT mints a JWT-SVID for an entry parented to the agent.
func (s *Server) handleAgentJWT(w http.ResponseWriter, r *http.Request, a storage.Agent) {
	var req agentapi.JWTRequest
	if err := decodeAgentBody(r, &req); err != nil {
		s.writeAgentError(w, err)
		return
	}
	if len(req.Audience) == 0 || containsString(req.Audience, "") {
		s.writeAgentError(w, agentErr(http.StatusBadRequest, agentapi.CodeBadRequest, "audience must be given, without empty values"))
		return
	}
	e, ok := s.agents.entry(s.agentParents(a), req.EntryID)
	if !ok {
		s.writeAgentError(w, agentErr(http.StatusForbidden, agentapi.CodeNotParent, "entry %q is not parented to %s or its node selectors", req.EntryID, a.SPIFFEID))
		return
	}
	jwt, err := s.jwtIssuer()
	if err != nil {
		s.writeAgentError(w, err)
		return
	}
	token, exp, err := jwt.Mint(r.Context(), e.SPIFFEID, req.Audience, e.JWTSVIDTTL)
	if err != nil {
		s.writeAgentError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, agentapi.JWTResponse{Token: token, ExpiresAt: exp})
}

// encodeTrust converts the Workload API's trust to its wire form; nil
// while sealed.
func (s *Server) encodeTrust(t *workload.Trust) (*agentapi.Trust, error) {
	if len(t.X509Authorities) == 0 {
		return nil, nil
	}
	td, err := spiffeid.TrustDomainFromString(s.cfg.TrustDomain)
	if err != nil {
		return nil, err
	}
	jwks, err := jwtbundle.FromJWTAuthorities(td, t.JWTAuthorities).Marshal()
	if err != nil {
		return nil, fmt.Errorf("encoding the JWT bundle: %w", err)
	}
	out := &agentapi.Trust{JWTBundle: jwks, X509Signer: t.X509Signer}
	for _, c := range t.X509Authorities {
		out.X509Roots = append(out.X509Roots, c.Raw)
	}
	return out, nil
}

// handleAgentSync streams the agent's entries: all of them first, then
// each change as it happens, a digest every agents.sync_interval, the
// trust whenever it changes, and an eviction notice before the end.
func (s *Server) handleAgentSync(w http.ResponseWriter, r *http.Request, a storage.Agent) {
	ctx := r.Context()
	trust := workloadAuthority{s}.Trust()
	wire, err := s.encodeTrust(trust)
	if err != nil || wire == nil {
		s.writeAgentError(w, errors.Join(ErrSealed, err))
		return
	}
	sub, full := s.agents.subscribe(s.agentParents(a))
	defer s.agents.unsubscribe(sub)
	full.Trust = wire
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := agentapi.NewEncoder(w)
	send := func(m *agentapi.SyncMessage) bool {
		if err := enc.Encode(m); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send(full) {
		return
	}
	tick := time.NewTicker(s.cfg.Agents.SyncInterval.D())
	defer tick.Stop()
	for {
		changed := s.ids.updates.Changed()
		select {
		case <-ctx.Done():
			return
		case m, ok := <-sub.ch:
			if !ok {
				if sub.evicted {
					send(&agentapi.SyncMessage{Kind: agentapi.KindEvicted})
				}
				return
			}
			if !send(m) {
				return
			}
		case <-changed:
			if t := (workloadAuthority{s}).Trust(); t != trust {
				wire, err := s.encodeTrust(t)
				if err != nil {
					s.log.Error("encoding trust for an agent", "node", a.ID, "err", err)
					return
				}
				trust = t
				if wire != nil && !send(&agentapi.SyncMessage{Kind: agentapi.KindTrust, Trust: wire}) {
					return
				}
			}
		case <-tick.C:
			// Another node may have evicted the agent or revoked its SVID.
			if _, err := s.agentInGoodStanding(ctx, a.ID); err != nil {
				var ae *agentError
				if errors.As(err, &ae) && ae.code == agentapi.CodeEvicted {
					send(&agentapi.SyncMessage{Kind: agentapi.KindEvicted})
					return
				}
				if ae != nil {
					return
				}
				continue
			}
			if _, err := s.authenticateSVID(r); err != nil {
				return
			}
			s.agents.reconcile(sub)
		}
	}
}

// JoinTokenRequest is the body of POST /v1/agents/join-tokens.
type JoinTokenRequest struct {
	// NodeID, when set, is the only node the token admits.
	NodeID string `json:"node_id,omitempty"`
	// TTL is a Go duration; empty means one hour.
	TTL string `json:"ttl,omitempty"`
	// Groups are node groups the agent joins: it receives the entries
	// parented to spiffe://<td>/sigil/nodes/group/<name>.
	Groups []string `json:"groups,omitempty"`
}

// JoinTokenResponse carries a new join token, shown once.
type JoinTokenResponse struct {
	Token     string `json:"token"`
	NodeID    string `json:"node_id,omitempty"`
	ExpiresAt string `json:"expires_at"`
}

func (s *Server) handleJoinTokenCreate(w http.ResponseWriter, r *http.Request) {
	var req JoinTokenRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.NodeID != "" {
		if err := agentapi.CheckNodeID(req.NodeID); err != nil {
			writeErrors(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	for _, g := range req.Groups {
		if err := agentapi.CheckNodeID(g); err != nil {
			writeErrors(w, http.StatusBadRequest, "group: "+err.Error())
			return
		}
	}
	ttl := defaultJoinTokenTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			writeErrors(w, http.StatusBadRequest, "ttl must be a positive duration such as 1h")
			return
		}
		ttl = d
	}
	if maxTTL := s.cfg.Agents.JoinTokenMaxTTL.D(); ttl > maxTTL {
		writeErrors(w, http.StatusBadRequest, fmt.Sprintf("ttl %s exceeds agents.join_token_max_ttl %s", ttl, maxTTL))
		return
	}
	var raw [joinTokenBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		s.writeAdminError(w, err)
		return
	}
	token := base64.RawURLEncoding.EncodeToString(raw[:])
	now := s.clock()
	jt := storage.JoinToken{Hash: tokenHash(token), NodeID: req.NodeID, Groups: req.Groups, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	detail := "node=" + req.NodeID + " groups=" + strings.Join(req.Groups, ",") + " expires=" + jt.ExpiresAt.UTC().Format(time.RFC3339)
	if err := s.audit(r.Context(), tlog.Entry{Kind: tlog.KindAgentToken, Subject: tlog.Subject{Path: "agent/" + req.NodeID, Detail: detail}}); err != nil {
		s.writeAdminError(w, err)
		return
	}
	if err := s.store.CreateJoinToken(r.Context(), jt); err != nil {
		s.writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, JoinTokenResponse{Token: token, NodeID: req.NodeID, ExpiresAt: jt.ExpiresAt.UTC().Format(time.RFC3339)})
}

// AgentJSON is an agent in the admin API.
type AgentJSON struct {
	NodeID      string   `json:"node_id"`
	SPIFFEID    string   `json:"spiffe_id"`
	Attestation string   `json:"attestation"`
	Selectors   []string `json:"selectors"`
	Serial      string   `json:"serial"`
	NotAfter    string   `json:"not_after"`
	AttestedAt  string   `json:"attested_at"`
	EvictedAt   string   `json:"evicted_at,omitempty"`
}

func agentToJSON(a storage.Agent) AgentJSON {
	j := AgentJSON{
		NodeID: a.ID, SPIFFEID: a.SPIFFEID, Attestation: a.Attestation, Selectors: a.Selectors, Serial: a.Serial,
		NotAfter: a.NotAfter.UTC().Format(time.RFC3339), AttestedAt: a.AttestedAt.UTC().Format(time.RFC3339),
	}
	if a.Evicted() {
		j.EvictedAt = a.EvictedAt.UTC().Format(time.RFC3339)
	}
	return j
}

func (s *Server) handleAgentList(w http.ResponseWriter, r *http.Request) {
	limit, ok := queryLimit(w, r)
	if !ok {
		return
	}
	list, err := s.store.ListAgents(r.Context(), r.URL.Query().Get("after"), limit)
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	writeList(w, "agents", list, agentToJSON)
}

func (s *Server) handleAgentGet(w http.ResponseWriter, r *http.Request) {
	a, err := s.store.GetAgent(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, agentToJSON(a))
}

// handleAgentEvict marks the agent evicted, revokes every unexpired
// certificate signed for it (its SVIDs and its workloads') and ends its
// sync streams. Evicting an evicted agent revokes what is left.
func (s *Server) handleAgentEvict(w http.ResponseWriter, r *http.Request) {
	a, err := s.EvictAgent(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, agentToJSON(a))
}

// EvictAgent evicts the agent of node id; see handleAgentEvict.
func (s *Server) EvictAgent(ctx context.Context, id string) (storage.Agent, error) {
	auth, err := s.Authority()
	if err != nil {
		return storage.Agent{}, err
	}
	a, err := s.store.GetAgent(ctx, id)
	if err != nil {
		return storage.Agent{}, err
	}
	if err := s.audit(ctx, tlog.Entry{Kind: tlog.KindAgentEvict, Subject: tlog.Subject{Path: "agent/" + id, Detail: a.SPIFFEID}}); err != nil {
		return storage.Agent{}, err
	}
	if !a.Evicted() {
		a.EvictedAt, a.UpdatedAt = s.clock(), s.clock()
		if err := s.store.PutAgent(ctx, a, a.Revision); err != nil {
			return storage.Agent{}, err
		}
		a.Revision++
	}
	s.agents.evict(a.SPIFFEID)
	certs, err := s.store.AgentCertificates(ctx, id, s.clock())
	if err != nil {
		return a, err
	}
	var errs []error
	for _, c := range certs {
		rec, err := auth.Revoke(ctx, c.Serial, reasonPrivilegeWithdrawn)
		if errors.Is(err, ca.ErrAlreadyRevoked) {
			s.markRevoked(c.Serial)
			continue
		}
		if err != nil && rec.Serial == "" {
			errs = append(errs, err)
			continue
		}
		s.markRevoked(c.Serial)
		if err := s.audit(ctx, tlog.Entry{Kind: tlog.KindCertRevoke, Subject: tlog.Subject{
			Serial: rec.Serial, CertSHA256: sha256.Sum256(rec.DER), Detail: ReasonName(reasonPrivilegeWithdrawn)}}); err != nil {
			errs = append(errs, err)
		}
	}
	s.log.Info("agent evicted", "node", id, "revoked", len(certs))
	return a, errors.Join(errs...)
}

// checkParent refuses a registration entry parent that is neither an
// agent ID nor a node selector parent.
func (s *Server) checkParent(e entry.Entry) error {
	if e.ParentID == "" {
		return nil
	}
	td := s.cfg.TrustDomain
	if _, ok := agentapi.NodeOf(td, e.ParentID); ok {
		return nil
	}
	if _, ok := agentapi.ParentSelector(td, e.ParentID); ok {
		return nil
	}
	return &entry.FieldError{Field: "parent_id", Reason: fmt.Sprintf("%q is neither an agent ID (%s) nor a node selector (%s)", e.ParentID,
		agentapi.AgentID(td, "<node>"), "spiffe://"+td+agentapi.NodesPath+"<type>/<value>")}
}

// agentParents are the ParentIDs whose entries the agent gets: its own
// SPIFFE ID first, then one per node selector.
func (s *Server) agentParents(a storage.Agent) []string {
	parents := []string{a.SPIFFEID}
	for _, sel := range a.Selectors {
		if p, ok := agentapi.SelectorParent(s.cfg.TrustDomain, sel); ok {
			parents = append(parents, p)
		}
	}
	return parents
}
