package jws

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// env is one table case's world: a verifier whose nonce store has issued
// nonce, and whose accounts are testAcctURL + "es256", "es384", "rs256",
// "eddsa".
type env struct {
	keys   *testKeys
	nonces *memNonces
	nonce  string
	v      *Verifier
}

func newEnv(t *testing.T) *env {
	k := keySet(t)
	n := newMemNonces()
	return &env{
		keys:   k,
		nonces: n,
		nonce:  n.issue(),
		v: &Verifier{
			Accounts: memAccounts{
				testAcctURL + "es256": pub(k.p256),
				testAcctURL + "es384": pub(k.p384),
				testAcctURL + "rs256": pub(k.rsa2048),
				testAcctURL + "eddsa": pub(k.ed),
			},
			Nonces: n,
		},
	}
}

// jwkReq signs payload with key, embedding it as jwk, with the env's nonce.
func (e *env) jwkReq(t *testing.T, alg jose.SignatureAlgorithm, key any, payload string) []byte {
	return sign(t, signSpec{alg: alg, key: key, nonce: e.nonce, url: testURL}, []byte(payload))
}

// kidReq signs payload with key under the account kid.
func (e *env) kidReq(t *testing.T, alg jose.SignatureAlgorithm, key any, kid, payload string) []byte {
	return sign(t, signSpec{alg: alg, key: key, kid: testAcctURL + kid, nonce: e.nonce, url: testURL}, []byte(payload))
}

