package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sigil-pki/sigil/identity/agentapi"
	"github.com/sigil-pki/sigil/identity/entry"
	"github.com/sigil-pki/sigil/identity/workload"
)

// emptyTrust is served before the first trust arrives: nothing to trust.
var emptyTrust = &workload.Trust{}

// MatchingEntries implements workload.Entries over the entries the server
// gave this agent.
func (a *Agent) MatchingEntries(_ context.Context, selectors []string) ([]entry.Entry, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.evicted {
		return nil, nil
	}
	var out []entry.Entry
	for _, e := range a.entries {
		if e.Matches(selectors) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(x, y entry.Entry) int { return strings.Compare(x.ID, y.ID) })
	return out, nil
}

// Trust implements workload.Authority.
func (a *Agent) Trust() *workload.Trust {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.trust == nil || a.evicted {
		return emptyTrust
	}
	return a.trust
}

// IssueX509SVID implements workload.Authority: it sends a certificate
// request signed with key (which stays here) for the entry, and checks
// that the answer is an SVID for that entry over that key.
func (a *Agent) IssueX509SVID(ctx context.Context, e entry.Entry, key crypto.Signer) (*x509.Certificate, []*x509.Certificate, error) {
	if a.isEvicted() {
		return nil, nil, ErrEvicted
	}
	csr, err := csrFor(key)
	if err != nil {
		return nil, nil, err
	}
	var resp agentapi.SignResponse
	if err := a.call(ctx, agentapi.PathSign, agentapi.SignRequest{Requests: []agentapi.CSRForEntry{{EntryID: e.ID, CSR: csr}}}, &resp); err != nil {
		return nil, nil, err
	}
	if len(resp.SVIDs) != 1 || resp.SVIDs[0].EntryID != e.ID {
		return nil, nil, fmt.Errorf("the server answered %d SVIDs for one request", len(resp.SVIDs))
	}
	chain, err := parseChain(resp.SVIDs[0].Chain)
	if err != nil {
		return nil, nil, fmt.Errorf("SVID for %s: %w", e.SPIFFEID, err)
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != e.SPIFFEID {
		return nil, nil, fmt.Errorf("the server signed %v, not %s", leaf.URIs, e.SPIFFEID)
	}
	if !samePublicKey(leaf.PublicKey, key.Public()) {
		return nil, nil, fmt.Errorf("the SVID for %s is not over the key asked for", e.SPIFFEID)
	}
	return leaf, chain[1:], nil
}

// MintJWTSVID implements workload.Authority: the server mints and logs.
func (a *Agent) MintJWTSVID(ctx context.Context, e entry.Entry, audience []string) (string, time.Time, error) {
	if a.isEvicted() {
		return "", time.Time{}, ErrEvicted
	}
	var resp agentapi.JWTResponse
	if err := a.call(ctx, agentapi.PathJWT, agentapi.JWTRequest{EntryID: e.ID, Audience: audience}, &resp); err != nil {
		return "", time.Time{}, err
	}
	return resp.Token, resp.ExpiresAt, nil
}

func (a *Agent) isEvicted() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.evicted
}
