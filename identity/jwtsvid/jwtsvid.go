package jwtsvid

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// SealedName is the barrier name the key set is stored under.
const SealedName = "jwt/keys"

// Defaults for Config.
const (
	DefaultRotateEvery = 24 * time.Hour
	DefaultPrepareLead = 10 * time.Minute
	DefaultMaxTTL      = time.Hour
)

// ErrNoAudience is returned by Mint when no audience is given: a JWT-SVID
// without an audience could be replayed to any relying party.
var ErrNoAudience = errors.New("jwtsvid: at least one audience is required")

// Sealer stores the key set under the barrier.
type Sealer interface {
	// Get returns the value stored under name; an absent value is an error
	// for which IsNotFound reports true.
	Get(ctx context.Context, name string) ([]byte, error)
	// Put replaces the value stored under name.
	Put(ctx context.Context, name string, value []byte) error
}

// Recorder makes a mint durable before the token is handed out.
type Recorder interface {
	// RecordJWT records m. It MUST return an error when the record could
	// not be made durable; the token is then discarded.
	RecordJWT(ctx context.Context, m Minted) error
}

// Minted describes one JWT-SVID without the token itself: what the
// transparency log is told.
type Minted struct {
	SPIFFEID string
	Audience []string
	KeyID    string
	IssuedAt time.Time
	Expiry   time.Time
	// TokenSHA256 is the SHA-256 of the compact token, so that a holder of
	// the token can find its log entry while the log holds nothing usable.
	TokenSHA256 [32]byte
}

// Config configures an Issuer.
type Config struct {
	// Sealer stores the key set. Required.
	Sealer Sealer
	// IsNotFound reports whether an error from Sealer.Get means the value
	// is absent. Required.
	IsNotFound func(error) bool
	// Recorder records every mint before the token is returned. Required.
	Recorder Recorder
	// TrustDomain every subject must belong to. Required.
	TrustDomain string
	// RotateEvery is how long a key signs before its successor takes over.
	// Default: DefaultRotateEvery.
	RotateEvery time.Duration
	// PrepareLead is how long a successor is published before it signs, so
	// relying parties that refresh bundles on that period know it first.
	// Default: DefaultPrepareLead.
	PrepareLead time.Duration
	// MaxTTL is the longest lifetime of a JWT-SVID; a superseded key stays
	// published this long. Default: DefaultMaxTTL.
	MaxTTL time.Duration
	// Clock tells the time. Default: time.Now.
	Clock func() time.Time
	// Logger receives key lifecycle records. Default: discard.
	Logger *slog.Logger
}

// Issuer mints JWT-SVIDs with the trust domain's active key. It is safe for
// concurrent use.
type Issuer struct {
	cfg Config
	td  spiffeid.TrustDomain

	mu   sync.RWMutex
	keys []*key // ascending by activeFrom
}

type key struct {
	id         string
	priv       *ecdsa.PrivateKey
	signer     jose.Signer
	activeFrom time.Time
}

// storedSet is the sealed encoding of the key set.
type storedSet struct {
	Version int         `json:"version"`
	Keys    []storedKey `json:"keys"`
}

type storedKey struct {
	ID         string    `json:"kid"`
	PKCS8      []byte    `json:"pkcs8"`
	ActiveFrom time.Time `json:"active_from"`
}

// Open loads the key set, creating it with one active key when none is
// stored yet.
func Open(ctx context.Context, cfg Config) (*Issuer, error) {
	if cfg.Sealer == nil || cfg.IsNotFound == nil || cfg.Recorder == nil {
		return nil, errors.New("jwtsvid: Sealer, IsNotFound and Recorder are required")
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("jwtsvid: trust domain: %w", err)
	}
	if cfg.RotateEvery <= 0 {
		cfg.RotateEvery = DefaultRotateEvery
	}
	if cfg.PrepareLead <= 0 || cfg.PrepareLead >= cfg.RotateEvery {
		cfg.PrepareLead = min(DefaultPrepareLead, cfg.RotateEvery/2)
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	i := &Issuer{cfg: cfg, td: td}
	keys, err := i.load(ctx)
	switch {
	case err == nil:
		i.keys = keys
		return i, nil
	case !cfg.IsNotFound(err):
		return nil, err
	}
	k, err := newKey(cfg.Clock())
	if err != nil {
		return nil, err
	}
	if err := i.store(ctx, []*key{k}); err != nil {
		return nil, err
	}
	i.keys = []*key{k}
	cfg.Logger.Info("created the JWT-SVID signing key", "kid", k.id)
	return i, nil
}

func newKey(activeFrom time.Time) (*key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("jwtsvid: generating key: %w", err)
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("jwtsvid: generating key ID: %w", err)
	}
	return withSigner(hex.EncodeToString(id[:]), priv, activeFrom)
}

