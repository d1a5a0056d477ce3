// Package barrier is Sigil's encryption at rest. It owns the master key,
// the keyring of data keys that the master key encrypts, and the unseal
// state: whether the master key is in memory, and which Shamir shares have
// been submitted towards it. Every value the rest of Sigil keeps secret is
// AES-256-GCM encrypted here under the keyring's active data key before it
// reaches storage.
//
// The barrier must never write plaintext or key material to storage or to
// its logger, nor put either into an error. What it stores is the keyring
// encrypted under the master key and a seal configuration that holds
// nothing secret: share verifiers for the shamir seal, or the master key as
// wrapped by a KeyWrapper (an HSM key for the pkcs11 seal, a local file for
// the dev seal). A sealed barrier encrypts and decrypts nothing: every such
// call returns ErrSealed.
//
// # Ciphertext
//
// A ciphertext is
//
//	version (1 byte, currently 1) || key term (4 bytes, big-endian) ||
//	nonce (12 random bytes) || AES-256-GCM sealed data and tag
//
// The GCM additional data is the version and term followed by the caller's
// aad string, so a ciphertext opens only under the key term it names and
// only for the aad it was made for. Callers build aad as
// "<table>/<key>[/<version>]", for example "sealed/ca/intermediate-key" or
// "kv/db/password/3", so that a row copied to another row, key or version
// no longer decrypts. Get and Put use "sealed/" + name.
package barrier

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/sigil-pki/sigil/shamir"
	"github.com/sigil-pki/sigil/storage"
)

// Sentinel errors that callers branch on with errors.Is.
var (
	// ErrSealed: the barrier holds no master key; nothing can be encrypted
	// or decrypted until it is unsealed.
	ErrSealed = errors.New("barrier: sealed")
	// ErrNotInitialized: storage holds no barrier yet.
	ErrNotInitialized = errors.New("barrier: not initialized")
	// ErrAlreadyInitialized: an Init call found a barrier in storage.
	ErrAlreadyInitialized = errors.New("barrier: already initialized")
	// ErrInvalidShare: a submitted share is not one of those issued at
	// initialisation (or, for a seal without shares, none was expected).
	ErrInvalidShare = errors.New("barrier: invalid unseal share")
	// ErrDuplicateShare: the share was already submitted in this round.
	ErrDuplicateShare = errors.New("barrier: share already submitted")
	// ErrDecrypt: a ciphertext is malformed, was tampered with, names an
	// unknown key term, or was made for a different aad.
	ErrDecrypt = errors.New("barrier: decryption failed")
)

// Seal types, as stored and as reported by Status.Type.
const (
	SealShamir = "shamir"
	SealPKCS11 = "pkcs11"
	SealDev    = "dev"
)

const (
	keySize          = 32 // AES-256 for the master key and every data key
	nonceSize        = 12
	ciphertextV1     = 1
	headerSize       = 1 + 4 // version || term
	overhead         = headerSize + nonceSize + 16
	maxRotateRetries = 8
	// shareVerifierPrefix separates share verifiers from any other use of
	// SHA-256 over the same bytes.
	shareVerifierPrefix = "sigil/barrier/shamir-share-verifier/v1\x00"
)

// Store is the part of storage the barrier uses. Implementations must be
// safe for concurrent use, and every write must be durable when it returns
// nil. The barrier hands the store only ciphertext and non-secret seal
// parameters.
type Store interface {
	// LoadBarrier returns the stored barrier state, or an error wrapping
	// storage.ErrNotFound before initialisation.
	LoadBarrier(ctx context.Context) (storage.BarrierState, error)
	// InitBarrier stores the first state with Generation 1. It MUST fail
	// with storage.ErrConflict, storing nothing, if a state already exists.
	InitBarrier(ctx context.Context, st storage.BarrierState) error
	// UpdateKeyring replaces the encrypted keyring if, and only if, the
	// stored generation equals prevGeneration, and makes it
	// prevGeneration+1; otherwise it MUST change nothing and return
	// storage.ErrConflict.
	UpdateKeyring(ctx context.Context, prevGeneration int64, keyring []byte) error
	// GetSealed returns the ciphertext stored under name, or an error
	// wrapping storage.ErrNotFound.
	GetSealed(ctx context.Context, name string) ([]byte, error)
	// PutSealed creates or replaces the ciphertext stored under name.
	PutSealed(ctx context.Context, name string, ciphertext []byte) error
}