// editJWS decodes a flattened JWS into a map, lets edit change it, and
// re-encodes it without re-signing.
func editJWS(t *testing.T, body []byte, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// editProtected rewrites the protected header's JSON text.
func editProtected(t *testing.T, body []byte, edit func(string) string) []byte {
	return editJWS(t, body, func(m map[string]any) {
		b, err := base64.RawURLEncoding.DecodeString(m["protected"].(string))
		if err != nil {
			t.Fatal(err)
		}
		m["protected"] = base64.RawURLEncoding.EncodeToString([]byte(edit(string(b))))
	})
}

func TestVerifyAccepts(t *testing.T) {
	tests := []struct {
		name        string
		mode        KeyMode
		body        func(t *testing.T, e *env) []byte
		wantAlg     string
		wantKID     string
		wantKey     func(k *testKeys) *jose.JSONWebKey
		wantPayload string
	}{
		{
			name: "ES256 jwk",
			mode: JWK,
			body: func(t *testing.T, e *env) []byte {
				return e.jwkReq(t, jose.ES256, e.keys.p256, `{"termsOfServiceAgreed":true}`)
			},
			wantAlg: "ES256", wantKey: func(k *testKeys) *jose.JSONWebKey { return pub(k.p256) },
			wantPayload: `{"termsOfServiceAgreed":true}`,
		},
		{
			name:    "ES384 jwk",
			mode:    JWK,
			body:    func(t *testing.T, e *env) []byte { return e.jwkReq(t, jose.ES384, e.keys.p384, `{}`) },
			wantAlg: "ES384", wantKey: func(k *testKeys) *jose.JSONWebKey { return pub(k.p384) },
			wantPayload: `{}`,
		},
		{
			name:    "RS256 2048 jwk",
			mode:    JWK,
			body:    func(t *testing.T, e *env) []byte { return e.jwkReq(t, jose.RS256, e.keys.rsa2048, `{}`) },
			wantAlg: "RS256", wantKey: func(k *testKeys) *jose.JSONWebKey { return pub(k.rsa2048) },
			wantPayload: `{}`,
		},
		{
			name:    "EdDSA jwk",
			mode:    JWK,
			body:    func(t *testing.T, e *env) []byte { return e.jwkReq(t, jose.EdDSA, e.keys.ed, `{}`) },
			wantAlg: "EdDSA", wantKey: func(k *testKeys) *jose.JSONWebKey { return pub(k.ed) },
			wantPayload: `{}`,
		},
		{
			name: "ES256 kid",
			body: func(t *testing.T, e *env) []byte {
				return e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{"identifiers":[]}`)
			},
			wantAlg: "ES256", wantKID: testAcctURL + "es256",
			wantKey:     func(k *testKeys) *jose.JSONWebKey { return pub(k.p256) },
			wantPayload: `{"identifiers":[]}`,
		},
		{
			name:    "ES384 kid",
			body:    func(t *testing.T, e *env) []byte { return e.kidReq(t, jose.ES384, e.keys.p384, "es384", `{}`) },
			wantAlg: "ES384", wantKID: testAcctURL + "es384",
			wantKey:     func(k *testKeys) *jose.JSONWebKey { return pub(k.p384) },
			wantPayload: `{}`,
		},
		{
			name:    "RS256 kid",
			body:    func(t *testing.T, e *env) []byte { return e.kidReq(t, jose.RS256, e.keys.rsa2048, "rs256", `{}`) },
			wantAlg: "RS256", wantKID: testAcctURL + "rs256",
			wantKey:     func(k *testKeys) *jose.JSONWebKey { return pub(k.rsa2048) },
			wantPayload: `{}`,
		},
		{
			name:    "EdDSA kid",
			body:    func(t *testing.T, e *env) []byte { return e.kidReq(t, jose.EdDSA, e.keys.ed, "eddsa", `{}`) },
			wantAlg: "EdDSA", wantKID: testAcctURL + "eddsa",
			wantKey:     func(k *testKeys) *jose.JSONWebKey { return pub(k.ed) },
			wantPayload: `{}`,
		},
		{
			name:    "POST-as-GET",
			body:    func(t *testing.T, e *env) []byte { return e.kidReq(t, jose.ES256, e.keys.p256, "es256", "") },
			wantAlg: "ES256", wantKID: testAcctURL + "es256",
			wantKey: func(k *testKeys) *jose.JSONWebKey { return pub(k.p256) },
		},
		{
			name:    "revokeCert with kid",
			mode:    KIDOrJWK,
			body:    func(t *testing.T, e *env) []byte { return e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`) },
			wantAlg: "ES256", wantKID: testAcctURL + "es256",
			wantKey:     func(k *testKeys) *jose.JSONWebKey { return pub(k.p256) },
			wantPayload: `{}`,
		},
		{
			name:    "revokeCert with jwk",
			mode:    KIDOrJWK,
			body:    func(t *testing.T, e *env) []byte { return e.jwkReq(t, jose.ES384, e.keys.p384, `{}`) },
			wantAlg: "ES384",
			wantKey: func(k *testKeys) *jose.JSONWebKey { return pub(k.p384) }, wantPayload: `{}`,
		},
		{
			name: "empty unprotected header and unknown member",
			body: func(t *testing.T, e *env) []byte {
				return editJWS(t, e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`), func(m map[string]any) {
					m["header"] = map[string]any{}
					m["x-extension"] = 1
				})
			},
			wantAlg: "ES256", wantKID: testAcctURL + "es256",
			wantKey:     func(k *testKeys) *jose.JSONWebKey { return pub(k.p256) },
			wantPayload: `{}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			body := tt.body(t, e)
			req, err := e.v.Verify(t.Context(), body, testURL, tt.mode)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			wantTP, err := Thumbprint(tt.wantKey(e.keys))
			if err != nil {
				t.Fatal(err)
			}
			if req.Algorithm != tt.wantAlg || req.KeyID != tt.wantKID || req.URL != testURL ||
				req.Nonce != e.nonce || req.Thumbprint != wantTP || string(req.Payload) != tt.wantPayload {
				t.Errorf("Request = %+v, want alg %s kid %q thumbprint %s payload %q", req, tt.wantAlg, tt.wantKID, wantTP, tt.wantPayload)
			}
			if !sameKey(req.Key, tt.wantKey(e.keys)) || !req.Key.IsPublic() {
				t.Errorf("Key = %+v, want the public key that signed", req.Key)
			}
			if got := req.IsPostAsGet(); got != (tt.wantPayload == "") {
				t.Errorf("IsPostAsGet = %v", got)
			}
			if n := e.nonces.calls(); n != 1 {
				t.Errorf("nonce store consulted %d times, want 1", n)
			}
			// A second use of the same body is a replay.
			_, err = e.v.Verify(t.Context(), body, testURL, tt.mode)
			wantProblem(t, err, TypeBadNonce, http.StatusBadRequest)
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	const (
		malformedT = TypeMalformed
		bad        = http.StatusBadRequest
	)
	tests := []struct {
		name       string
		mode       KeyMode
		url        string // the request URL; testURL when empty
		body       func(t *testing.T, e *env) []byte
		wantType   string
		wantStatus int
		// consumes is true when the failure is the nonce store's answer:
		// every other failure must leave the nonce alone.
		consumes bool
	}{
		{
			name:     "url mismatch",
			url:      "https://ca.example/acme/new-account",
			body:     func(t *testing.T, e *env) []byte { return e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`) },
			wantType: TypeUnauthorized, wantStatus: http.StatusForbidden,
		},
		{
			name:     "url differs in a trailing slash",
			url:      testURL + "/",
			body:     func(t *testing.T, e *env) []byte { return e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`) },
			wantType: TypeUnauthorized, wantStatus: http.StatusForbidden,
		},
		{
			name: "unknown nonce",
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, kid: testAcctURL + "es256", nonce: "bm90LWlzc3VlZA", url: testURL}, []byte(`{}`))
			},
			wantType: TypeBadNonce, wantStatus: bad, consumes: true,
		},
		{
			name: "no nonce",
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, kid: testAcctURL + "es256", url: testURL}, []byte(`{}`))
			},
			wantType: TypeBadNonce, wantStatus: bad,
		},
		{
			name: "nonce not base64url",
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, kid: testAcctURL + "es256", nonce: "a+b/c", url: testURL}, []byte(`{}`))
			},
			wantType: TypeBadNonce, wantStatus: bad,
		},
		{
			name: "nonce not a string",
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, kid: testAcctURL + "es256", url: testURL,
					extra: map[jose.HeaderKey]any{"nonce": 42}}, []byte(`{}`))
			},
			wantType: TypeBadNonce, wantStatus: bad,
		},
		{
			name: "no url",
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, kid: testAcctURL + "es256", nonce: e.nonce}, []byte(`{}`))
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "url not a string",
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, kid: testAcctURL + "es256", nonce: e.nonce,
					extra: map[jose.HeaderKey]any{"url": []string{testURL}}}, []byte(`{}`))
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "both jwk and kid",
			mode: KIDOrJWK,
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"kid": testAcctURL + "es256"}}, []byte(`{}`))
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "neither jwk nor kid",
			mode: KIDOrJWK,
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, noJWK: true, nonce: e.nonce, url: testURL}, []byte(`{}`))
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name:     "jwk where kid is required",
			mode:     KID,
			body:     func(t *testing.T, e *env) []byte { return e.jwkReq(t, jose.ES256, e.keys.p256, `{}`) },
			wantType: malformedT, wantStatus: bad,
		},
		{
			name:     "kid where jwk is required",
			mode:     JWK,
			body:     func(t *testing.T, e *env) []byte { return e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`) },
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "empty kid",
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, noJWK: true, nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"kid": ""}}, []byte(`{}`))
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "HS256",
			mode: JWK,
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.HS256, key: bytes.Repeat([]byte{7}, 32), nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"jwk": pub(e.keys.p256)}}, []byte(`{}`))
			},
			wantType: TypeBadSignatureAlgorithm, wantStatus: bad,
		},
		{
			name: "HS256 with kid",
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.HS256, key: bytes.Repeat([]byte{7}, 32), noJWK: true, nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"kid": testAcctURL + "es256"}}, []byte(`{}`))
			},
			wantType: TypeBadSignatureAlgorithm, wantStatus: bad,
		},
		{
			name: "alg none",
			body: func(t *testing.T, e *env) []byte {
				return editJWS(t, sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, kid: testAcctURL + "es256", nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"alg": "none"}}, []byte(`{}`)), func(m map[string]any) { m["signature"] = "" })
			},
			wantType: TypeBadSignatureAlgorithm, wantStatus: bad,
		},
		{
			name: "alg none with a signature",
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, kid: testAcctURL + "es256", nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"alg": "none"}}, []byte(`{}`))
			},
			wantType: TypeBadSignatureAlgorithm, wantStatus: bad,
		},
		{
			name:     "PS256",
			mode:     JWK,
			body:     func(t *testing.T, e *env) []byte { return e.jwkReq(t, jose.PS256, e.keys.rsa2048, `{}`) },
			wantType: TypeBadSignatureAlgorithm, wantStatus: bad,
		},
		{
			name:     "ES512",
			mode:     JWK,
			body:     func(t *testing.T, e *env) []byte { return e.jwkReq(t, jose.ES512, e.keys.p521, `{}`) },
			wantType: TypeBadSignatureAlgorithm, wantStatus: bad,
		},
		{
			name: "alg missing",
			body: func(t *testing.T, e *env) []byte {
				return editProtected(t, e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`), func(h string) string {
					return strings.Replace(h, `"alg":"ES256",`, "", 1)
				})
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name:     "RSA 1024",
			mode:     JWK,
			body:     func(t *testing.T, e *env) []byte { return e.jwkReq(t, jose.RS256, e.keys.rsa1024, `{}`) },
			wantType: TypeBadPublicKey, wantStatus: bad,
		},
		{
			name: "RSA exponent wider than 32 bits",
			mode: JWK,
			body: func(t *testing.T, e *env) []byte {
				n := base64.RawURLEncoding.EncodeToString(e.keys.rsa2048.N.Bytes())
				return sign(t, signSpec{alg: jose.RS256, key: e.keys.rsa2048, nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"jwk": map[string]string{"kty": "RSA", "n": n, "e": "AQAAAAAAAAAAAQAB"}}}, []byte(`{}`))
			},
			wantType: TypeBadPublicKey, wantStatus: bad,
		},
		{
			name: "ES384 header with a P-256 jwk",
			mode: JWK,
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"alg": "ES384"}}, []byte(`{}`))
			},
			wantType: TypeBadSignatureAlgorithm, wantStatus: bad,
		},
		{
			name: "ES256 header with a P-384 account key",
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES384, key: e.keys.p384, kid: testAcctURL + "es384", nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"alg": "ES256"}}, []byte(`{}`))
			},
			wantType: TypeBadSignatureAlgorithm, wantStatus: bad,
		},
		{
			name: "RS256 header with an EC jwk",
			mode: JWK,
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"alg": "RS256"}}, []byte(`{}`))
			},
			wantType: TypeBadSignatureAlgorithm, wantStatus: bad,
		},
		{
			name: "P-521 jwk",
			mode: JWK,
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES512, key: e.keys.p521, nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"alg": "ES256"}}, []byte(`{}`))
			},
			wantType: TypeBadPublicKey, wantStatus: bad,
		},
		{
			name: "private key in jwk",
			mode: JWK,
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"jwk": jose.JSONWebKey{Key: e.keys.p256}}}, []byte(`{}`))
			},
			wantType: TypeBadPublicKey, wantStatus: bad,
		},
		{
			name: "symmetric jwk",
			mode: JWK,
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"jwk": jose.JSONWebKey{Key: bytes.Repeat([]byte{1}, 32)}}}, []byte(`{}`))
			},
			wantType: TypeBadPublicKey, wantStatus: bad,
		},
		{
			name: "X25519 jwk",
			mode: JWK,
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.EdDSA, key: e.keys.ed, nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"jwk": map[string]string{"kty": "OKP", "crv": "X25519", "x": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}}, []byte(`{}`))
			},
			wantType: TypeBadPublicKey, wantStatus: bad,
		},
		{
			name: "jwk not a key",
			mode: JWK,
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"jwk": "ES256"}}, []byte(`{}`))
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "jwk of another key",
			mode: JWK,
			body: func(t *testing.T, e *env) []byte {
				other, err := fixedEC(e.keys.p256.Curve, "other")
				if err != nil {
					t.Fatal(err)
				}
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"jwk": pub(other)}}, []byte(`{}`))
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "kid of another account",
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, kid: testAcctURL + "es256", nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"kid": testAcctURL + "eddsa"}}, []byte(`{}`))
			},
			wantType: TypeBadSignatureAlgorithm, wantStatus: bad,
		},
		{
			name: "kid of another account with the same key type",
			body: func(t *testing.T, e *env) []byte {
				other, err := fixedEC(e.keys.p256.Curve, "other")
				if err != nil {
					t.Fatal(err)
				}
				return sign(t, signSpec{alg: jose.ES256, key: other, kid: testAcctURL + "es256", nonce: e.nonce, url: testURL}, []byte(`{}`))
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name:     "unknown kid",
			body:     func(t *testing.T, e *env) []byte { return e.kidReq(t, jose.ES256, e.keys.p256, "404", `{}`) },
			wantType: TypeAccountDoesNotExist, wantStatus: bad,
		},
		{
			name:     "deactivated account",
			body:     func(t *testing.T, e *env) []byte { return e.kidReq(t, jose.ES256, e.keys.p256, "deactivated", `{}`) },
			wantType: TypeUnauthorized, wantStatus: http.StatusForbidden,
		},
		{
			name:     "account store fails",
			body:     func(t *testing.T, e *env) []byte { return e.kidReq(t, jose.ES256, e.keys.p256, "broken", `{}`) },
			wantType: TypeServerInternal, wantStatus: http.StatusInternalServerError,
		},
		{
			name: "tampered payload",
			body: func(t *testing.T, e *env) []byte {
				return editJWS(t, e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{"a":1}`), func(m map[string]any) {
					m["payload"] = base64.RawURLEncoding.EncodeToString([]byte(`{"a":2}`))
				})
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "tampered payload to POST-as-GET",
			body: func(t *testing.T, e *env) []byte {
				return editJWS(t, e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{"a":1}`), func(m map[string]any) { m["payload"] = "" })
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "tampered url",
			url:  "https://ca.example/acme/revoke-cert",
			body: func(t *testing.T, e *env) []byte {
				return editProtected(t, e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`), func(h string) string {
					return strings.Replace(h, "new-order", "revoke-cert", 1)
				})
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "tampered signature",
			body: func(t *testing.T, e *env) []byte {
				return editJWS(t, e.kidReq(t, jose.EdDSA, e.keys.ed, "eddsa", `{}`), func(m map[string]any) {
					s, _ := base64.RawURLEncoding.DecodeString(m["signature"].(string))
					s[0] ^= 1
					m["signature"] = base64.RawURLEncoding.EncodeToString(s)
				})
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "compact serialization",
			body: func(t *testing.T, e *env) []byte {
				s, err := signObj(t, signSpec{alg: jose.ES256, key: e.keys.p256, kid: testAcctURL + "es256", nonce: e.nonce, url: testURL}, []byte(`{}`)).CompactSerialize()
				if err != nil {
					t.Fatal(err)
				}
				return []byte(s)
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "general serialization with one signature",
			body: func(t *testing.T, e *env) []byte {
				return editJWS(t, e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`), func(m map[string]any) {
					m["signatures"] = []any{map[string]any{"protected": m["protected"], "signature": m["signature"]}}
					delete(m, "protected")
					delete(m, "signature")
				})
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "multiple signatures",
			body: func(t *testing.T, e *env) []byte {
				opts := &jose.SignerOptions{ExtraHeaders: map[jose.HeaderKey]any{"nonce": e.nonce, "url": testURL}}
				signer, err := jose.NewMultiSigner([]jose.SigningKey{
					{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: e.keys.p256, KeyID: testAcctURL + "es256"}},
					{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: e.keys.ed, KeyID: testAcctURL + "eddsa"}},
				}, opts)
				if err != nil {
					t.Fatal(err)
				}
				obj, err := signer.Sign([]byte(`{}`))
				if err != nil {
					t.Fatal(err)
				}
				return []byte(obj.FullSerialize())
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "unprotected header",
			body: func(t *testing.T, e *env) []byte {
				return editJWS(t, e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`), func(m map[string]any) {
					m["header"] = map[string]any{"kid": testAcctURL + "eddsa"}
				})
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "b64 false",
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, kid: testAcctURL + "es256", nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"b64": false, "crit": []string{"b64"}}}, []byte(`{}`))
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "b64 true",
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, kid: testAcctURL + "es256", nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"b64": true}}, []byte(`{}`))
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "crit",
			body: func(t *testing.T, e *env) []byte {
				return sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, kid: testAcctURL + "es256", nonce: e.nonce, url: testURL,
					extra: map[jose.HeaderKey]any{"crit": []string{"exp"}, "exp": 1}}, []byte(`{}`))
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "padded base64",
			body: func(t *testing.T, e *env) []byte {
				return editJWS(t, e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{"a":1}`), func(m map[string]any) {
					m["payload"] = base64.URLEncoding.EncodeToString([]byte(`{"a":1}`))
				})
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "standard base64 alphabet",
			body: func(t *testing.T, e *env) []byte {
				return editJWS(t, e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`), func(m map[string]any) {
					s, _ := base64.RawURLEncoding.DecodeString(m["signature"].(string))
					m["signature"] = base64.RawStdEncoding.EncodeToString(append(s[:len(s)-3:len(s)-3], 0xfb, 0xff, 0xfe))
				})
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "base64 with a newline",
			body: func(t *testing.T, e *env) []byte {
				return editJWS(t, e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`), func(m map[string]any) {
					p := m["protected"].(string)
					m["protected"] = p[:10] + "\n" + p[10:]
				})
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "base64 with nonzero padding bits",
			body: func(t *testing.T, e *env) []byte {
				return editJWS(t, e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`), func(m map[string]any) {
					// "{}" is "e30"; "e31" decodes to the same bytes.
					m["payload"] = "e31"
				})
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "no payload member",
			body: func(t *testing.T, e *env) []byte {
				return editJWS(t, e.kidReq(t, jose.ES256, e.keys.p256, "es256", ""), func(m map[string]any) { delete(m, "payload") })
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "no signature member",
			body: func(t *testing.T, e *env) []byte {
				return editJWS(t, e.kidReq(t, jose.ES256, e.keys.p256, "es256", ""), func(m map[string]any) { delete(m, "signature") })
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "member names in another case",
			body: func(t *testing.T, e *env) []byte {
				return editJWS(t, e.kidReq(t, jose.ES256, e.keys.p256, "es256", ""), func(m map[string]any) {
					m["Protected"] = m["protected"]
					delete(m, "protected")
				})
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "duplicate top-level member",
			body: func(t *testing.T, e *env) []byte {
				b := e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`)
				return append([]byte(`{"payload":"","`), b[2:]...)
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "duplicate header member",
			body: func(t *testing.T, e *env) []byte {
				return editProtected(t, e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`), func(h string) string {
					return `{"url":"https://ca.example/elsewhere",` + h[1:]
				})
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name: "protected header not an object",
			body: func(t *testing.T, e *env) []byte {
				return editProtected(t, e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`), func(string) string { return `["ES256"]` })
			},
			wantType: malformedT, wantStatus: bad,
		},
		{
			name:     "not JSON",
			body:     func(t *testing.T, e *env) []byte { return []byte("hello") },
			wantType: malformedT, wantStatus: bad,
		},
		{
			name:     "JSON null",
			body:     func(t *testing.T, e *env) []byte { return []byte("null") },
			wantType: malformedT, wantStatus: bad,
		},
		{
			name:     "empty body",
			body:     func(t *testing.T, e *env) []byte { return nil },
			wantType: malformedT, wantStatus: bad,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			body := tt.body(t, e)
			url := tt.url
			if url == "" {
				url = testURL
			}
			req, err := e.v.Verify(t.Context(), body, url, tt.mode)
			if err == nil {
				t.Fatalf("Verify accepted %s: %+v", body, req)
			}
			p := wantProblem(t, err, tt.wantType, tt.wantStatus)
			t.Logf("%s: %s (cause: %v)", p.Type, p.Detail, p.cause)
			if p.Type == TypeBadSignatureAlgorithm && !slices.Equal(p.Algorithms, []string{"ES256", "ES384", "RS256", "EdDSA"}) {
				t.Errorf("Algorithms = %v", p.Algorithms)
			}
			if p.Type != TypeBadSignatureAlgorithm && p.Algorithms != nil {
				t.Errorf("Algorithms = %v on a %s problem", p.Algorithms, p.Type)
			}
			if got := e.nonces.calls(); tt.consumes != (got > 0) {
				t.Errorf("nonce store consulted %d times; a request refused before the nonce check must not consume it", got)
			}
		})
	}
}

