package agent

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/sigil-pki/sigil/identity/agentapi"
	"github.com/sigil-pki/sigil/identity/entry"
	"github.com/sigil-pki/sigil/identity/workload"
	"github.com/sigil-pki/sigil/internal/atomicfile"
)

// The cache is two files in the agent's data directory:
//
//   - cache.key: the cache key (a random AES-256 key), sealed: encrypted
//     with AES-256-GCM under the seal key, a separate 32-byte file that
//     can live elsewhere (a tmpfs credential, another volume);
//   - cache.state: the state (agent SVID and key, entries, trust,
//     workload SVIDs and keys, rendered secrets), JSON encrypted with
//     AES-256-GCM under the cache key.
//
// The agent unseals the cache key at start and keeps it in memory only.
// Each ciphertext is bound by its AAD to what it is, so the key file
// cannot be passed off as the state or the reverse. Every write goes to a
// temporary file that is synced and renamed over the old one.

const (
	keyFile   = "cache.key"
	stateFile = "cache.state"
	aadKey    = "sigil-agent-cache-key/v1"
	aadState  = "sigil-agent-cache-state/v1"
)

// Cache is the agent's encrypted on-disk cache. It is safe for
// concurrent use.
type Cache struct {
	dir  string
	aead cipher.AEAD
	mu   sync.Mutex
}

// OpenCache opens (or creates) the cache in dir, unsealing its key with
// the seal key in sealKeyFile (created with 32 random bytes, mode 0600,
// when absent).
func OpenCache(dir, sealKeyFile string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the cache directory: %w", err)
	}
	seal, err := readOrCreateKey(sealKeyFile)
	if err != nil {
		return nil, err
	}
	sealAEAD, err := newAEAD(seal)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, keyFile)
	sealed, err := os.ReadFile(path)
	var key []byte
	switch {
	case errors.Is(err, fs.ErrNotExist):
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		ct, err := seal32(sealAEAD, key, aadKey)
		if err != nil {
			return nil, err
		}
		if err := writeAtomic(path, ct); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("reading the sealed cache key: %w", err)
	default:
		if key, err = open32(sealAEAD, sealed, aadKey); err != nil {
			return nil, fmt.Errorf("unsealing the cache key (wrong seal key?): %w", err)
		}
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	return &Cache{dir: dir, aead: aead}, nil
}

func readOrCreateKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		b = make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := writeAtomic(path, b); err != nil {
			return nil, fmt.Errorf("creating the seal key: %w", err)
		}
		return b, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the seal key: %w", err)
	}
	if len(b) != 32 {
		return nil, fmt.Errorf("seal key %s holds %d bytes, want 32", path, len(b))
	}
	return b, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func seal32(aead cipher.AEAD, plain []byte, aad string) ([]byte, error) {
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, plain, []byte(aad)), nil
}

func open32(aead cipher.AEAD, ct []byte, aad string) ([]byte, error) {
	if len(ct) < aead.NonceSize() {
		return nil, errors.New("ciphertext too short")
	}
	return aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], []byte(aad))
}

// writeAtomic writes b to path, mode 0600, atomically.
func writeAtomic(path string, b []byte) error { return atomicfile.Write(path, b, 0o600) }

// cacheState is what the cache holds.
type cacheState struct {
	NodeID     string           `json:"node_id"`
	AgentID    string           `json:"agent_id"`
	Parents    []string         `json:"parents"`
	AgentChain [][]byte         `json:"agent_chain"`
	AgentKey   []byte           `json:"agent_key"`
	Entries    []agentapi.Entry `json:"entries"`
	Trust      *agentapi.Trust  `json:"trust"`
	// SVIDs are the workload SVIDs handed out, Spares those signed in
	// advance, by entry ID.
	SVIDs  map[string]keptSVID `json:"svids"`
	Spares map[string]keptSVID `json:"spares"`
	// Files are rendered secret files by destination path.
	Files map[string]keptFile `json:"files,omitempty"`
}

// keptSVID is a workload SVID of one entry revision.
type keptSVID struct {
	Revision int64  `json:"revision"`
	Chain    []byte `json:"chain"`
	Key      []byte `json:"key"`
}

// keptFile is the last render of a secret file, until when it is valid,
// and the lease it was made under.
type keptFile struct {
	Content     []byte    `json:"content"`
	NotAfter    time.Time `json:"not_after"`
	LeaseID     string    `json:"lease_id,omitempty"`
	LeaseExpiry time.Time `json:"lease_expiry"`
}

