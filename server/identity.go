package server

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigil-pki/sigil/ca"
	"github.com/sigil-pki/sigil/identity/entry"
	"github.com/sigil-pki/sigil/identity/jwtsvid"
	"github.com/sigil-pki/sigil/identity/workload"
	"github.com/sigil-pki/sigil/storage"
	"github.com/sigil-pki/sigil/tlog"
)

// watchInterval is how often the server compares its in-memory snapshots
// (entries, trust, policies, revoked certificates) with storage and the
// CA, to pick up what another node or a background task changed; changes
// made through this node are picked up at once.
const watchInterval = 500 * time.Millisecond

// identityState is what the Workload API serves from memory: every
// registration entry, the current trust, and the broadcast that wakes
// open streams when either changes.
type identityState struct {
	updates workload.Broadcast

	reloadMu  sync.Mutex // serialises entry reloads
	mu        sync.RWMutex
	entries   []entry.Entry
	entriesFP string
	revision  int64 // storage's entries revision the snapshot was read at
	loaded    bool

	trust atomic.Pointer[trustSnapshot]
}

// trustSnapshot is a workload.Trust with the fingerprint it was built for.
type trustSnapshot struct {
	fp    string
	trust *workload.Trust
}

// noTrust is served while sealed: nothing to trust, nothing signs.
var noTrust = &workload.Trust{}

// refreshEntries re-reads every entry and, when any changed, replaces the
// snapshot and wakes the streams.
func (s *Server) refreshEntries(ctx context.Context) error {
	s.ids.reloadMu.Lock()
	defer s.ids.reloadMu.Unlock()
	return s.reloadEntriesLocked(ctx)
}

// entryChanged is called after this node stored one entry change (prev
// nil for a create, next nil for a delete): when no other change came in
// between (the entries revision moved by one), the snapshot and the
// agents' sets are patched with it alone, so a change costs in proportion
// to itself rather than to every entry; otherwise everything is reloaded.
// A failure is logged; the periodic reload retries.
func (s *Server) entryChanged(ctx context.Context, prev, next *entry.Entry) {
	st := &s.ids
	st.reloadMu.Lock()
	defer st.reloadMu.Unlock()
	rev, err := s.store.EntriesRevision(ctx)
	if err == nil {
		st.mu.RLock()
		patch := st.loaded && rev == st.revision+1
		st.mu.RUnlock()
		if patch {
			s.patchEntries(rev, prev, next)
			return
		}
		err = s.reloadEntriesLocked(ctx)
	}
	if err != nil {
		s.log.Error("reloading registration entries", "err", err)
	}
}

// patchEntries applies one change to the snapshot, which stays sorted by
// ID, and to the agents' sets.
func (s *Server) patchEntries(rev int64, prev, next *entry.Entry) {
	st := &s.ids
	st.mu.Lock()
	all := slices.Clone(st.entries)
	id := ""
	if prev != nil {
		id = prev.ID
	} else if next != nil {
		id = next.ID
	}
	i, found := slices.BinarySearchFunc(all, id, func(e entry.Entry, id string) int { return strings.Compare(e.ID, id) })
	switch {
	case next == nil && found:
		all = slices.Delete(all, i, i+1)
	case next != nil && found:
		all[i] = *next
	case next != nil:
		all = slices.Insert(all, i, *next)
	}
	st.entries, st.entriesFP, st.revision = all, entriesFingerprint(all), rev
	st.mu.Unlock()
	s.agents.apply(prev, next)
	st.updates.Notify()
}

// entriesFingerprint names a snapshot's content: every ID and revision.
func entriesFingerprint(all []entry.Entry) string {
	var fp strings.Builder
	fp.Grow(len(all) * 40)
	for _, e := range all {
		fp.WriteString(e.ID)
		fp.WriteByte(':')
		fp.WriteString(strconv.FormatInt(e.Revision, 10))
		fp.WriteByte(',')
	}
	return fp.String()
}

// reloadEntriesLocked re-reads every entry; reloadMu is held.
func (s *Server) reloadEntriesLocked(ctx context.Context) error {
	st := &s.ids
	rev, err := s.store.EntriesRevision(ctx)
	if err != nil {
		return fmt.Errorf("reading the entries revision: %w", err)
	}
	var all []entry.Entry
	f := storage.EntryFilter{Limit: storage.MaxListLimit}
	for {
		page, err := s.store.ListEntries(ctx, f)
		if err != nil {
			return fmt.Errorf("loading registration entries: %w", err)
		}
		for _, e := range page {
			all = append(all, entry.Entry(e))
		}
		if len(page) < f.Limit {
			break
		}
		f.AfterID = page[len(page)-1].ID
	}
	fp := entriesFingerprint(all)
	st.mu.Lock()
	changed := !st.loaded || fp != st.entriesFP
	st.entries, st.entriesFP, st.revision, st.loaded = all, fp, rev, true
	st.mu.Unlock()
	if changed {
		s.agents.update(all)
		st.updates.Notify()
	}
	return nil
}