func withSigner(id string, priv *ecdsa.PrivateKey, activeFrom time.Time) (*key, error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: id}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return nil, fmt.Errorf("jwtsvid: signer for key %s: %w", id, err)
	}
	return &key{id: id, priv: priv, signer: signer, activeFrom: activeFrom.UTC()}, nil
}

func (i *Issuer) load(ctx context.Context) ([]*key, error) {
	raw, err := i.cfg.Sealer.Get(ctx, SealedName)
	if err != nil {
		return nil, err
	}
	defer clear(raw)
	var set storedSet
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("jwtsvid: decoding the stored key set: %w", err)
	}
	if set.Version != 1 || len(set.Keys) == 0 {
		return nil, fmt.Errorf("jwtsvid: stored key set has version %d and %d keys", set.Version, len(set.Keys))
	}
	keys := make([]*key, 0, len(set.Keys))
	for _, sk := range set.Keys {
		parsed, err := x509.ParsePKCS8PrivateKey(sk.PKCS8)
		clear(sk.PKCS8)
		if err != nil {
			return nil, fmt.Errorf("jwtsvid: decoding key %s: %w", sk.ID, err)
		}
		priv, ok := parsed.(*ecdsa.PrivateKey)
		if !ok || priv.Curve != elliptic.P256() {
			return nil, fmt.Errorf("jwtsvid: key %s is not a P-256 key", sk.ID)
		}
		k, err := withSigner(sk.ID, priv, sk.ActiveFrom)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	slices.SortStableFunc(keys, func(a, b *key) int { return a.activeFrom.Compare(b.activeFrom) })
	return keys, nil
}

func (i *Issuer) store(ctx context.Context, keys []*key) error {
	set := storedSet{Version: 1, Keys: make([]storedKey, 0, len(keys))}
	for _, k := range keys {
		der, err := x509.MarshalPKCS8PrivateKey(k.priv)
		if err != nil {
			return fmt.Errorf("jwtsvid: encoding key %s: %w", k.id, err)
		}
		set.Keys = append(set.Keys, storedKey{ID: k.id, PKCS8: der, ActiveFrom: k.activeFrom})
	}
	raw, err := json.Marshal(set)
	for _, sk := range set.Keys {
		clear(sk.PKCS8)
	}
	if err != nil {
		return fmt.Errorf("jwtsvid: encoding the key set: %w", err)
	}
	defer clear(raw)
	if err := i.cfg.Sealer.Put(ctx, SealedName, raw); err != nil {
		return fmt.Errorf("jwtsvid: storing the key set: %w", err)
	}
	return nil
}

// activeLocked returns the newest key whose activeFrom has passed; the
// oldest key when none has (a clock stepped back).
func (i *Issuer) activeLocked(now time.Time) *key {
	active := i.keys[0]
	for _, k := range i.keys[1:] {
		if !k.activeFrom.After(now) {
			active = k
		}
	}
	return active
}

// Mint signs a JWT-SVID for spiffeID with the given audience and lifetime
// (clipped to MaxTTL), records it, and returns the compact token and its
// expiry. Nothing is returned when the record fails.
func (i *Issuer) Mint(ctx context.Context, spiffeID string, audience []string, ttl time.Duration) (string, time.Time, error) {
	id, err := spiffeid.FromString(spiffeID)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("jwtsvid: subject: %w", err)
	}
	if id.TrustDomain() != i.td {
		return "", time.Time{}, fmt.Errorf("jwtsvid: subject %s is outside trust domain %s", spiffeID, i.td)
	}
	if len(audience) == 0 || slices.Contains(audience, "") {
		return "", time.Time{}, ErrNoAudience
	}
	if ttl <= 0 || ttl > i.cfg.MaxTTL {
		ttl = i.cfg.MaxTTL
	}
	t := i.cfg.Clock()
	now := t.UTC().Truncate(time.Second)
	exp := now.Add(ttl)
	i.mu.RLock()
	k := i.activeLocked(t)
	i.mu.RUnlock()
	claims := jwt.Claims{
		Subject:  spiffeID,
		Audience: jwt.Audience(audience),
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(exp),
	}
	token, err := jwt.Signed(k.signer).Claims(claims).Serialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("jwtsvid: signing: %w", err)
	}
	m := Minted{
		SPIFFEID:    spiffeID,
		Audience:    slices.Clone(audience),
		KeyID:       k.id,
		IssuedAt:    now,
		Expiry:      exp,
		TokenSHA256: sha256.Sum256([]byte(token)),
	}
	if err := i.cfg.Recorder.RecordJWT(ctx, m); err != nil {
		return "", time.Time{}, fmt.Errorf("jwtsvid: recording the mint: %w", err)
	}
	return token, exp, nil
}