// Save replaces the stored state.
func (c *Cache) save(st *cacheState) error {
	plain, err := json.Marshal(st)
	if err != nil {
		return err
	}
	ct, err := seal32(c.aead, plain, aadState)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return writeAtomic(filepath.Join(c.dir, stateFile), ct)
}

// load returns the stored state, or nil when there is none.
func (c *Cache) load() (*cacheState, error) {
	c.mu.Lock()
	ct, err := os.ReadFile(filepath.Join(c.dir, stateFile))
	c.mu.Unlock()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	plain, err := open32(c.aead, ct, aadState)
	if err != nil {
		return nil, fmt.Errorf("decrypting the cache: %w", err)
	}
	var st cacheState
	if err := json.Unmarshal(plain, &st); err != nil {
		return nil, fmt.Errorf("decoding the cache: %w", err)
	}
	return &st, nil
}

// Erase removes the state and the sealed key: nothing cached can be
// read again.
func (c *Cache) Erase() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(removeIfExists(filepath.Join(c.dir, stateFile)), removeIfExists(filepath.Join(c.dir, keyFile)))
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Keep implements workload.Keeper: the SVID handed out for the entry is
// remembered, and a spare is signed in advance halfway to its rotation,
// so that a rotation can still be handed out while the server is away.
func (a *Agent) Keep(e entry.Entry, chainDER, keyDER []byte) {
	certs, err := x509.ParseCertificates(chainDER)
	if err != nil || len(certs) == 0 {
		return
	}
	leaf, now := certs[0], a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.kept == nil {
		a.kept = map[string]keptSVID{}
	}
	a.kept[e.ID] = keptSVID{Revision: e.Revision, Chain: chainDER, Key: keyDER}
	a.dirty = true
	if a.runCtx == nil {
		return
	}
	start := leaf.NotBefore
	if now.After(start) {
		start = now
	}
	rotateAt := a.cfg.RotateAt
	if rotateAt <= 0 || rotateAt >= 1 {
		rotateAt = workload.DefaultRotateAt
	}
	wait := time.Duration(float64(leaf.NotAfter.Sub(start))*rotateAt) / 2
	if t := a.prefetch[e.ID]; t != nil {
		t.Stop()
	}
	if a.prefetch == nil {
		a.prefetch = map[string]*time.Timer{}
	}
	ctx, until := a.runCtx, start.Add(2*wait)
	a.prefetch[e.ID] = time.AfterFunc(start.Add(wait).Sub(now), func() { a.signSpare(ctx, e, until) })
}

// spareRetry is the wait before another try at a spare that failed.
const spareRetry = 2 * time.Second

// signSpare signs an SVID for e in advance, with a key made here, while
// e is still this agent's at the same revision; a failure is tried again
// until the rotation it is for.
func (a *Agent) signSpare(ctx context.Context, e entry.Entry, until time.Time) {
	if ctx.Err() != nil {
		return
	}
	a.mu.RLock()
	cur, ok := a.entries[e.ID]
	a.mu.RUnlock()
	if !ok || cur.Revision != e.Revision {
		return
	}
	key, _, err := newKey()
	if err != nil {
		return
	}
	leaf, chain, err := a.IssueX509SVID(ctx, e, key)
	if err != nil {
		a.log.Warn("signing a spare SVID in advance failed", "spiffe_id", e.SPIFFEID, "err", err)
		if a.now().Add(spareRetry).Before(until) {
			a.mu.Lock()
			a.prefetch[e.ID] = time.AfterFunc(spareRetry, func() { a.signSpare(ctx, e, until) })
			a.mu.Unlock()
		}
		return
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return
	}
	der := leaf.Raw
	for _, c := range chain {
		der = append(slices.Clip(der), c.Raw...)
	}
	a.mu.Lock()
	if a.spares == nil {
		a.spares = map[string]keptSVID{}
	}
	a.spares[e.ID] = keptSVID{Revision: e.Revision, Chain: der, Key: keyDER}
	a.dirty = true
	a.mu.Unlock()
}

// Kept implements workload.Keeper: the unexpired SVID of the entry's
// revision that expires last, spare or handed out.
func (a *Agent) Kept(e entry.Entry) ([]byte, []byte, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	var best keptSVID
	var bestEnd time.Time
	for _, k := range []keptSVID{a.kept[e.ID], a.spares[e.ID]} {
		if k.Chain == nil || k.Revision != e.Revision {
			continue
		}
		if end := chainNotAfter(k.Chain); end.After(bestEnd) && a.now().Before(end) {
			best, bestEnd = k, end
		}
	}
	return best.Chain, best.Key, best.Chain != nil
}

