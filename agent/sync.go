package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigil-pki/sigil/identity/agentapi"
	"github.com/sigil-pki/sigil/identity/entry"
	"github.com/sigil-pki/sigil/identity/workload"
)

// errResync ends a sync stream whose result disagrees with the server's
// digest; the next stream starts with a full set.
var errResync = errors.New("entry digest mismatch: fetching the full set again")

// syncLoop keeps a sync stream open, reconnecting with backoff.
func (a *Agent) syncLoop(ctx context.Context, stop context.CancelCauseFunc) {
	wait := minBackoff
	for ctx.Err() == nil {
		err := a.syncOnce(ctx, &wait)
		switch {
		case errors.Is(err, ErrEvicted), errorCode(err) == agentapi.CodeEvicted:
			a.onEvicted(stop)
			return
		case ctx.Err() != nil:
			return
		case errors.Is(err, errResync):
			a.log.Warn("entry sync", "err", err)
			continue
		default:
			a.log.Warn("entry sync stream ended; reconnecting", "err", err)
		}
		if !backoff(ctx, &wait) {
			return
		}
	}
}

// syncOnce runs one sync stream until it fails.
func (a *Agent) syncOnce(ctx context.Context, wait *time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.cfg.ServerURL+agentapi.PathSync, nil)
	if err != nil {
		return err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var doc agentapi.ErrorDocument
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		se := &serverError{status: resp.StatusCode}
		if json.Unmarshal(raw, &doc) == nil {
			se.doc = doc
		}
		return se
	}
	// A silent stream is a dead one: the watchdog cuts it.
	alive := make(chan struct{}, 1)
	go func() {
		t := time.NewTimer(a.cfg.SyncTimeout)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-alive:
				t.Reset(a.cfg.SyncTimeout)
			case <-t.C:
				a.log.Warn("entry sync stream silent; reconnecting", "timeout", a.cfg.SyncTimeout)
				cancel()
				return
			}
		}
	}()
	dec := agentapi.NewDecoder(resp.Body)
	for first := true; ; first = false {
		m, err := dec.Decode()
		if err != nil {
			return fmt.Errorf("reading the sync stream: %w", err)
		}
		select {
		case alive <- struct{}{}:
		default:
		}
		if first && m.Kind != agentapi.KindFull {
			return fmt.Errorf("sync stream began with %q, not a full set", m.Kind)
		}
		if err := a.apply(m); err != nil {
			return err
		}
		*wait = minBackoff
	}
}

// apply applies one sync message.
func (a *Agent) apply(m *agentapi.SyncMessage) error {
	switch m.Kind {
	case agentapi.KindEvicted:
		return ErrEvicted
	case agentapi.KindTrust:
		return a.setTrust(m.Trust)
	}
	if m.Kind == agentapi.KindFull {
		if err := a.setTrust(m.Trust); err != nil {
			return err
		}
	}
	a.mu.Lock()
	next := a.entries
	if m.Kind == agentapi.KindFull {
		if len(m.Parents) == 0 || m.Parents[0] != a.agentID {
			a.mu.Unlock()
			return fmt.Errorf("the server's parents for this agent %v do not start with %s", m.Parents, a.agentID)
		}
		a.parents = slices.Clone(m.Parents)
		next = make(map[string]entry.Entry, len(m.Upserts))
	} else if m.Kind == agentapi.KindDelta {
		next = maps.Clone(a.entries)
	}
	for _, w := range m.Upserts {
		e := w.Entry()
		if !slices.Contains(a.parents, e.ParentID) {
			a.mu.Unlock()
			return fmt.Errorf("the server sent entry %s parented to %s, not to this agent or its node selectors", e.ID, e.ParentID)
		}
		next[e.ID] = e
	}
	for _, id := range m.Deleted {
		delete(next, id)
	}
	revs := make(map[string]int64, len(next))
	for id, e := range next {
		revs[id] = e.Revision
	}
	digest := agentapi.Digest(revs)
	changed := m.Kind != agentapi.KindReconcile
	a.entries, a.digest, a.lastSync = next, digest, a.now()
	a.mu.Unlock()
	if changed {
		a.updates.Notify()
	}
	if digest != m.Digest {
		return errResync
	}
	if m.Kind == agentapi.KindFull {
		a.markReady()
	}
	return nil
}

// setTrust installs the trust the server sent.
func (a *Agent) setTrust(w *agentapi.Trust) error {
	t, err := decodeTrust(a.cfg.TrustDomain, w)
	if err != nil {
		return err
	}
	a.mu.Lock()
	same := a.wire != nil && a.wire.X509Signer == w.X509Signer && slices.EqualFunc(a.wire.X509Roots, w.X509Roots, bytesEqual) &&
		string(a.wire.JWTBundle) == string(w.JWTBundle)
	if !same {
		a.trust, a.wire = t, w
	}
	a.mu.Unlock()
	if !same {
		a.updates.Notify()
	}
	return nil
}

func bytesEqual(x, y []byte) bool { return string(x) == string(y) }

// decodeTrust turns the wire trust into the Workload API's.
func decodeTrust(td string, w *agentapi.Trust) (*workload.Trust, error) {
	if w == nil {
		return nil, errors.New("no trust in the message")
	}
	roots := make([]*x509.Certificate, 0, len(w.X509Roots))
	for i, der := range w.X509Roots {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("trust: root %d: %w", i, err)
		}
		roots = append(roots, c)
	}
	tdID, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return nil, err
	}
	jb, err := jwtbundle.Parse(tdID, w.JWTBundle)
	if err != nil {
		return nil, fmt.Errorf("trust: JWT bundle: %w", err)
	}
	keys := make(map[string]crypto.PublicKey, len(jb.JWTAuthorities()))
	maps.Copy(keys, jb.JWTAuthorities())
	return &workload.Trust{X509Authorities: roots, JWTAuthorities: keys, X509Signer: w.X509Signer}, nil
}