// ActiveKeyID returns the ID of the key that signs now.
func (i *Issuer) ActiveKeyID() string {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.activeLocked(i.cfg.Clock()).id
}

// PublicKeys returns every published key by key ID: the active one, a
// prepared successor and superseded keys whose tokens may still be valid.
func (i *Issuer) PublicKeys() map[string]crypto.PublicKey {
	i.mu.RLock()
	defer i.mu.RUnlock()
	out := make(map[string]crypto.PublicKey, len(i.keys))
	for _, k := range i.keys {
		out[k.id] = k.priv.Public()
	}
	return out
}

// KeyIDs returns the published key IDs, oldest first; a change in it means
// the bundle changed.
func (i *Issuer) KeyIDs() string {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.keyIDsLocked()
}

// Rotate adds a key that signs from now on. The previous key stays
// published for MaxTTL. It returns the new key's ID.
func (i *Issuer) Rotate(ctx context.Context) (string, error) {
	now := i.cfg.Clock()
	k, err := newKey(now)
	if err != nil {
		return "", err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	keys := i.pruneLocked(append(slices.Clone(i.keys), k), now)
	if err := i.store(ctx, keys); err != nil {
		return "", err
	}
	i.keys = keys
	i.cfg.Logger.Info("rotated the JWT-SVID signing key", "kid", k.id)
	return k.id, nil
}

// Maintain reloads the stored key set (another node may have changed it),
// prepares a successor PrepareLead before the active key has signed for
// RotateEvery, and drops keys superseded more than MaxTTL ago. It reports
// whether the published keys changed. Only one node should call it at a
// time; the others call Reload.
func (i *Issuer) Maintain(ctx context.Context) (bool, error) {
	before := i.KeyIDs()
	if _, err := i.Reload(ctx); err != nil {
		return false, err
	}
	now := i.cfg.Clock()
	i.mu.Lock()
	defer i.mu.Unlock()
	keys := slices.Clone(i.keys)
	newest := keys[len(keys)-1]
	due := newest.activeFrom.Add(i.cfg.RotateEvery)
	if !newest.activeFrom.After(now) && !now.Before(due.Add(-i.cfg.PrepareLead)) {
		activeFrom := due
		if earliest := now.Add(i.cfg.PrepareLead); activeFrom.Before(earliest) {
			activeFrom = earliest
		}
		k, err := newKey(activeFrom)
		if err != nil {
			return false, err
		}
		keys = append(keys, k)
		i.cfg.Logger.Info("prepared the next JWT-SVID signing key", "kid", k.id, "active_from", k.activeFrom)
	}
	keys = i.pruneLocked(keys, now)
	if len(keys) == len(i.keys) && keys[len(keys)-1] == newest {
		return i.keyIDsLocked() != before, nil
	}
	if err := i.store(ctx, keys); err != nil {
		return false, err
	}
	i.keys = keys
	return true, nil
}

func (i *Issuer) keyIDsLocked() string {
	ids := make([]string, len(i.keys))
	for n, k := range i.keys {
		ids[n] = k.id
	}
	return strings.Join(ids, ",")
}

// pruneLocked drops keys whose successor has been active for more than
// MaxTTL: every token they signed has expired.
func (i *Issuer) pruneLocked(keys []*key, now time.Time) []*key {
	out := keys[:0:0]
	for n, k := range keys {
		if n+1 < len(keys) && now.Sub(keys[n+1].activeFrom) > i.cfg.MaxTTL {
			i.cfg.Logger.Info("retired the JWT-SVID signing key", "kid", k.id)
			continue
		}
		out = append(out, k)
	}
	return out
}

// Reload replaces the in-memory key set with the stored one and reports
// whether the published keys changed.
func (i *Issuer) Reload(ctx context.Context) (bool, error) {
	keys, err := i.load(ctx)
	if err != nil {
		return false, err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	before := i.keyIDsLocked()
	i.keys = keys
	return i.keyIDsLocked() != before, nil
}