// entriesChanged is called after this node changed an entry: streams see
// the change at once. A failed reload is logged; the periodic reload
// retries.
func (s *Server) entriesChanged(ctx context.Context) {
	if err := s.refreshEntries(ctx); err != nil {
		s.log.Error("reloading registration entries", "err", err)
	}
}

// entriesLoaded loads the entry snapshot if it has not been yet.
func (s *Server) entriesLoaded(ctx context.Context) error {
	s.ids.mu.RLock()
	loaded := s.ids.loaded
	s.ids.mu.RUnlock()
	if loaded {
		return nil
	}
	return s.refreshEntries(ctx)
}

// workloadEntries finds the registration entries a workload matches in the
// in-memory snapshot.
type workloadEntries struct{ s *Server }

func (w workloadEntries) MatchingEntries(ctx context.Context, selectors []string) ([]entry.Entry, error) {
	if err := w.s.entriesLoaded(ctx); err != nil {
		return nil, err
	}
	st := &w.s.ids
	st.mu.RLock()
	defer st.mu.RUnlock()
	var out []entry.Entry
	for _, e := range st.entries {
		// An entry with a parent is served by that agent, not here.
		if e.ParentID == "" && e.Matches(selectors) {
			out = append(out, e)
		}
	}
	return out, nil
}

// refreshTrust rebuilds the trust snapshot when the roots, the signing
// intermediate or the JWT keys changed, and wakes the streams.
func (s *Server) refreshTrust() *workload.Trust {
	s.mu.Lock()
	auth, jwt := s.authority, s.jwt
	s.mu.Unlock()
	if auth == nil || jwt == nil {
		return noTrust
	}
	roots := auth.Roots()
	var fp strings.Builder
	for _, r := range roots {
		fp.WriteString(ca.IssuerID(r))
		fp.WriteByte(',')
	}
	signer := ""
	if inters := auth.Intermediates(); len(inters) > 0 {
		signer = ca.IssuerID(inters[0])
	}
	fp.WriteString(signer)
	fp.WriteByte('|')
	fp.WriteString(jwt.KeyIDs())
	cur := s.ids.trust.Load()
	if cur != nil && cur.fp == fp.String() {
		return cur.trust
	}
	next := &trustSnapshot{fp: fp.String(), trust: &workload.Trust{
		X509Authorities: roots,
		JWTAuthorities:  jwt.PublicKeys(),
		X509Signer:      signer,
	}}
	if s.ids.trust.CompareAndSwap(cur, next) {
		s.ids.updates.Notify()
		return next.trust
	}
	return s.ids.trust.Load().trust
}

// watch keeps the entry, trust, policy and revocation snapshots current
// until ctx is done.
func (s *Server) watch(ctx context.Context) {
	tick := time.NewTicker(watchInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.refreshTrust()
		if err := s.entriesIfChanged(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("reloading registration entries", "err", err)
		}
		if err := s.refreshPolicies(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("reloading access policies", "err", err)
		}
		if err := s.refreshRevoked(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("reloading revoked certificates", "err", err)
		}
	}
}

// entriesIfChanged reloads the entry snapshot when storage's entries
// revision moved.
func (s *Server) entriesIfChanged(ctx context.Context) error {
	rev, err := s.store.EntriesRevision(ctx)
	if err != nil {
		return err
	}
	s.ids.mu.RLock()
	same := s.ids.loaded && s.ids.revision == rev
	s.ids.mu.RUnlock()
	if same {
		return nil
	}
	return s.refreshEntries(ctx)
}

// workloadAuthority issues SVIDs through the CA and the JWT issuer, so
// each is recorded and logged before the workload receives it.
type workloadAuthority struct{ s *Server }

func (w workloadAuthority) IssueX509SVID(ctx context.Context, e entry.Entry, key crypto.Signer) (*x509.Certificate, []*x509.Certificate, error) {
	auth, err := w.s.Authority()
	if err != nil {
		return nil, nil, err
	}
	iss, err := auth.Issue(context.WithValue(ctx, callerKey{}, e.SPIFFEID), ca.Request{
		Profile: ca.ProfileSVID, SPIFFEID: e.SPIFFEID, DNSNames: e.DNSNames, PublicKey: key.Public(), TTL: e.X509SVIDTTL,
	})
	if err != nil {
		return nil, nil, err
	}
	return iss.Certificate, iss.Chain, nil
}

func (w workloadAuthority) MintJWTSVID(ctx context.Context, e entry.Entry, audience []string) (string, time.Time, error) {
	jwt, err := w.s.jwtIssuer()
	if err != nil {
		return "", time.Time{}, err
	}
	return jwt.Mint(context.WithValue(ctx, callerKey{}, e.SPIFFEID), e.SPIFFEID, audience, e.JWTSVIDTTL)
}

