package hsm

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/miekg/pkcs11"
)

const (
	// wrapVersion is the first byte of every blob Wrap produces.
	wrapVersion = 1
	gcmIVSize   = 12
	gcmTagSize  = 16
)

// wrapAAD is authenticated with every blob, binding it to its format.
var wrapAAD = []byte("sigil hsm wrap v1")

// Wrapper is an AES-256 key in the token that encrypts other keys. It is
// safe for concurrent use.
type Wrapper struct {
	tok   *Token
	label string
	key   pkcs11.ObjectHandle
}

// GenerateAESKey generates an AES-256 token secret key that is sensitive,
// not extractable and usable to encrypt, decrypt, wrap and unwrap. It
// returns ErrKeyExists if a private or secret key already carries label.
func (t *Token) GenerateAESKey(ctx context.Context, label string) error {
	if label == "" {
		return errors.New("generating AES key: empty label")
	}
	id, err := t.newID()
	if err != nil {
		return fmt.Errorf("generating AES key %q: %w", label, err)
	}
	t.genMu.Lock()
	defer t.genMu.Unlock()
	err = t.withSession(ctx, func(sh pkcs11.SessionHandle) error {
		taken, err := t.labelTaken(sh, label)
		if err != nil {
			return err
		}
		if taken {
			return ErrKeyExists
		}
		tmpl := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
			pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		}
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}
		if _, err := t.p.GenerateKey(sh, mech, tmpl); err != nil {
			return fmt.Errorf("generating key: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("generating AES key %q: %w", label, err)
	}
	t.log.Info("generated AES key in token", "token", t.label, "key", label)
	return nil
}

// Wrapper returns the AES key labelled label, or ErrKeyNotFound.
func (t *Token) Wrapper(ctx context.Context, label string) (*Wrapper, error) {
	var w *Wrapper
	err := t.withSession(ctx, func(sh pkcs11.SessionHandle) error {
		obj, err := t.findOne(sh, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		})
		if err != nil {
			return err
		}
		w = &Wrapper{tok: t, label: label, key: obj}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("loading AES key %q: %w", label, err)
	}
	return w, nil
}

// Wrap encrypts key inside the token with CKM_AES_GCM under a fresh random
// 12-byte IV and a 128-bit tag. The blob is one version byte, the IV, then
// the ciphertext with the tag appended.
func (w *Wrapper) Wrap(ctx context.Context, key []byte) ([]byte, error) {
	if len(key) == 0 {
		return nil, fmt.Errorf("wrapping with key %q: nothing to wrap", w.label)
	}
	iv := make([]byte, gcmIVSize)
	if _, err := io.ReadFull(w.tok.rand, iv); err != nil {
		return nil, fmt.Errorf("wrapping with key %q: generating IV: %w", w.label, err)
	}
	var blob []byte
	err := w.tok.withSession(ctx, func(sh pkcs11.SessionHandle) error {
		params := pkcs11.NewGCMParams(iv, wrapAAD, gcmTagSize*8)
		defer params.Free()
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}
		if err := w.tok.p.EncryptInit(sh, mech, w.key); err != nil {
			return fmt.Errorf("starting encryption: %w", err)
		}
		ct, err := w.tok.p.Encrypt(sh, key)
		if err != nil {
			return fmt.Errorf("encrypting: %w", err)
		}
		if len(ct) != len(key)+gcmTagSize {
			return fmt.Errorf("token returned %d bytes of ciphertext, want %d", len(ct), len(key)+gcmTagSize)
		}
		// Some tokens choose the IV themselves and write it back.
		used := params.IV()
		if len(used) != gcmIVSize {
			return fmt.Errorf("token used a %d-byte IV, want %d", len(used), gcmIVSize)
		}
		blob = make([]byte, 0, 1+gcmIVSize+len(ct))
		blob = append(blob, wrapVersion)
		blob = append(blob, used...)
		blob = append(blob, ct...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("wrapping with key %q: %w", w.label, err)
	}
	return blob, nil
}

// Unwrap decrypts a blob made by Wrap with the same key. A blob that is
// truncated, tampered with, of an unknown version or wrapped by another key
// yields an error matching ErrUnwrap.
func (w *Wrapper) Unwrap(ctx context.Context, blob []byte) ([]byte, error) {
	iv, ct, err := splitBlob(blob)
	if err != nil {
		return nil, fmt.Errorf("unwrapping with key %q: %w", w.label, err)
	}
	var key []byte
	err = w.tok.withSession(ctx, func(sh pkcs11.SessionHandle) error {
		params := pkcs11.NewGCMParams(iv, wrapAAD, gcmTagSize*8)
		defer params.Free()
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}
		if err := w.tok.p.DecryptInit(sh, mech, w.key); err != nil {
			return fmt.Errorf("starting decryption: %w", err)
		}
		var err error
		key, err = w.tok.p.Decrypt(sh, ct)
		if isBadCiphertext(err) {
			return fmt.Errorf("%w: decrypting: %w", ErrUnwrap, err)
		}
		if err != nil {
			return fmt.Errorf("decrypting: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("unwrapping with key %q: %w", w.label, err)
	}
	return key, nil
}

// splitBlob checks a blob's framing and returns its IV and ciphertext.
func splitBlob(blob []byte) (iv, ct []byte, err error) {
	if len(blob) < 1+gcmIVSize+gcmTagSize+1 {
		return nil, nil, fmt.Errorf("%w: blob of %d bytes is too short", ErrUnwrap, len(blob))
	}
	if blob[0] != wrapVersion {
		return nil, nil, fmt.Errorf("%w: unknown blob version %d", ErrUnwrap, blob[0])
	}
	return blob[1 : 1+gcmIVSize], blob[1+gcmIVSize:], nil
}

// isBadCiphertext reports whether an error of C_Decrypt, after a
// successful C_DecryptInit, means the ciphertext rather than the token is at
// fault. SoftHSM2 reports a GCM tag mismatch as CKR_GENERAL_ERROR, so that
// code counts too; the cause stays wrapped for the log.
func isBadCiphertext(err error) bool {
	var perr pkcs11.Error
	if !errors.As(err, &perr) {
		return false
	}
	switch perr {
	case pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE, pkcs11.CKR_GENERAL_ERROR:
		return true
	}
	return false
}
