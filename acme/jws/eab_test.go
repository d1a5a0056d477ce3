package jws

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	testNewAccountURL = "https://ca.example/acme/new-account"
	testEABKeyID      = "kid-1"
)

var testMACKey = bytes.Repeat([]byte("0123456789abcdef"), 4) // 64 bytes: long enough for HS512

func testMACKeys(_ context.Context, keyID string) ([]byte, error) {
	switch keyID {
	case testEABKeyID:
		return testMACKey, nil
	case "short":
		return []byte("too short"), nil
	case "used":
		return nil, unauthorized("this EAB key is already bound to an account")
	case "broken":
		return nil, fmt.Errorf("reading EAB key: %w", errStorageDown)
	}
	return nil, ErrNotFound
}

// newAccountRequest returns a verified newAccount request signed by key.
func newAccountRequest(t *testing.T, alg jose.SignatureAlgorithm, key any) *Request {
	t.Helper()
	e := newEnv(t)
	body := sign(t, signSpec{alg: alg, key: key, nonce: e.nonce, url: testNewAccountURL}, []byte(`{"termsOfServiceAgreed":true}`))
	req, err := e.v.Verify(t.Context(), body, testNewAccountURL, JWK)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return req
}

// eabSpec builds an EAB the way lego and certbot do: HMAC over the
// account's public JWK, kid and url in the protected header.
type eabSpec struct {
	alg     jose.SignatureAlgorithm
	macKey  []byte
	keyID   string
	url     string
	payload any // the JWK to bind; marshalled with encoding/json
	extra   map[jose.HeaderKey]any
}

func makeEAB(t *testing.T, s eabSpec) []byte {
	t.Helper()
	payload, err := json.Marshal(s.payload)
	if err != nil {
		t.Fatal(err)
	}
	extra := map[jose.HeaderKey]any{"kid": s.keyID, "url": s.url}
	for k, v := range s.extra {
		extra[k] = v
	}
	return sign(t, signSpec{alg: s.alg, key: s.macKey, noJWK: true, extra: extra}, payload)
}

