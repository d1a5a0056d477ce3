// Package hsm owns Sigil's access to a PKCS#11 token: the module and its
// sessions, the user login, and the keys that live in the token and never
// leave it — EC signing keys (the root CA key) exposed as crypto.Signer, and
// AES keys that wrap other keys (the barrier master key) inside the token.
//
// It must never export private or secret key material: every key it
// generates is CKA_SENSITIVE and not CKA_EXTRACTABLE, and no function
// returns or logs a key's value. It must never put a PIN, a plaintext key
// or a wrapped key's plaintext in an error or a log record.
package hsm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/miekg/pkcs11"

	"github.com/sigil-pki/sigil/hsm/internal/p11"
)

var (
	// ErrKeyNotFound is returned when no key with the requested label and
	// kind exists in the token.
	ErrKeyNotFound = errors.New("hsm: key not found")
	// ErrKeyExists is returned when generating a key whose label is already
	// used by a private or secret key in the token.
	ErrKeyExists = errors.New("hsm: key already exists")
	// ErrUnwrap is returned when a wrapped blob is truncated, tampered with,
	// of an unknown version, or was not wrapped by this key.
	ErrUnwrap = errors.New("hsm: cannot unwrap blob")
	// ErrClosed is returned by operations on a Token, Signer or Wrapper whose
	// Token has been closed.
	ErrClosed = errors.New("hsm: token closed")
)

// defaultMaxSessions is Config.MaxSessions's default.
const defaultMaxSessions = 16

// Config selects a token and says how to use it.
type Config struct {
	// Module is the path to the PKCS#11 library. Required.
	Module string
	// TokenLabel selects the slot whose token has this CKA_LABEL. Required;
	// exactly one token must carry it.
	TokenLabel string
	// PIN is the user PIN. Required. It never appears in an error or a log.
	PIN string
	// Logger receives operational records. Default: discard.
	Logger *slog.Logger
	// Rand supplies key IDs and wrapping IVs. Default: crypto/rand.Reader.
	Rand io.Reader
	// MaxSessions caps the PKCS#11 sessions used for operations at once;
	// further callers wait. Default: 16.
	MaxSessions int
}

// String describes the Config without its PIN, for %v and %+v.
func (c Config) String() string {
	return fmt.Sprintf("hsm.Config{Module: %q, TokenLabel: %q, PIN: <redacted>}", c.Module, c.TokenLabel)
}

// GoString describes the Config without its PIN, for %#v.
func (c Config) GoString() string { return c.String() }

// LogValue keeps the PIN out of any log record that includes a Config.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("module", c.Module),
		slog.String("token", c.TokenLabel),
	)
}

// Token is a logged-in PKCS#11 token with a pool of sessions. It is safe for
// concurrent use.
type Token struct {
	mod   *p11.Module
	p     *pkcs11.Ctx
	slot  uint
	label string
	log   *slog.Logger
	rand  io.Reader

	// sem holds one element per session in use for an operation.
	sem chan struct{}

	// done is closed by Close, releasing callers waiting for a session.
	done chan struct{}

	mu     sync.Mutex
	idle   []pkcs11.SessionHandle
	closed bool
	// anchor stays open from Open to Close so that the login, which PKCS#11
	// ends with the token's last session, survives an empty pool.
	anchor pkcs11.SessionHandle

	// genMu makes "check label, then generate" atomic within this Token.
	genMu sync.Mutex
}

