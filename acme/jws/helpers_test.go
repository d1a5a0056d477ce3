package jws

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	testURL     = "https://ca.example/acme/new-order"
	testAcctURL = "https://ca.example/acme/acct/"
)

// testKeys are the keys tests sign with. The EC and Ed25519 keys are
// derived from fixed seeds, so that fuzz workers (separate processes) agree
// on them; RSA keys are generated once per process.
type testKeys struct {
	p256, p384, p521 *ecdsa.PrivateKey
	ed               ed25519.PrivateKey
	rsa2048, rsa1024 *rsa.PrivateKey
}

var loadTestKeys = sync.OnceValues(func() (*testKeys, error) {
	var k testKeys
	var err error
	if k.p256, err = fixedEC(elliptic.P256(), "p256"); err != nil {
		return nil, err
	}
	if k.p384, err = fixedEC(elliptic.P384(), "p384"); err != nil {
		return nil, err
	}
	if k.p521, err = fixedEC(elliptic.P521(), "p521"); err != nil {
		return nil, err
	}
	seed := sha256.Sum256([]byte("sigil jws test ed25519"))
	k.ed = ed25519.NewKeyFromSeed(seed[:])
	if k.rsa2048, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	if k.rsa1024, err = rsa.GenerateKey(rand.Reader, 1024); err != nil {
		return nil, err
	}
	return &k, nil
})

func keySet(t testing.TB) *testKeys {
	t.Helper()
	k, err := loadTestKeys()
	if err != nil {
		t.Fatalf("generating test keys: %v", err)
	}
	return k
}

// fixedEC derives a private key on curve from name. The scalar starts with
// 0x01 so that it is below the group order.
func fixedEC(curve elliptic.Curve, name string) (*ecdsa.PrivateKey, error) {
	size := (curve.Params().BitSize + 7) / 8
	h := sha512.Sum512([]byte("sigil jws test " + name))
	d := make([]byte, size)
	copy(d[size-min(size, len(h)):], h[:])
	if size > len(h) {
		d[size-len(h)-1] = 0x01
	} else {
		d[0] = 0x01
	}
	return ecdsa.ParseRawPrivateKey(curve, d)
}

// pub returns the public JWK of a private key.
func pub(priv any) *jose.JSONWebKey {
	switch k := priv.(type) {
	case *ecdsa.PrivateKey:
		return &jose.JSONWebKey{Key: &k.PublicKey}
	case *rsa.PrivateKey:
		return &jose.JSONWebKey{Key: &k.PublicKey}
	case ed25519.PrivateKey:
		return &jose.JSONWebKey{Key: k.Public()}
	}
	panic(fmt.Sprintf("pub of %T", priv))
}

// signSpec says how sign builds a JWS. By default the key is embedded as
// "jwk"; with kid set, "kid" is used instead.
type signSpec struct {
	alg   jose.SignatureAlgorithm
	key   any // private key, or []byte for HMAC
	kid   string
	noJWK bool
	nonce string
	url   string
	// extra header members, set last: they override alg, jwk, kid...
	extra map[jose.HeaderKey]any
}

func sign(t testing.TB, s signSpec, payload []byte) []byte {
	t.Helper()
	obj := signObj(t, s, payload)
	return []byte(obj.FullSerialize())
}

func signObj(t testing.TB, s signSpec, payload []byte) *jose.JSONWebSignature {
	t.Helper()
	sk := jose.SigningKey{Algorithm: s.alg, Key: s.key}
	opts := &jose.SignerOptions{ExtraHeaders: map[jose.HeaderKey]any{}}
	switch {
	case s.kid != "":
		sk.Key = jose.JSONWebKey{Key: s.key, KeyID: s.kid}
	case !s.noJWK:
		opts.EmbedJWK = true
	}
	if s.nonce != "" {
		opts.ExtraHeaders["nonce"] = s.nonce
	}
	if s.url != "" {
		opts.ExtraHeaders["url"] = s.url
	}
	for k, v := range s.extra {
		opts.ExtraHeaders[k] = v
	}
	signer, err := jose.NewSigner(sk, opts)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	if payload == nil {
		payload = []byte{}
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return obj
}

// memNonces is an in-memory Nonces that counts Consume calls.
type memNonces struct {
	mu       sync.Mutex
	issued   map[string]bool
	consumed int
	err      error
}

func newMemNonces() *memNonces { return &memNonces{issued: map[string]bool{}} }

func (n *memNonces) issue() string {
	b := make([]byte, 16)
	rand.Read(b)
	s := base64.RawURLEncoding.EncodeToString(b)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.issued[s] = true
	return s
}

func (n *memNonces) Consume(_ context.Context, nonce string) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.consumed++
	if n.err != nil {
		return false, n.err
	}
	if !n.issued[nonce] {
		return false, nil
	}
	delete(n.issued, nonce)
	return true, nil
}

func (n *memNonces) calls() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.consumed
}

// memAccounts maps account URLs to keys. URLs ending in "deactivated" are
// refused with unauthorized; "broken" fails like a storage error.
type memAccounts map[string]*jose.JSONWebKey

var errStorageDown = errors.New("storage down")

func (a memAccounts) AccountKey(_ context.Context, u string) (*jose.JSONWebKey, error) {
	switch u {
	case testAcctURL + "deactivated":
		return nil, unauthorized("account is deactivated")
	case testAcctURL + "broken":
		return nil, fmt.Errorf("reading account: %w", errStorageDown)
	}
	k, ok := a[u]
	if !ok {
		return nil, fmt.Errorf("account %s: %w", u, ErrNotFound)
	}
	return k, nil
}

// wantProblem fails t unless err is a *Problem of type typ and status.
func wantProblem(t testing.TB, err error, typ string, status int) *Problem {
	t.Helper()
	var p *Problem
	if !errors.As(err, &p) {
		t.Fatalf("error = %v (%T), want a *Problem %s", err, err, typ)
	}
	if p.Type != typ || p.Status != status {
		t.Fatalf("problem = %s %d %q (%v), want %s %d", p.Type, p.Status, p.Detail, p.cause, typ, status)
	}
	return p
}
