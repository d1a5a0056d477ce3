package barrier

import (
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// keyringAAD binds the encrypted keyring to its purpose.
const keyringAAD = "barrier/keyring"

// keyringV1 is the version byte of an encrypted keyring:
// version || nonce || AES-256-GCM(master key, keyring JSON).
const keyringV1 = 1

// dataKey is one keyring term: a data key and the cipher made from it.
type dataKey struct {
	term    uint32
	key     []byte
	created time.Time
	aead    cipher.AEAD
}

// zero overwrites the key and drops the cipher.
func (k *dataKey) zero() {
	if k == nil {
		return
	}
	clear(k.key)
	k.aead = nil
}

// keyring holds every term, oldest first; active is the newest.
type keyring struct {
	terms  []*dataKey
	active *dataKey
}

func (r *keyring) lookup(term uint32) *dataKey {
	// Terms are few and the newest is read most; search from the end.
	for i := len(r.terms) - 1; i >= 0; i-- {
		if r.terms[i].term == term {
			return r.terms[i]
		}
	}
	return nil
}

// zero overwrites every key in the keyring. It accepts a nil keyring.
func (r *keyring) zero() {
	if r == nil {
		return
	}
	for _, k := range r.terms {
		k.zero()
	}
}

// newDataKey makes a fresh data key for term.
func (b *Barrier) newDataKey(term uint32) (*dataKey, error) {
	key := make([]byte, keySize)
	if _, err := io.ReadFull(b.rand, key); err != nil {
		return nil, fmt.Errorf("generating data key: %w", err)
	}
	aead, err := newAEAD(key)
	if err != nil {
		clear(key)
		return nil, fmt.Errorf("making data key cipher: %w", err)
	}
	return &dataKey{term: term, key: key, created: b.clock().UTC(), aead: aead}, nil
}

// marshalKeyring encodes the keyring as
//
//	{"version":1,"terms":[{"term":1,"key":"<base64>","created":"<RFC 3339>"},...]}
//
// into a single buffer sized up front, so that the only copy of the keys in
// encoded form is the returned slice, which the caller clears.
func marshalKeyring(r *keyring) []byte {
	const perTerm = len(`{"term":,"key":"","created":""},`) + 10 + 64
	buf := make([]byte, 0, 32+len(r.terms)*(perTerm+base64.StdEncoding.EncodedLen(keySize)))
	buf = append(buf, `{"version":1,"terms":[`...)
	for i, k := range r.terms {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"term":`...)
		buf = strconv.AppendUint(buf, uint64(k.term), 10)
		buf = append(buf, `,"key":"`...)
		buf = base64.StdEncoding.AppendEncode(buf, k.key)
		buf = append(buf, `","created":"`...)
		buf = k.created.AppendFormat(buf, time.RFC3339Nano)
		buf = append(buf, `"}`...)
	}
	return append(buf, "]}"...)
}

type keyringJSON struct {
	Version int `json:"version"`
	Terms   []struct {
		Term    uint32    `json:"term"`
		Key     []byte    `json:"key"`
		Created time.Time `json:"created"`
	} `json:"terms"`
}

// unmarshalKeyring parses and checks a keyring: at least one term, terms
// strictly increasing from 1 or more, every key 32 bytes.
func unmarshalKeyring(data []byte) (*keyring, error) {
	var doc keyringJSON
	err := json.Unmarshal(data, &doc)
	r := &keyring{}
	fail := func(err error) (*keyring, error) {
		for _, t := range doc.Terms {
			clear(t.Key)
		}
		r.zero()
		return nil, err
	}
	if err != nil {
		return fail(fmt.Errorf("parsing keyring: %w", err))
	}
	if doc.Version != 1 {
		return fail(fmt.Errorf("parsing keyring: unknown version %d", doc.Version))
	}
	if len(doc.Terms) == 0 {
		return fail(errors.New("parsing keyring: no terms"))
	}
	var prev uint32
	for _, t := range doc.Terms {
		if t.Term <= prev {
			return fail(fmt.Errorf("parsing keyring: term %d after term %d", t.Term, prev))
		}
		prev = t.Term
		if len(t.Key) != keySize {
			return fail(fmt.Errorf("parsing keyring: term %d has a %d-byte key", t.Term, len(t.Key)))
		}
		aead, err := newAEAD(t.Key)
		if err != nil {
			return fail(fmt.Errorf("parsing keyring: term %d: %w", t.Term, err))
		}
		r.terms = append(r.terms, &dataKey{term: t.Term, key: t.Key, created: t.Created, aead: aead})
	}
	r.active = r.terms[len(r.terms)-1]
	return r, nil
}

// sealKeyring encodes the keyring and encrypts it under the master key.
func sealKeyring(master []byte, r *keyring, rand io.Reader) ([]byte, error) {
	aead, err := newAEAD(master)
	if err != nil {
		return nil, fmt.Errorf("sealing keyring: %w", err)
	}
	plain := marshalKeyring(r)
	defer clear(plain)
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(plain)+aead.Overhead())
	out[0] = keyringV1
	if _, err := io.ReadFull(rand, out[1:]); err != nil {
		return nil, fmt.Errorf("sealing keyring: reading nonce: %w", err)
	}
	return aead.Seal(out, out[1:], plain, []byte(keyringAAD)), nil
}

// openKeyring decrypts a keyring sealed by sealKeyring. A wrong master key
// or a changed byte is ErrDecrypt.
func openKeyring(master []byte, sealed []byte) (*keyring, error) {
	if len(sealed) < 1+nonceSize || sealed[0] != keyringV1 {
		return nil, fmt.Errorf("opening keyring: %w: malformed", ErrDecrypt)
	}
	aead, err := newAEAD(master)
	if err != nil {
		return nil, fmt.Errorf("opening keyring: %w", err)
	}
	plain, err := aead.Open(nil, sealed[1:1+nonceSize], sealed[1+nonceSize:], []byte(keyringAAD))
	if err != nil {
		return nil, fmt.Errorf("opening keyring: %w", ErrDecrypt)
	}
	defer clear(plain)
	r, err := unmarshalKeyring(plain)
	if err != nil {
		return nil, fmt.Errorf("opening keyring: %w", err)
	}
	return r, nil
}