// Open loads the module (sharing one initialised context per module file in
// the process), finds the token labelled cfg.TokenLabel and logs in as the
// normal user.
func Open(cfg Config) (*Token, error) {
	switch {
	case cfg.Module == "":
		return nil, errors.New("opening token: no PKCS#11 module configured")
	case cfg.TokenLabel == "":
		return nil, errors.New("opening token: no token label configured")
	case cfg.PIN == "":
		return nil, fmt.Errorf("opening token %q: no PIN configured", cfg.TokenLabel)
	case cfg.MaxSessions < 0:
		return nil, fmt.Errorf("opening token %q: MaxSessions %d is negative", cfg.TokenLabel, cfg.MaxSessions)
	}
	t := &Token{
		label: cfg.TokenLabel,
		log:   cfg.Logger,
		rand:  cfg.Rand,
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if t.rand == nil {
		t.rand = rand.Reader
	}
	maxSessions := cfg.MaxSessions
	if maxSessions == 0 {
		maxSessions = defaultMaxSessions
	}
	t.sem = make(chan struct{}, maxSessions)
	t.done = make(chan struct{})

	mod, err := p11.Acquire(cfg.Module)
	if err != nil {
		return nil, fmt.Errorf("opening token %q: %w", cfg.TokenLabel, err)
	}
	t.mod, t.p = mod, mod.Ctx()
	if err := t.login(cfg.PIN); err != nil {
		return nil, errors.Join(fmt.Errorf("opening token %q: %w", cfg.TokenLabel, err), mod.Release())
	}
	t.log.Info("opened PKCS#11 token", "token", t.label, "slot", t.slot, "module", mod.Path())
	return t, nil
}

// login finds the slot and logs in through a new anchor session; on error
// it leaves nothing open.
func (t *Token) login(pin string) error {
	slot, err := findSlot(t.p, t.label)
	if err != nil {
		return err
	}
	t.slot = slot
	sh, err := t.p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("opening session on slot %d: %w", slot, err)
	}
	if err := t.mod.Login(slot, sh, pin); err != nil {
		return errors.Join(err, t.p.CloseSession(sh))
	}
	t.anchor = sh
	return nil
}

func findSlot(p *pkcs11.Ctx, label string) (uint, error) {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("listing slots: %w", err)
	}
	var found []uint
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil || ti.Label != label {
			continue
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 || ti.Flags&pkcs11.CKF_USER_PIN_INITIALIZED == 0 {
			return 0, fmt.Errorf("token in slot %d is not initialised with a user PIN", s)
		}
		found = append(found, s)
	}
	switch len(found) {
	case 0:
		return 0, errors.New("no token with that label")
	case 1:
		return found[0], nil
	default:
		return 0, fmt.Errorf("%d tokens carry that label (slots %v)", len(found), found)
	}
}

// Close waits for operations in flight, closes every session, logs out and
// releases the module. Signers and Wrappers of the Token fail with ErrClosed
// afterwards. Closing twice is a no-op.
func (t *Token) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.done)
	t.mu.Unlock()

	// Taking every slot of the semaphore waits for operations in flight.
	for range cap(t.sem) {
		t.sem <- struct{}{}
	}
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()

	var errs []error
	for _, sh := range idle {
		if err := t.p.CloseSession(sh); err != nil {
			errs = append(errs, fmt.Errorf("closing session: %w", err))
		}
	}
	if err := t.mod.Logout(t.slot, t.anchor); err != nil {
		errs = append(errs, err)
	}
	if err := t.p.CloseSession(t.anchor); err != nil {
		errs = append(errs, fmt.Errorf("closing session: %w", err))
	}
	if err := t.mod.Release(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing token %q: %w", t.label, err)
	}
	t.log.Info("closed PKCS#11 token", "token", t.label)
	return nil
}

// withSession runs fn on a pooled session. A session on which fn failed
// with a PKCS#11 error may hold an unfinished operation, so it is closed
// rather than reused.
func (t *Token) withSession(ctx context.Context, fn func(sh pkcs11.SessionHandle) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case t.sem <- struct{}{}:
	case <-t.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-t.sem }()

	sh, err := t.session()
	if err != nil {
		return err
	}
	err = fn(sh)
	var perr pkcs11.Error
	if errors.As(err, &perr) {
		if cerr := t.p.CloseSession(sh); cerr != nil {
			t.log.Warn("closing failed session", "token", t.label, "err", cerr)
		}
		return err
	}
	t.mu.Lock()
	t.idle = append(t.idle, sh)
	t.mu.Unlock()
	return err
}

func (t *Token) session() (pkcs11.SessionHandle, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, ErrClosed
	}
	if n := len(t.idle); n > 0 {
		sh := t.idle[n-1]
		t.idle = t.idle[:n-1]
		return sh, nil
	}
	sh, err := t.p.OpenSession(t.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return 0, fmt.Errorf("opening session on token %q: %w", t.label, err)
	}
	return sh, nil
}