func TestInvalidSignatureKeepsNonce(t *testing.T) {
	e := newEnv(t)
	good := e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{"a":1}`)
	forged := editJWS(t, good, func(m map[string]any) {
		m["payload"] = base64.RawURLEncoding.EncodeToString([]byte(`{"a":2}`))
	})
	_, err := e.v.Verify(t.Context(), forged, testURL, KID)
	wantProblem(t, err, TypeMalformed, http.StatusBadRequest)
	// The nonce is still good for the genuine request.
	req, err := e.v.Verify(t.Context(), good, testURL, KID)
	if err != nil {
		t.Fatalf("Verify after a forged request with the same nonce: %v", err)
	}
	if string(req.Payload) != `{"a":1}` {
		t.Errorf("Payload = %s", req.Payload)
	}
}

func TestURLMismatchKeepsNonce(t *testing.T) {
	e := newEnv(t)
	body := e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`)
	_, err := e.v.Verify(t.Context(), body, "https://ca.example/acme/other", KID)
	wantProblem(t, err, TypeUnauthorized, http.StatusForbidden)
	if _, err := e.v.Verify(t.Context(), body, testURL, KID); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

func TestVerifyStoreFailures(t *testing.T) {
	e := newEnv(t)
	e.nonces.err = errStorageDown
	_, err := e.v.Verify(t.Context(), e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`), testURL, KID)
	p := wantProblem(t, err, TypeServerInternal, http.StatusInternalServerError)
	if !errors.Is(err, errStorageDown) {
		t.Errorf("cause lost: %v", err)
	}
	if strings.Contains(p.Detail, errStorageDown.Error()) {
		t.Errorf("Detail %q leaks the internal cause", p.Detail)
	}

	_, err = e.v.Verify(t.Context(), e.kidReq(t, jose.ES256, e.keys.p256, "broken", `{}`), testURL, KID)
	p = wantProblem(t, err, TypeServerInternal, http.StatusInternalServerError)
	if !errors.Is(err, errStorageDown) || strings.Contains(p.Detail, errStorageDown.Error()) {
		t.Errorf("account store failure: cause %v, detail %q", p.cause, p.Detail)
	}

	// Without a nonce store nothing is accepted.
	v := &Verifier{Accounts: e.v.Accounts}
	_, err = v.Verify(t.Context(), e.kidReq(t, jose.ES256, e.keys.p256, "es256", `{}`), testURL, KID)
	wantProblem(t, err, TypeServerInternal, http.StatusInternalServerError)
}

func TestDecode(t *testing.T) {
	type order struct {
		Identifiers []struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"identifiers"`
		NotAfter string `json:"notAfter"`
	}
	tests := []struct {
		name    string
		payload string
		wantErr bool
		want    string // first identifier value
	}{
		{name: "object", payload: `{"identifiers":[{"type":"dns","value":"a.example"}]}`, want: "a.example"},
		{name: "unknown members ignored", payload: `{"identifiers":[{"type":"dns","value":"a.example"}],"replaces":"x","profile":"y"}`, want: "a.example"},
		{name: "leading whitespace", payload: " \n{\"identifiers\":[]}"},
		{name: "POST-as-GET", payload: "", wantErr: true},
		{name: "null", payload: "null", wantErr: true},
		{name: "array", payload: "[]", wantErr: true},
		{name: "trailing data", payload: `{"identifiers":[]} {}`, wantErr: true},
		{name: "duplicate member", payload: `{"identifiers":[],"identifiers":[{"type":"dns","value":"b.example"}]}`, wantErr: true},
		{name: "wrong type", payload: `{"identifiers":"a.example"}`, wantErr: true},
		{name: "member name in another case does not match", payload: `{"Identifiers":[{"type":"dns","value":"a.example"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Request{Payload: []byte(tt.payload)}
			var o order
			err := r.Decode(&o)
			if tt.wantErr {
				wantProblem(t, err, TypeMalformed, http.StatusBadRequest)
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			got := ""
			if len(o.Identifiers) > 0 {
				got = o.Identifiers[0].Value
			}
			if got != tt.want {
				t.Errorf("first identifier = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDecodeRawMessage(t *testing.T) {
	// newAccount handlers decode externalAccountBinding into an
	// encoding/json RawMessage and hand it to VerifyEAB.
	var na struct {
		EAB json.RawMessage `json:"externalAccountBinding"`
	}
	r := &Request{Payload: []byte(`{"externalAccountBinding":{"protected":"x"}}`)}
	if err := r.Decode(&na); err != nil {
		t.Fatal(err)
	}
	if string(na.EAB) != `{"protected":"x"}` {
		t.Errorf("EAB = %s", na.EAB)
	}
}

func TestProblemError(t *testing.T) {
	p := serverInternal(errStorageDown)
	if !strings.Contains(p.Error(), "storage down") || !errors.Is(p, errStorageDown) {
		t.Errorf("Error() = %q; the cause belongs in the log line", p.Error())
	}
	if got := malformed("x %d", 1).Error(); got != "malformed: x 1" {
		t.Errorf("Error() = %q", got)
	}
}
