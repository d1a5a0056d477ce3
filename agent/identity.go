package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/sigil-pki/sigil/identity/agentapi"
	"github.com/sigil-pki/sigil/identity/entry"
)

// serverError is an error answer of the server in the agent protocol.
type serverError struct {
	status int
	doc    agentapi.ErrorDocument
}

func (e *serverError) Error() string {
	return fmt.Sprintf("server answered %d (%s): %v", e.status, e.doc.Code, e.doc.Errors)
}

// errorCode returns the protocol error code of err, or "".
func errorCode(err error) string {
	var se *serverError
	if errors.As(err, &se) {
		return se.doc.Code
	}
	return ""
}

// call POSTs in as JSON to path and decodes a 200 answer into out.
func (a *Agent) call(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.cfg.ServerURL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	c := a.client
	if path == agentapi.PathAttest {
		c = a.attestClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("calling %s: %w", path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, agentapi.MaxLine))
	if err != nil {
		return fmt.Errorf("reading the answer of %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		se := &serverError{status: resp.StatusCode}
		if json.Unmarshal(raw, &se.doc) != nil || se.doc.Code == "" {
			se.doc.Code = agentapi.CodeUnavailable
		}
		if se.doc.Code == agentapi.CodeEvicted {
			a.evictedNow()
		}
		return se
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decoding the answer of %s: %w", path, err)
	}
	return nil
}

// attestWithRetry attests, retrying while the server is unreachable or
// unavailable; a refused credential ends it.
func (a *Agent) attestWithRetry(ctx context.Context) error {
	wait := minBackoff
	for {
		err := a.attest(ctx)
		if err == nil {
			return nil
		}
		switch errorCode(err) {
		case agentapi.CodeUnauthenticated, agentapi.CodeBadRequest:
			return fmt.Errorf("attesting: %w", err)
		case agentapi.CodeEvicted:
			return ErrEvicted
		}
		a.log.Warn("attestation failed; retrying", "err", err)
		if !backoff(ctx, &wait) {
			return ctx.Err()
		}
	}
}

// attest obtains an agent SVID with the join token (used once) or the
// node certificate.
func (a *Agent) attest(ctx context.Context) error {
	key, csr, err := newKey()
	if err != nil {
		return err
	}
	a.mu.Lock()
	token := a.cfg.JoinToken
	a.mu.Unlock()
	if token == "" && a.cfg.NodeCertificate == nil {
		return &serverError{status: http.StatusUnauthorized, doc: agentapi.ErrorDocument{
			Code: agentapi.CodeUnauthenticated, Errors: []string{"no credential left to attest with (the join token was used): make a new one"}}}
	}
	req := agentapi.AttestRequest{JoinToken: token, CSR: csr}
	if token != "" {
		req.NodeID = a.cfg.NodeID
	}
	var resp agentapi.SVIDResponse
	if err := a.call(ctx, agentapi.PathAttest, req, &resp); err != nil {
		if errorCode(err) == agentapi.CodeUnauthenticated {
			// A join token is single-use: never send it twice.
			a.forgetToken()
		}
		return err
	}
	a.forgetToken()
	if err := a.setSVID(resp, key); err != nil {
		return err
	}
	// The join token is spent: keep the SVID it bought at once, so that a
	// crash now does not leave the node without an identity.
	if a.cfg.Cache != nil {
		if st, err := a.snapshot(); err != nil || a.cfg.Cache.save(st) != nil {
			a.log.Error("writing the agent SVID to the cache failed; it is kept in memory", "err", err)
		}
	}
	a.log.Info("attested", "node", resp.NodeID, "spiffe_id", resp.SPIFFEID)
	return nil
}

func (a *Agent) forgetToken() {
	a.mu.Lock()
	a.cfg.JoinToken = ""
	a.mu.Unlock()
}

// setSVID installs a new agent SVID.
func (a *Agent) setSVID(resp agentapi.SVIDResponse, key *ecdsa.PrivateKey) error {
	chain, err := parseChain(resp.Chain)
	if err != nil {
		return fmt.Errorf("agent SVID: %w", err)
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != resp.SPIFFEID {
		return fmt.Errorf("agent SVID names %v, not %s", leaf.URIs, resp.SPIFFEID)
	}
	if node, ok := agentapi.NodeOf(a.cfg.TrustDomain, resp.SPIFFEID); !ok || node != resp.NodeID {
		return fmt.Errorf("agent SVID %s is not an agent ID of %s for node %s", resp.SPIFFEID, a.cfg.TrustDomain, resp.NodeID)
	}
	if !samePublicKey(leaf.PublicKey, key.Public()) {
		return errors.New("agent SVID is not for the key this agent asked for")
	}
	cert := &tls.Certificate{Certificate: resp.Chain, PrivateKey: key, Leaf: leaf}
	a.mu.Lock()
	a.svid, a.svidAt, a.node, a.agentID = cert, a.now(), resp.NodeID, resp.SPIFFEID
	a.mu.Unlock()
	// Connections made with the old SVID are not reused.
	a.base.CloseIdleConnections()
	return nil
}

// renewAt is when the agent SVID is renewed: half its lifetime, counted
// from when it was received (its NotBefore may be backdated).
func (a *Agent) renewAt() time.Time {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.svid == nil {
		return a.now()
	}
	start := a.svid.Leaf.NotBefore
	if a.svidAt.After(start) {
		start = a.svidAt
	}
	return start.Add(a.svid.Leaf.NotAfter.Sub(start) / 2)
}

// renewLoop renews the agent SVID at half its lifetime; when renewal is
// refused as unauthenticated (the SVID expired or was revoked) it
// re-attests with the node certificate, if there is one.
func (a *Agent) renewLoop(ctx context.Context, stop context.CancelCauseFunc) {
	wait := minBackoff
	for {
		t := time.NewTimer(max(a.renewAt().Sub(a.now()), 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		err := a.renew(ctx)
		switch {
		case err == nil:
			wait = minBackoff
			a.log.Info("agent SVID renewed", "not_after", a.svidNotAfter())
			continue
		case errorCode(err) == agentapi.CodeEvicted:
			a.onEvicted(stop)
			return
		case errorCode(err) == agentapi.CodeUnauthenticated:
			a.log.Warn("agent SVID refused; attesting again", "err", err)
			if aerr := a.attest(ctx); aerr == nil {
				continue
			} else if errorCode(aerr) == agentapi.CodeEvicted {
				a.onEvicted(stop)
				return
			}
		default:
			a.log.Warn("renewing the agent SVID failed; retrying", "err", err)
		}
		if !backoff(ctx, &wait) {
			return
		}
	}
}

func (a *Agent) svidNotAfter() time.Time {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.svid == nil {
		return time.Time{}
	}
	return a.svid.Leaf.NotAfter
}

func (a *Agent) renew(ctx context.Context) error {
	key, csr, err := newKey()
	if err != nil {
		return err
	}
	var resp agentapi.SVIDResponse
	if err := a.call(ctx, agentapi.PathRenew, agentapi.RenewRequest{CSR: csr}, &resp); err != nil {
		return err
	}
	return a.setSVID(resp, key)
}

// evictedNow stops a running agent that any answer of the server said
// was evicted.
func (a *Agent) evictedNow() {
	a.mu.RLock()
	stop := a.stop
	a.mu.RUnlock()
	if stop != nil {
		a.onEvicted(stop)
	}
}

// onEvicted drops every identity and ends Run with ErrEvicted.
func (a *Agent) onEvicted(stop context.CancelCauseFunc) {
	a.mu.Lock()
	a.evicted = true
	a.svid = nil
	a.entries = map[string]entry.Entry{}
	a.mu.Unlock()
	if a.cfg.Cache != nil {
		if err := a.cfg.Cache.Erase(); err != nil {
			a.log.Error("erasing the cache after eviction", "err", err)
		}
	}
	a.updates.Notify()
	a.log.Error("this agent was evicted by the server; stopping")
	stop(ErrEvicted)
}