// KeyWrapper protects the master key for the seals that unseal without an
// operator (pkcs11, dev). Wrap must return a blob that reveals nothing
// about key and that only the same wrapper's Unwrap turns back into key;
// Unwrap must fail, rather than return other bytes, for a blob it did not
// make. hsm.Wrapper has these methods.
type KeyWrapper interface {
	Wrap(ctx context.Context, key []byte) ([]byte, error)
	Unwrap(ctx context.Context, blob []byte) ([]byte, error)
}

// Config configures a Barrier.
type Config struct {
	// Store keeps the barrier state and the sealed values. Required.
	Store Store
	// Rand supplies keys and nonces; it must be safe for concurrent use.
	// Default: crypto/rand.Reader.
	Rand io.Reader
	// Clock stamps keyring terms with their creation time. Default: time.Now.
	Clock func() time.Time
	// Logger receives seal, unseal and rotation events, never a key or a
	// value. Default: nil, which discards.
	Logger *slog.Logger
}

// Status describes the barrier for operators and health checks.
type Status struct {
	// Initialized reports whether storage holds a barrier.
	Initialized bool
	// Sealed reports whether the master key is absent from memory. A
	// barrier that is not initialised is sealed.
	Sealed bool
	// Type is the seal type: "shamir", "pkcs11" or "dev"; empty before
	// initialisation.
	Type string
	// Shares and Threshold are the shamir split; zero for other seals.
	Shares, Threshold int
	// Progress is the number of valid shares submitted towards unsealing.
	Progress int
	// KeyTerm is the active keyring term; zero while sealed.
	KeyTerm uint32
}

// sealConfig is the document stored in BarrierState.SealConfig.
type sealConfig struct {
	Version   int    `json:"version"`
	Type      string `json:"type"`
	Shares    int    `json:"shares,omitempty"`
	Threshold int    `json:"threshold,omitempty"`
	// Verifiers[i] is SHA-256(shareVerifierPrefix || share i).
	Verifiers [][]byte `json:"verifiers,omitempty"`
	// WrappedKey is the master key as wrapped by the seal's KeyWrapper.
	WrappedKey []byte `json:"wrapped_key,omitempty"`
}

// Barrier encrypts and decrypts values under the keyring. It is safe for
// concurrent use; Encrypt and Decrypt take only a read lock.
type Barrier struct {
	store Store
	rand  io.Reader
	clock func() time.Time
	log   *slog.Logger

	mu sync.RWMutex
	// master is nil while sealed.
	master     []byte
	ring       *keyring
	generation int64
	sealType   string
	shares     int
	threshold  int
	// pending holds copies of the shares submitted in this round, and
	// pendingIdx which issued share each one matched.
	pending    [][]byte
	pendingIdx []int
}

// New returns a sealed Barrier over cfg.Store. It panics if cfg.Store is nil.
func New(cfg Config) *Barrier {
	if cfg.Store == nil {
		panic("barrier: Config.Store is nil")
	}
	b := &Barrier{store: cfg.Store, rand: cfg.Rand, clock: cfg.Clock, log: cfg.Logger}
	if b.rand == nil {
		b.rand = rand.Reader
	}
	if b.clock == nil {
		b.clock = time.Now
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	return b
}

// Sealed reports whether the barrier holds no master key.
func (b *Barrier) Sealed() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.master == nil
}