// findOne returns the single object matching tmpl: ErrKeyNotFound when there
// is none, an error when there are several.
func (t *Token) findOne(sh pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	objs, err := t.find(sh, tmpl, 2)
	if err != nil {
		return 0, err
	}
	switch len(objs) {
	case 0:
		return 0, ErrKeyNotFound
	case 1:
		return objs[0], nil
	default:
		return 0, errors.New("several objects match")
	}
}

// find returns up to max objects matching tmpl.
func (t *Token) find(sh pkcs11.SessionHandle, tmpl []*pkcs11.Attribute, max int) (objs []pkcs11.ObjectHandle, err error) {
	if err := t.p.FindObjectsInit(sh, tmpl); err != nil {
		return nil, fmt.Errorf("searching objects: %w", err)
	}
	defer func() {
		if ferr := t.p.FindObjectsFinal(sh); ferr != nil && err == nil {
			err = fmt.Errorf("ending object search: %w", ferr)
		}
	}()
	for len(objs) < max {
		batch, _, err := t.p.FindObjects(sh, max-len(objs))
		if err != nil {
			return nil, fmt.Errorf("searching objects: %w", err)
		}
		if len(batch) == 0 {
			break
		}
		objs = append(objs, batch...)
	}
	return objs, nil
}

// labelTaken reports whether a private or secret key carries label.
func (t *Token) labelTaken(sh pkcs11.SessionHandle, label string) (bool, error) {
	for _, class := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_SECRET_KEY} {
		objs, err := t.find(sh, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		}, 1)
		if err != nil {
			return false, err
		}
		if len(objs) > 0 {
			return true, nil
		}
	}
	return false, nil
}

// newID returns a random CKA_ID shared by the objects of one key.
func (t *Token) newID() ([]byte, error) {
	id := make([]byte, 16)
	if _, err := io.ReadFull(t.rand, id); err != nil {
		return nil, fmt.Errorf("generating key ID: %w", err)
	}
	return id, nil
}

// KeyAttributes are the protection attributes of a key as the token
// reports them.
type KeyAttributes struct {
	Sensitive        bool // CKA_SENSITIVE
	Extractable      bool // CKA_EXTRACTABLE
	AlwaysSensitive  bool // CKA_ALWAYS_SENSITIVE
	NeverExtractable bool // CKA_NEVER_EXTRACTABLE
}

// KeyAttributes reads the protection attributes of the private key, or if
// there is none the secret key, labelled label. It returns ErrKeyNotFound if
// neither exists.
func (t *Token) KeyAttributes(ctx context.Context, label string) (KeyAttributes, error) {
	var ka KeyAttributes
	err := t.withSession(ctx, func(sh pkcs11.SessionHandle) error {
		var obj pkcs11.ObjectHandle
		var err error
		for _, class := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_SECRET_KEY} {
			obj, err = t.findOne(sh, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			})
			if !errors.Is(err, ErrKeyNotFound) {
				break
			}
		}
		if err != nil {
			return err
		}
		attrs, err := t.p.GetAttributeValue(sh, obj, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_ALWAYS_SENSITIVE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_NEVER_EXTRACTABLE, nil),
		})
		if err != nil {
			return fmt.Errorf("reading attributes: %w", err)
		}
		for _, a := range attrs {
			var dst *bool
			switch a.Type {
			case pkcs11.CKA_SENSITIVE:
				dst = &ka.Sensitive
			case pkcs11.CKA_EXTRACTABLE:
				dst = &ka.Extractable
			case pkcs11.CKA_ALWAYS_SENSITIVE:
				dst = &ka.AlwaysSensitive
			case pkcs11.CKA_NEVER_EXTRACTABLE:
				dst = &ka.NeverExtractable
			default:
				continue
			}
			if len(a.Value) != 1 {
				return fmt.Errorf("attribute 0x%x has %d bytes, want a CK_BBOOL", a.Type, len(a.Value))
			}
			*dst = a.Value[0] != 0
		}
		return nil
	})
	if err != nil {
		return KeyAttributes{}, fmt.Errorf("reading attributes of key %q: %w", label, err)
	}
	return ka, nil
}
