package jws

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

const testKeyChangeURL = "https://ca.example/acme/key-change"

// innerSpec builds a keyChange inner JWS: signed by the new key, jwk the
// new key, url the key-change URL, payload {"account", "oldKey"}.
type innerSpec struct {
	alg     jose.SignatureAlgorithm
	newKey  any
	url     string
	account string
	oldKey  any // a JWK, or anything else to marshal as oldKey
	extra   map[jose.HeaderKey]any
	noJWK   bool
	payload []byte // overrides the payload built from account and oldKey
}

func makeInner(t *testing.T, s innerSpec) []byte {
	t.Helper()
	payload := s.payload
	if payload == nil {
		var err error
		payload, err = json.Marshal(map[string]any{"account": s.account, "oldKey": s.oldKey})
		if err != nil {
			t.Fatal(err)
		}
	}
	return sign(t, signSpec{alg: s.alg, key: s.newKey, noJWK: s.noJWK, url: s.url, extra: s.extra}, payload)
}

// keyChangeRequest wraps inner in an outer request signed by the ES256
// account, verified.
func keyChangeRequest(t *testing.T, inner []byte) *Request {
	t.Helper()
	e := newEnv(t)
	body := sign(t, signSpec{alg: jose.ES256, key: e.keys.p256, kid: testAcctURL + "es256", nonce: e.nonce, url: testKeyChangeURL}, inner)
	req, err := e.v.Verify(t.Context(), body, testKeyChangeURL, KID)
	if err != nil {
		t.Fatalf("Verify outer: %v", err)
	}
	return req
}

func TestVerifyKeyChange(t *testing.T) {
	k := keySet(t)
	good := func() innerSpec {
		return innerSpec{alg: jose.ES384, newKey: k.p384, url: testKeyChangeURL, account: testAcctURL + "es256", oldKey: pub(k.p256)}
	}
	tests := []struct {
		name       string
		inner      func(t *testing.T) []byte
		outer      func(t *testing.T, inner []byte) *Request
		wantNew    func() *jose.JSONWebKey
		wantType   string
		wantStatus int
	}{
		{name: "to ES384", inner: func(t *testing.T) []byte { return makeInner(t, good()) }, wantNew: func() *jose.JSONWebKey { return pub(k.p384) }},
		{
			name: "to RS256",
			inner: func(t *testing.T) []byte {
				s := good()
				s.alg, s.newKey = jose.RS256, k.rsa2048
				return makeInner(t, s)
			},
			wantNew: func() *jose.JSONWebKey { return pub(k.rsa2048) },
		},
		{
			name: "to EdDSA",
			inner: func(t *testing.T) []byte {
				s := good()
				s.alg, s.newKey = jose.EdDSA, k.ed
				return makeInner(t, s)
			},
			wantNew: func() *jose.JSONWebKey { return pub(k.ed) },
		},
		{
			name: "inner nonce",
			inner: func(t *testing.T) []byte {
				s := good()
				s.extra = map[jose.HeaderKey]any{"nonce": "bm9uY2U"}
				return makeInner(t, s)
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "inner kid",
			inner: func(t *testing.T) []byte {
				s := good()
				s.noJWK = true
				s.extra = map[jose.HeaderKey]any{"kid": testAcctURL + "es384"}
				return makeInner(t, s)
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "inner with both jwk and kid",
			inner: func(t *testing.T) []byte {
				s := good()
				s.extra = map[jose.HeaderKey]any{"kid": testAcctURL + "es384"}
				return makeInner(t, s)
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "inner url differs",
			inner: func(t *testing.T) []byte {
				s := good()
				s.url = "https://ca.example/acme/new-order"
				return makeInner(t, s)
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name:     "inner url missing",
			inner:    func(t *testing.T) []byte { s := good(); s.url = ""; return makeInner(t, s) },
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name:     "account of someone else",
			inner:    func(t *testing.T) []byte { s := good(); s.account = testAcctURL + "eddsa"; return makeInner(t, s) },
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name:     "oldKey is not the account key",
			inner:    func(t *testing.T) []byte { s := good(); s.oldKey = pub(k.ed); return makeInner(t, s) },
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "oldKey missing",
			inner: func(t *testing.T) []byte {
				s := good()
				s.payload = []byte(`{"account":"` + testAcctURL + `es256"}`)
				return makeInner(t, s)
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "oldKey a private key",
			inner: func(t *testing.T) []byte {
				s := good()
				s.oldKey = &jose.JSONWebKey{Key: k.p256}
				return makeInner(t, s)
			},
			wantType: TypeBadPublicKey, wantStatus: http.StatusBadRequest,
		},
		{
			name:     "payload not an object",
			inner:    func(t *testing.T) []byte { s := good(); s.payload = []byte(`"hello"`); return makeInner(t, s) },
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "signed by another key than its jwk",
			inner: func(t *testing.T) []byte {
				s := good()
				s.extra = map[jose.HeaderKey]any{"jwk": pub(k.rsa2048), "alg": "RS256"}
				s.alg, s.newKey = jose.RS256, k.rsa1024
				return makeInner(t, s)
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "tampered inner payload",
			inner: func(t *testing.T) []byte {
				return editJWS(t, makeInner(t, good()), func(m map[string]any) {
					p, _ := json.Marshal(map[string]any{"account": testAcctURL + "eddsa", "oldKey": pub(k.ed)})
					m["payload"] = base64.RawURLEncoding.EncodeToString(p)
				})
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name: "inner HS256",
			inner: func(t *testing.T) []byte {
				s := good()
				s.alg, s.newKey = jose.HS256, make([]byte, 32)
				s.extra = map[jose.HeaderKey]any{"jwk": pub(k.p384)}
				return makeInner(t, s)
			},
			wantType: TypeBadSignatureAlgorithm, wantStatus: http.StatusBadRequest,
		},
		{
			name: "inner RSA 1024",
			inner: func(t *testing.T) []byte {
				s := good()
				s.alg, s.newKey = jose.RS256, k.rsa1024
				return makeInner(t, s)
			},
			wantType: TypeBadPublicKey, wantStatus: http.StatusBadRequest,
		},
		{
			name:     "inner not a JWS",
			inner:    func(t *testing.T) []byte { return []byte(`{"account":"x"}`) },
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name:     "POST-as-GET",
			inner:    func(t *testing.T) []byte { return nil },
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
		{
			name:  "outer signed with jwk",
			inner: func(t *testing.T) []byte { return makeInner(t, good()) },
			outer: func(t *testing.T, inner []byte) *Request {
				r := keyChangeRequest(t, inner)
				r.KeyID = ""
				return r
			},
			wantType: TypeMalformed, wantStatus: http.StatusBadRequest,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inner := tt.inner(t)
			var outer *Request
			if tt.outer != nil {
				outer = tt.outer(t, inner)
			} else {
				outer = keyChangeRequest(t, inner)
			}
			newKey, err := VerifyKeyChange(outer)
			if tt.wantType == "" {
				if err != nil {
					t.Fatalf("VerifyKeyChange: %v", err)
				}
				if !sameKey(newKey, tt.wantNew()) || !newKey.IsPublic() {
					t.Errorf("new key = %+v", newKey)
				}
				return
			}
			if err == nil {
				t.Fatalf("VerifyKeyChange accepted, new key %+v", newKey)
			}
			p := wantProblem(t, err, tt.wantType, tt.wantStatus)
			t.Logf("%s: %s (cause: %v)", p.Type, p.Detail, p.cause)
		})
	}
}