func (w workloadAuthority) Trust() *workload.Trust {
	if t := w.s.ids.trust.Load(); t != nil {
		return t.trust
	}
	return w.s.refreshTrust()
}

// jwtIssuer returns the JWT-SVID issuer, or ErrSealed.
func (s *Server) jwtIssuer() (*jwtsvid.Issuer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jwt == nil {
		return nil, s.notReadyLocked()
	}
	return s.jwt, nil
}

// openJWT loads (or, the first time, creates) the JWT-SVID keys.
func (s *Server) openJWT(ctx context.Context) (*jwtsvid.Issuer, error) {
	return jwtsvid.Open(ctx, jwtsvid.Config{
		Sealer:      s.barrier,
		IsNotFound:  func(err error) bool { return errors.Is(err, storage.ErrNotFound) },
		Recorder:    recorder{s},
		TrustDomain: s.cfg.TrustDomain,
		RotateEvery: s.cfg.CA.JWT.RotateEvery.D(),
		PrepareLead: s.cfg.CA.JWT.PrepareLead.D(),
		MaxTTL:      s.cfg.CA.Leaf.MaxTTL.D(),
		Clock:       s.clock,
		Logger:      s.log,
	})
}

// RecordJWT logs a JWT-SVID mint: who, for whom, which key, until when, and
// the token's hash; never the token.
func (r recorder) RecordJWT(ctx context.Context, m jwtsvid.Minted) error {
	l, err := r.s.transparencyLog()
	if err != nil {
		return err
	}
	_, err = l.Append(ctx, tlog.Entry{
		Kind:  tlog.KindJWTIssue,
		Time:  m.IssuedAt,
		Actor: actor(ctx),
		Subject: tlog.Subject{
			Path: m.SPIFFEID,
			Detail: fmt.Sprintf("aud=%s kid=%s exp=%s token_sha256=%s",
				strings.Join(m.Audience, ","), m.KeyID, m.Expiry.UTC().Format(time.RFC3339), hex.EncodeToString(m.TokenSHA256[:])),
		},
	})
	return err
}

// RotateJWT makes a new JWT-SVID key sign from now on; the previous one
// stays in the bundle until its tokens have expired.
func (s *Server) RotateJWT(ctx context.Context) (string, error) {
	jwt, err := s.jwtIssuer()
	if err != nil {
		return "", err
	}
	kid, err := jwt.Rotate(ctx)
	if err != nil {
		return "", err
	}
	s.refreshTrust()
	if err := s.audit(ctx, tlog.Entry{Kind: tlog.KindOperatorRotate, Subject: tlog.Subject{Detail: "JWT-SVID signing key " + kid}}); err != nil {
		return kid, err
	}
	return kid, nil
}

// maintainJWT prepares and retires JWT keys on the maintenance node, and
// reloads them elsewhere.
func (s *Server) maintainJWT(ctx context.Context, leader bool) {
	jwt, err := s.jwtIssuer()
	if err != nil {
		return
	}
	if leader {
		_, err = jwt.Maintain(ctx)
	} else {
		_, err = jwt.Reload(ctx)
	}
	if err != nil && ctx.Err() == nil {
		s.log.Error("maintaining JWT-SVID keys", "err", err)
	}
	s.refreshTrust()
}

// SPIFFEBundle returns the trust domain's bundle in the SPIFFE bundle
// format: the X.509 roots and the JWT-SVID keys, with a refresh hint short
// enough that a relying party learns a new JWT key before it signs.
func (s *Server) SPIFFEBundle() ([]byte, error) {
	t := workloadAuthority{s}.Trust()
	if t == noTrust {
		s.mu.Lock()
		err := s.notReadyLocked()
		s.mu.Unlock()
		return nil, err
	}
	td, err := spiffeid.TrustDomainFromString(s.cfg.TrustDomain)
	if err != nil {
		return nil, err
	}
	b := spiffebundle.New(td)
	b.SetX509Authorities(t.X509Authorities)
	b.SetJWTAuthorities(t.JWTAuthorities)
	b.SetRefreshHint(max(s.cfg.CA.JWT.PrepareLead.D()/2, time.Minute))
	return b.Marshal()
}

func (s *Server) handleSPIFFEBundle(w http.ResponseWriter, r *http.Request) {
	body, err := s.SPIFFEBundle()
	if err != nil {
		if errors.Is(err, ErrSealed) || errors.Is(err, ErrNotInitialized) {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		s.writePublicError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=60")
	w.Write(body)
}

func (s *Server) handleRotateJWT(w http.ResponseWriter, r *http.Request) {
	kid, err := s.RotateJWT(r.Context())
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"kid": kid})
}