// Take implements workload.Keeper: the spare of the entry's revision.
func (a *Agent) Take(e entry.Entry) ([]byte, []byte, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k, ok := a.spares[e.ID]
	if !ok {
		return nil, nil, false
	}
	delete(a.spares, e.ID)
	a.dirty = true
	if k.Revision != e.Revision || !a.now().Before(chainNotAfter(k.Chain)) {
		return nil, nil, false
	}
	return k.Chain, k.Key, true
}

// chainNotAfter is the expiry of a concatenated DER chain's leaf (zero
// when it does not parse).
func chainNotAfter(der []byte) time.Time {
	certs, err := x509.ParseCertificates(der)
	if err != nil || len(certs) == 0 {
		return time.Time{}
	}
	return certs[0].NotAfter
}

// snapshot returns the state to cache, dropping what has expired.
func (a *Agent) snapshot() (*cacheState, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	st := &cacheState{NodeID: a.node, AgentID: a.agentID, Parents: a.parents, Trust: a.wire, SVIDs: map[string]keptSVID{}, Files: a.files}
	if a.svid != nil {
		key, err := x509.MarshalPKCS8PrivateKey(a.svid.PrivateKey)
		if err != nil {
			return nil, err
		}
		st.AgentChain, st.AgentKey = a.svid.Certificate, key
	}
	st.Spares = map[string]keptSVID{}
	for _, e := range a.entries {
		st.Entries = append(st.Entries, agentapi.FromEntry(e))
		if k, ok := a.kept[e.ID]; ok && k.Revision == e.Revision && now.Before(chainNotAfter(k.Chain)) {
			st.SVIDs[e.ID] = k
		}
		if k, ok := a.spares[e.ID]; ok && k.Revision == e.Revision && now.Before(chainNotAfter(k.Chain)) {
			st.Spares[e.ID] = k
		}
	}
	a.dirty = false
	return st, nil
}

// resume restores the cached state: entries, trust and kept SVIDs are
// served at once (ready), and an unexpired agent SVID spares an
// attestation. It reports whether the agent SVID was restored.
func (a *Agent) resume() bool {
	c := a.cfg.Cache
	if c == nil {
		return false
	}
	st, err := c.load()
	if err != nil {
		a.log.Error("reading the cache; starting without it", "err", err)
		return false
	}
	if st == nil {
		return false
	}
	now := a.now()
	restored := false
	a.mu.Lock()
	a.node, a.agentID, a.parents = st.NodeID, st.AgentID, st.Parents
	if len(st.AgentChain) > 0 {
		chain, err := parseChain(st.AgentChain)
		key, kerr := x509.ParsePKCS8PrivateKey(st.AgentKey)
		ec, isEC := key.(*ecdsa.PrivateKey)
		if err == nil && kerr == nil && isEC && now.Before(chain[0].NotAfter) {
			a.svid, a.svidAt = &tls.Certificate{Certificate: st.AgentChain, PrivateKey: ec, Leaf: chain[0]}, chain[0].NotBefore
			restored = true
		}
	}
	a.entries = make(map[string]entry.Entry, len(st.Entries))
	for _, w := range st.Entries {
		if e := w.Entry(); slices.Contains(a.parents, e.ParentID) {
			a.entries[e.ID] = e
		}
	}
	a.kept, a.spares = st.SVIDs, st.Spares
	a.files = st.Files
	a.mu.Unlock()
	if st.Trust != nil {
		if err := a.setTrust(st.Trust); err != nil {
			a.log.Error("cached trust unusable", "err", err)
		} else {
			a.log.Info("serving from the cache until the server answers", "entries", len(st.Entries), "svids", len(st.SVIDs))
			a.markReady()
		}
	}
	return restored
}

// persistLoop writes the state whenever it changed, at most once a
// second, and once more when ctx ends (unless evicted).
func (a *Agent) persistLoop(ctx interface{ Done() <-chan struct{} }) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last string
	for {
		select {
		case <-ctx.Done():
			a.persist(&last, true)
			return
		case <-tick.C:
			a.persist(&last, false)
		}
	}
}

func (a *Agent) persist(last *string, final bool) {
	a.mu.RLock()
	evicted := a.evicted
	fp := fmt.Sprintf("%p|%s|%v|%p", a.svid, a.digest, a.dirty, a.wire)
	a.mu.RUnlock()
	if evicted || (fp == *last && !final) {
		return
	}
	st, err := a.snapshot()
	if err == nil {
		err = a.cfg.Cache.save(st)
	}
	if err != nil {
		a.log.Error("writing the cache", "err", err)
		return
	}
	*last = fp
}