func TestVerifyEAB(t *testing.T) {
	k := keySet(t)
	good := func() eabSpec {
		return eabSpec{alg: jose.HS256, macKey: testMACKey, keyID: testEABKeyID, url: testNewAccountURL, payload: pub(k.p256)}
	}
	tests := []struct {
		name       string
		outer      func(t *testing.T) *Request
		eab        func(t *testing.T) []byte
		wantType   string
		wantStatus int
	}{
		{name: "HS256", eab: func(t *testing.T) []byte { return makeEAB(t, good()) }},
		{name: "HS384", eab: func(t *testing.T) []byte { s := good(); s.alg = jose.HS384; return makeEAB(t, s) }},
		{name: "HS512", eab: func(t *testing.T) []byte { s := good(); s.alg = jose.HS512; return makeEAB(t, s) }},
		{
			name:  "RSA account key",
			outer: func(t *testing.T) *Request { return newAccountRequest(t, jose.RS256, k.rsa2048) },
			eab:   func(t *testing.T) []byte { s := good(); s.payload = pub(k.rsa2048); return makeEAB(t, s) },
		},
		{
			name: "payload JWK with extra members",
			eab: func(t *testing.T) []byte {
				s := good()
				s.payload = &jose.JSONWebKey{Key: &k.p256.PublicKey, KeyID: "client-kid", Use: "sig", Algorithm: "ES256"}
				return makeEAB(t, s)
			},
		},
		{
			name:     "unknown key ID",
			eab:      func(t *testing.T) []byte { s := good(); s.keyID = "nope"; return makeEAB(t, s) },
			wantType: TypeUnauthorized, wantStatus: http.StatusForbidden,
		},
		{
			name:     "key already bound",
			eab:      func(t *testing.T) []byte { s := good(); s.keyID = "used"; return makeEAB(t, s) },
			wantType: TypeUnauthorized, wantStatus: http.StatusForbidden,
		},
		{
			name:     "lookup fails",
			eab:      func(t *testing.T) []byte { s := good(); s.keyID = "broken"; return makeEAB(t, s) },
			wantType: TypeServerInternal, wantStatus: http.StatusInternalServerError,
		},
		{
			name: "wrong MAC key",
			eab: func(t *testing.T) []byte {
				s := good()
				s.macKey = bytes.Repeat([]byte{9}, 32)
				return makeEAB(t, s)
			},
			wantType: TypeUnauthorized, wantStatus: http.StatusForbidden,
		},
		{
			name:     "MAC key shorter than the hash",
			eab:      func(t *testing.T) []byte { s := good(); s.keyID = "short"; return makeEAB(t, s) },
			wantType: TypeUnauthorized, wantStatus: http.StatusForbidden,
		},
		{
			name:     "binds another key",
			eab:      func(t *testing.T) []byte { s := good(); s.payload = pub(k.p384); return makeEAB(t, s) },
			wantType: TypeUnauthorized, wantStatus: http.StatusForbidden,
		},
		{
			name: "payload is a private key",
			eab: func(t *testing.T) []byte {
				s := good()
				s.payload = &jose.JSONWebKey{Key: k.p256}
				return makeEAB(t, s)
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "payload not a JWK",
			eab: func(t *testing.T) []byte {
				s := good()
				s.payload = map[string]string{"hello": "world"}
				return makeEAB(t, s)
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "nonce present",
			eab: func(t *testing.T) []byte {
				s := good()
				s.extra = map[jose.HeaderKey]any{"nonce": "bm9uY2U"}
				return makeEAB(t, s)
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "jwk present",
			eab: func(t *testing.T) []byte {
				s := good()
				s.extra = map[jose.HeaderKey]any{"jwk": pub(k.p256)}
				return makeEAB(t, s)
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "url of another endpoint",
			eab: func(t *testing.T) []byte {
				s := good()
				s.url = "https://ca.example/acme/new-order"
				return makeEAB(t, s)
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name:     "no url",
			eab:      func(t *testing.T) []byte { s := good(); s.url = ""; return makeEAB(t, s) },
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name:     "no kid",
			eab:      func(t *testing.T) []byte { s := good(); s.keyID = ""; return makeEAB(t, s) },
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "signed with the account key instead of a MAC",
			eab: func(t *testing.T) []byte {
				payload, _ := json.Marshal(pub(k.p256))
				return sign(t, signSpec{alg: jose.ES256, key: k.p256, noJWK: true,
					extra: map[jose.HeaderKey]any{"kid": testEABKeyID, "url": testNewAccountURL}}, payload)
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "alg none",
			eab: func(t *testing.T) []byte {
				s := good()
				s.extra = map[jose.HeaderKey]any{"alg": "none"}
				return makeEAB(t, s)
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "tampered payload",
			eab: func(t *testing.T) []byte {
				return editJWS(t, makeEAB(t, good()), func(m map[string]any) {
					p, _ := json.Marshal(pub(k.p384))
					m["payload"] = base64.RawURLEncoding.EncodeToString(p)
				})
			},
			wantType: TypeUnauthorized, wantStatus: http.StatusForbidden,
		},
		{
			name: "compact serialization",
			eab: func(t *testing.T) []byte {
				s := good()
				payload, _ := json.Marshal(s.payload)
				c, err := signObj(t, signSpec{alg: s.alg, key: s.macKey, noJWK: true,
					extra: map[jose.HeaderKey]any{"kid": s.keyID, "url": s.url}}, payload).CompactSerialize()
				if err != nil {
					t.Fatal(err)
				}
				b, _ := json.Marshal(c)
				return b
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "unprotected header",
			eab: func(t *testing.T) []byte {
				return editJWS(t, makeEAB(t, good()), func(m map[string]any) { m["header"] = map[string]any{"kid": "x"} })
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name:     "not JSON",
			eab:      func(t *testing.T) []byte { return []byte("true") },
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "outer request signed with kid",
			outer: func(t *testing.T) *Request {
				r := newAccountRequest(t, jose.ES256, k.p256)
				r.KeyID = testAcctURL + "es256"
				return r
			},
			eab:      func(t *testing.T) []byte { return makeEAB(t, good()) },
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var outer *Request
			if tt.outer != nil {
				outer = tt.outer(t)
			} else {
				outer = newAccountRequest(t, jose.ES256, k.p256)
			}
			keyID, err := VerifyEAB(t.Context(), outer, tt.eab(t), testMACKeys)
			if tt.wantType == "" {
				if err != nil {
					t.Fatalf("VerifyEAB: %v", err)
				}
				if keyID != testEABKeyID {
					t.Errorf("keyID = %q", keyID)
				}
				return
			}
			if err == nil {
				t.Fatalf("VerifyEAB accepted, keyID %q", keyID)
			}
			p := wantProblem(t, err, tt.wantType, tt.wantStatus)
			t.Logf("%s: %s (cause: %v)", p.Type, p.Detail, p.cause)
			if p.Type == TypeServerInternal && strings.Contains(p.Detail, "storage") {
				t.Errorf("Detail %q leaks the cause", p.Detail)
			}
		})
	}
}