// Status reports the barrier's state. While sealed it reads the seal
// configuration from storage; an uninitialised barrier is reported, not an
// error.
func (b *Barrier) Status(ctx context.Context) (Status, error) {
	b.mu.RLock()
	if b.master != nil {
		st := b.statusLocked()
		b.mu.RUnlock()
		return st, nil
	}
	b.mu.RUnlock()

	state, cfg, err := b.load(ctx)
	if errors.Is(err, ErrNotInitialized) {
		return Status{Sealed: true}, nil
	}
	if err != nil {
		return Status{}, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.master != nil {
		return b.statusLocked(), nil
	}
	return Status{
		Initialized: true,
		Sealed:      true,
		Type:        state.SealType,
		Shares:      cfg.Shares,
		Threshold:   cfg.Threshold,
		Progress:    len(b.pending),
	}, nil
}

// statusLocked describes an unsealed barrier; b.mu must be held.
func (b *Barrier) statusLocked() Status {
	st := Status{
		Initialized: true,
		Sealed:      b.master == nil,
		Type:        b.sealType,
		Shares:      b.shares,
		Threshold:   b.threshold,
		Progress:    len(b.pending),
	}
	if b.ring != nil {
		st.KeyTerm = b.ring.active.term
	}
	return st
}

// load reads and parses the stored barrier state.
func (b *Barrier) load(ctx context.Context) (storage.BarrierState, sealConfig, error) {
	state, err := b.store.LoadBarrier(ctx)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.BarrierState{}, sealConfig{}, ErrNotInitialized
	}
	if err != nil {
		return storage.BarrierState{}, sealConfig{}, fmt.Errorf("loading barrier state: %w", err)
	}
	var cfg sealConfig
	if err := json.Unmarshal(state.SealConfig, &cfg); err != nil {
		return storage.BarrierState{}, sealConfig{}, fmt.Errorf("parsing seal configuration: %w", err)
	}
	if err := cfg.check(state.SealType); err != nil {
		return storage.BarrierState{}, sealConfig{}, fmt.Errorf("parsing seal configuration: %w", err)
	}
	return state, cfg, nil
}

// InitShamir initialises the barrier with a fresh master key split into
// shares, any threshold of which unseal it: 2 <= threshold <= shares <=
// 255, or threshold == shares == 1, in which case the single share is the
// master key followed by the x coordinate 1; other counts are an error
// wrapping shamir.ErrInvalidParameters. It stores the encrypted keyring and
// the share verifiers, never a share, and returns the shares (33 bytes
// each) for the caller to show once. The barrier is left unsealed.
// ErrAlreadyInitialized if storage already holds a barrier.
func (b *Barrier) InitShamir(ctx context.Context, shares, threshold int) ([][]byte, error) {
	if shares < 1 || shares > shamir.MaxShares || threshold > shares ||
		(threshold < 2 && !(threshold == 1 && shares == 1)) {
		return nil, fmt.Errorf("initializing shamir seal: %d shares with threshold %d: %w",
			shares, threshold, shamir.ErrInvalidParameters)
	}
	var out [][]byte
	err := b.initialize(ctx, SealShamir, func(master []byte) (sealConfig, error) {
		split, err := shamir.Split(master, shares, threshold, b.rand)
		if err != nil {
			return sealConfig{}, fmt.Errorf("splitting master key: %w", err)
		}
		cfg := sealConfig{Version: 1, Type: SealShamir, Shares: shares, Threshold: threshold}
		for _, s := range split {
			v := shareVerifier(s)
			cfg.Verifiers = append(cfg.Verifiers, v[:])
		}
		out = split
		return cfg, nil
	})
	if err != nil {
		for _, s := range out {
			clear(s)
		}
		return nil, err
	}
	return out, nil
}

// InitWrapped initialises the barrier with a fresh master key protected by
// w, for the "pkcs11" or "dev" seal. It stores the wrapped key and the
// encrypted keyring and leaves the barrier unsealed. ErrAlreadyInitialized
// if storage already holds a barrier.
func (b *Barrier) InitWrapped(ctx context.Context, sealType string, w KeyWrapper) error {
	if w == nil {
		return errors.New("initializing barrier: nil key wrapper")
	}
	if sealType != SealPKCS11 && sealType != SealDev {
		return fmt.Errorf("initializing barrier: seal type %q is not %q or %q", sealType, SealPKCS11, SealDev)
	}
	return b.initialize(ctx, sealType, func(master []byte) (sealConfig, error) {
		blob, err := w.Wrap(ctx, master)
		if err != nil {
			return sealConfig{}, fmt.Errorf("wrapping master key: %w", err)
		}
		return sealConfig{Version: 1, Type: sealType, WrappedKey: blob}, nil
	})
}

// initialize makes the master key and first keyring, asks protect for the
// seal configuration, stores both and installs them.
func (b *Barrier) initialize(ctx context.Context, sealType string, protect func(master []byte) (sealConfig, error)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.master != nil {
		return fmt.Errorf("initializing barrier: %w", ErrAlreadyInitialized)
	}
	if _, err := b.store.LoadBarrier(ctx); err == nil {
		return fmt.Errorf("initializing barrier: %w", ErrAlreadyInitialized)
	} else if !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("initializing barrier: loading state: %w", err)
	}

	master := make([]byte, keySize)
	if _, err := io.ReadFull(b.rand, master); err != nil {
		return fmt.Errorf("initializing barrier: generating master key: %w", err)
	}
	ok := false
	var ring *keyring
	defer func() {
		if !ok {
			clear(master)
			ring.zero()
		}
	}()
	first, err := b.newDataKey(1)
	if err != nil {
		return fmt.Errorf("initializing barrier: %w", err)
	}
	ring = &keyring{terms: []*dataKey{first}, active: first}
	sealedRing, err := sealKeyring(master, ring, b.rand)
	if err != nil {
		return fmt.Errorf("initializing barrier: %w", err)
	}
	cfg, err := protect(master)
	if err != nil {
		return fmt.Errorf("initializing barrier: %w", err)
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("initializing barrier: encoding seal configuration: %w", err)
	}
	err = b.store.InitBarrier(ctx, storage.BarrierState{
		SealType:   sealType,
		SealConfig: cfgJSON,
		Keyring:    sealedRing,
		Generation: 1,
	})
	if errors.Is(err, storage.ErrConflict) {
		return fmt.Errorf("initializing barrier: %w", ErrAlreadyInitialized)
	}
	if err != nil {
		return fmt.Errorf("initializing barrier: storing state: %w", err)
	}
	ok = true
	b.installLocked(master, ring, 1, sealType, cfg)
	b.log.Info("barrier initialized", "seal_type", sealType, "shares", cfg.Shares, "threshold", cfg.Threshold)
	return nil
}

// installLocked makes the barrier unsealed with the given master key and
// keyring, dropping any pending shares. b.mu must be held for writing.
func (b *Barrier) installLocked(master []byte, ring *keyring, generation int64, sealType string, cfg sealConfig) {
	b.master = master
	b.ring = ring
	b.generation = generation
	b.sealType = sealType
	b.shares, b.threshold = cfg.Shares, cfg.Threshold
	b.dropPendingLocked()
}

func (b *Barrier) dropPendingLocked() {
	for _, s := range b.pending {
		clear(s)
	}
	b.pending, b.pendingIdx = nil, nil
}

// UnsealWrapped unseals a pkcs11 or dev barrier by unwrapping the stored
// master key with w. It is a no-op on an unsealed barrier.
func (b *Barrier) UnsealWrapped(ctx context.Context, w KeyWrapper) error {
	if !b.Sealed() {
		return nil
	}
	state, cfg, err := b.load(ctx)
	if err != nil {
		return fmt.Errorf("unsealing barrier: %w", err)
	}
	if state.SealType != SealPKCS11 && state.SealType != SealDev {
		return fmt.Errorf("unsealing barrier: seal type is %q, which takes shares, not a key wrapper", state.SealType)
	}
	if w == nil {
		return errors.New("unsealing barrier: nil key wrapper")
	}
	master, err := w.Unwrap(ctx, cfg.WrappedKey)
	if err != nil {
		return fmt.Errorf("unsealing barrier: unwrapping master key: %w", err)
	}
	if len(master) != keySize {
		clear(master)
		return fmt.Errorf("unsealing barrier: unwrapped master key has the wrong length: %w", ErrDecrypt)
	}
	ring, err := openKeyring(master, state.Keyring)
	if err != nil {
		clear(master)
		return fmt.Errorf("unsealing barrier: %w", err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.master != nil {
		clear(master)
		ring.zero()
		return nil
	}
	b.installLocked(master, ring, state.Generation, state.SealType, cfg)
	b.log.Info("barrier unsealed", "seal_type", state.SealType, "key_term", ring.active.term)
	return nil
}

// SubmitShare adds one Shamir share towards unsealing and returns the
// resulting status. A share that is not one of those issued at
// initialisation is refused with ErrInvalidShare, and a share already
// submitted in this round with ErrDuplicateShare; in both cases the
// progress made so far is kept. When the threshold is reached the master
// key is recovered and the barrier unsealed; should the recovered key fail
// to open the keyring, progress is reset and ErrInvalidShare returned. On
// an unsealed barrier SubmitShare returns the status and does nothing.
func (b *Barrier) SubmitShare(ctx context.Context, share []byte) (Status, error) {
	if !b.Sealed() {
		return b.Status(ctx)
	}
	state, cfg, err := b.load(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("submitting unseal share: %w", err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	status := func() Status {
		st := b.statusLocked()
		if b.master == nil {
			st.Type, st.Shares, st.Threshold = state.SealType, cfg.Shares, cfg.Threshold
		}
		return st
	}
	if b.master != nil {
		return status(), nil
	}
	if state.SealType != SealShamir {
		return status(), fmt.Errorf("submitting unseal share: seal type is %q, which takes no shares: %w", state.SealType, ErrInvalidShare)
	}

	// Compare against every verifier, without stopping at a match.
	v := shareVerifier(share)
	idx := -1
	for i, want := range cfg.Verifiers {
		if subtle.ConstantTimeCompare(v[:], want) == 1 {
			idx = i
		}
	}
	if idx < 0 {
		b.log.Warn("unseal share rejected", "reason", "not an issued share", "progress", len(b.pending))
		return status(), fmt.Errorf("submitting unseal share: %w", ErrInvalidShare)
	}
	if slices.Contains(b.pendingIdx, idx) {
		return status(), fmt.Errorf("submitting unseal share: %w", ErrDuplicateShare)
	}
	b.pending = append(b.pending, slices.Clone(share))
	b.pendingIdx = append(b.pendingIdx, idx)
	if len(b.pending) < cfg.Threshold {
		b.log.Info("unseal share accepted", "progress", len(b.pending), "threshold", cfg.Threshold)
		return status(), nil
	}

	master, err := shamir.Combine(b.pending)
	b.dropPendingLocked()
	if err != nil {
		return status(), fmt.Errorf("submitting unseal share: combining shares: %w", ErrInvalidShare)
	}
	if len(master) != keySize {
		clear(master)
		return status(), fmt.Errorf("submitting unseal share: recovered key has the wrong length: %w", ErrInvalidShare)
	}
	ring, err := openKeyring(master, state.Keyring)
	if err != nil {
		clear(master)
		b.log.Error("recovered master key does not open the keyring; progress reset", "err", err)
		return status(), fmt.Errorf("submitting unseal share: opening keyring: %w", ErrInvalidShare)
	}
	b.installLocked(master, ring, state.Generation, state.SealType, cfg)
	b.log.Info("barrier unsealed", "seal_type", state.SealType, "key_term", ring.active.term)
	return status(), nil
}

// check reports a seal configuration that this barrier could not have
// written for sealType.
func (c *sealConfig) check(sealType string) error {
	if c.Version != 1 {
		return fmt.Errorf("unknown version %d", c.Version)
	}
	if c.Type != sealType {
		return fmt.Errorf("configuration for seal type %q stored as seal type %q", c.Type, sealType)
	}
	switch c.Type {
	case SealShamir:
		if c.Shares < 1 || c.Shares > shamir.MaxShares || c.Threshold < 1 || c.Threshold > c.Shares ||
			(c.Threshold == 1 && c.Shares != 1) {
			return fmt.Errorf("impossible split: %d shares, threshold %d", c.Shares, c.Threshold)
		}
		if len(c.Verifiers) != c.Shares {
			return fmt.Errorf("%d share verifiers for %d shares", len(c.Verifiers), c.Shares)
		}
		for i, v := range c.Verifiers {
			if len(v) != sha256.Size {
				return fmt.Errorf("share verifier %d is %d bytes", i, len(v))
			}
		}
	case SealPKCS11, SealDev:
		if len(c.WrappedKey) == 0 {
			return errors.New("no wrapped master key")
		}
	default:
		return fmt.Errorf("unknown seal type %q", c.Type)
	}
	return nil
}

func shareVerifier(share []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(shareVerifierPrefix))
	h.Write(share)
	var v [sha256.Size]byte
	h.Sum(v[:0])
	return v
}

// Seal forgets the master key: it overwrites the master key and every data
// key in memory with zeros, drops the ciphers made from them and any
// pending shares. (The expanded AES key schedules inside the dropped
// ciphers are left to the garbage collector; Go offers no way to clear
// them.) Seal is idempotent.
func (b *Barrier) Seal() {
	b.mu.Lock()
	defer b.mu.Unlock()
	wasUnsealed := b.master != nil
	clear(b.master)
	b.master = nil
	b.ring.zero()
	b.ring = nil
	b.generation = 0
	b.dropPendingLocked()
	if wasUnsealed {
		b.log.Info("barrier sealed")
	}
}

// Rotate adds a keyring term with a fresh data key and makes it active:
// new ciphertexts use it, older terms stay readable. The new keyring is
// written with a compare-and-swap on the stored generation; if another
// node changed the keyring first, Rotate reloads it and tries again.
// Rotate returns the new term.
//
// Nonces are random, so a single term should seal well under 2^32 values;
// rotating on a schedule keeps every term far from that bound.
func (b *Barrier) Rotate(ctx context.Context) (uint32, error) {
	for range maxRotateRetries {
		b.mu.RLock()
		if b.master == nil {
			b.mu.RUnlock()
			return 0, fmt.Errorf("rotating keyring: %w", ErrSealed)
		}
		base, baseRing := b.generation, b.ring
		term := b.ring.active.term + 1
		if term == 0 {
			b.mu.RUnlock()
			return 0, errors.New("rotating keyring: key terms exhausted")
		}
		fresh, err := b.newDataKey(term)
		if err != nil {
			b.mu.RUnlock()
			return 0, fmt.Errorf("rotating keyring: %w", err)
		}
		next := &keyring{terms: append(slices.Clip(b.ring.terms), fresh), active: fresh}
		blob, err := sealKeyring(b.master, next, b.rand)
		b.mu.RUnlock()
		if err != nil {
			fresh.zero()
			return 0, fmt.Errorf("rotating keyring: %w", err)
		}

		err = b.store.UpdateKeyring(ctx, base, blob)
		if errors.Is(err, storage.ErrConflict) {
			fresh.zero()
			b.log.Info("keyring changed concurrently; reloading before rotating again", "generation", base)
			if err := b.Reload(ctx); err != nil {
				return 0, fmt.Errorf("rotating keyring: %w", err)
			}
			continue
		}
		if err != nil {
			fresh.zero()
			return 0, fmt.Errorf("rotating keyring: storing keyring: %w", err)
		}

		b.mu.Lock()
		if b.ring == baseRing && b.ring != nil {
			b.ring = next
			b.generation = base + 1
		} else {
			// Sealed meanwhile (and perhaps unsealed again), or a Reload
			// already installed this or a later keyring from storage with
			// its own copies of the keys.
			fresh.zero()
		}
		b.mu.Unlock()
		b.log.Info("keyring rotated", "key_term", term, "generation", base+1)
		return term, nil
	}
	return 0, fmt.Errorf("rotating keyring: gave up after %d conflicting updates: %w", maxRotateRetries, storage.ErrConflict)
}

// Reload re-reads the keyring from storage, so that terms added by another
// node become readable and the newest becomes active here too. It does
// nothing while sealed or when the stored keyring is not newer.
func (b *Barrier) Reload(ctx context.Context) error {
	if b.Sealed() {
		return nil
	}
	state, err := b.store.LoadBarrier(ctx)
	if err != nil {
		return fmt.Errorf("reloading keyring: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.master == nil || state.Generation <= b.generation {
		return nil
	}
	ring, err := openKeyring(b.master, state.Keyring)
	if err != nil {
		return fmt.Errorf("reloading keyring: %w", err)
	}
	if ring.active.term < b.ring.active.term {
		ring.zero()
		return fmt.Errorf("reloading keyring: stored generation %d has active term %d, older than %d in memory",
			state.Generation, ring.active.term, b.ring.active.term)
	}
	b.ring.zero()
	b.ring = ring
	b.generation = state.Generation
	b.log.Info("keyring reloaded", "key_term", ring.active.term, "generation", state.Generation)
	return nil
}

// Encrypt seals plaintext under the active data key, bound to aad (see the
// package documentation for the format and how to build aad).
func (b *Barrier) Encrypt(aad string, plaintext []byte) ([]byte, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.master == nil {
		return nil, ErrSealed
	}
	k := b.ring.active
	out := make([]byte, headerSize+nonceSize, overhead+len(plaintext))
	out[0] = ciphertextV1
	binary.BigEndian.PutUint32(out[1:headerSize], k.term)
	nonce := out[headerSize : headerSize+nonceSize]
	if _, err := io.ReadFull(b.rand, nonce); err != nil {
		return nil, fmt.Errorf("encrypting: reading nonce: %w", err)
	}
	return k.aead.Seal(out, nonce, plaintext, additionalData(out[:headerSize], aad)), nil
}

// Decrypt opens a ciphertext made by Encrypt with the same aad. Anything
// else (a changed byte, another aad, an unknown term) is ErrDecrypt.
func (b *Barrier) Decrypt(aad string, ciphertext []byte) ([]byte, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.master == nil {
		return nil, ErrSealed
	}
	if len(ciphertext) < overhead {
		return nil, fmt.Errorf("%w: ciphertext too short", ErrDecrypt)
	}
	if ciphertext[0] != ciphertextV1 {
		return nil, fmt.Errorf("%w: unknown ciphertext version %d", ErrDecrypt, ciphertext[0])
	}
	term := binary.BigEndian.Uint32(ciphertext[1:headerSize])
	k := b.ring.lookup(term)
	if k == nil {
		return nil, fmt.Errorf("%w: key term %d is not in the keyring", ErrDecrypt, term)
	}
	nonce := ciphertext[headerSize : headerSize+nonceSize]
	plaintext, err := k.aead.Open(nil, nonce, ciphertext[headerSize+nonceSize:], additionalData(ciphertext[:headerSize], aad))
	if err != nil {
		return nil, ErrDecrypt
	}
	return plaintext, nil
}

func additionalData(header []byte, aad string) []byte {
	ad := make([]byte, 0, len(header)+len(aad))
	return append(append(ad, header...), aad...)
}

// Get reads and decrypts the value stored under name, with aad
// "sealed/"+name. If the value names a key term newer than any in memory
// (another node rotated), Get reloads the keyring once and retries.
func (b *Barrier) Get(ctx context.Context, name string) ([]byte, error) {
	if b.Sealed() {
		return nil, fmt.Errorf("reading sealed value %q: %w", name, ErrSealed)
	}
	ct, err := b.store.GetSealed(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("reading sealed value %q: %w", name, err)
	}
	aad := "sealed/" + name
	pt, err := b.Decrypt(aad, ct)
	if errors.Is(err, ErrDecrypt) && b.termAhead(ct) {
		if rerr := b.Reload(ctx); rerr != nil {
			return nil, fmt.Errorf("reading sealed value %q: %w", name, rerr)
		}
		pt, err = b.Decrypt(aad, ct)
	}
	if err != nil {
		return nil, fmt.Errorf("reading sealed value %q: %w", name, err)
	}
	return pt, nil
}

// termAhead reports whether ct names a key term newer than the active one.
func (b *Barrier) termAhead(ct []byte) bool {
	if len(ct) < headerSize {
		return false
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.ring != nil && binary.BigEndian.Uint32(ct[1:headerSize]) > b.ring.active.term
}

// Put encrypts value with aad "sealed/"+name and stores it under name.
func (b *Barrier) Put(ctx context.Context, name string, value []byte) error {
	if name == "" {
		return errors.New("writing sealed value: empty name")
	}
	ct, err := b.Encrypt("sealed/"+name, value)
	if err != nil {
		return fmt.Errorf("writing sealed value %q: %w", name, err)
	}
	if err := b.store.PutSealed(ctx, name, ct); err != nil {
		return fmt.Errorf("writing sealed value %q: %w", name, err)
	}
	return nil
}

// newAEAD returns AES-256-GCM under key.
func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
