package jws

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// fuzzNonce is the one nonce the fuzz verifier takes, as often as it comes:
// single use is tested elsewhere, and consuming it would starve the fuzzer.
const fuzzNonce = "ZnV6eg"

type fuzzNonces struct{}

func (fuzzNonces) Consume(_ context.Context, nonce string) (bool, error) {
	return nonce == fuzzNonce, nil
}

// everyAlgorithm is every signature algorithm go-jose knows, so that the
// independent re-verification below does not inherit this package's list.
var everyAlgorithm = []jose.SignatureAlgorithm{
	jose.EdDSA, jose.HS256, jose.HS384, jose.HS512, jose.RS256, jose.RS384, jose.RS512,
	jose.ES256, jose.ES384, jose.ES512, jose.PS256, jose.PS384, jose.PS512,
}

var clientVisible = map[string]int{
	TypeMalformed:             http.StatusBadRequest,
	TypeBadNonce:              http.StatusBadRequest,
	TypeBadSignatureAlgorithm: http.StatusBadRequest,
	TypeBadPublicKey:          http.StatusBadRequest,
	TypeAccountDoesNotExist:   http.StatusBadRequest,
	TypeUnauthorized:          http.StatusForbidden,
}

// checkRefusal fails t unless err is a *Problem a client may see.
func checkRefusal(t *testing.T, err error) {
	t.Helper()
	var p *Problem
	if !errors.As(err, &p) {
		t.Fatalf("error %v (%T) is not a *Problem", err, err)
	}
	if status, ok := clientVisible[p.Type]; !ok || status != p.Status {
		t.Fatalf("problem %s %d: %s", p.Type, p.Status, p.Detail)
	}
	if (p.Type == TypeBadSignatureAlgorithm) != (p.Algorithms != nil) {
		t.Fatalf("problem %s has Algorithms %v", p.Type, p.Algorithms)
	}
}

func FuzzVerify(f *testing.F) {
	k := keySet(f)
	accounts := memAccounts{
		testAcctURL + "es256": pub(k.p256),
		testAcctURL + "eddsa": pub(k.ed),
	}
	v := &Verifier{Accounts: accounts, Nonces: fuzzNonces{}}

	kid := func(alg jose.SignatureAlgorithm, key any, acct string, payload string) []byte {
		return sign(f, signSpec{alg: alg, key: key, kid: testAcctURL + acct, nonce: fuzzNonce, url: testURL}, []byte(payload))
	}
	jwk := func(alg jose.SignatureAlgorithm, key any, payload string) []byte {
		return sign(f, signSpec{alg: alg, key: key, nonce: fuzzNonce, url: testURL}, []byte(payload))
	}
	f.Add(kid(jose.ES256, k.p256, "es256", `{"identifiers":[{"type":"dns","value":"a.example"}]}`), testURL, uint8(KID))
	f.Add(kid(jose.ES256, k.p256, "es256", ""), testURL, uint8(KIDOrJWK))
	f.Add(kid(jose.EdDSA, k.ed, "eddsa", `{}`), testURL, uint8(KID))
	f.Add(kid(jose.ES256, k.p256, "eddsa", `{}`), testURL, uint8(KID))
	f.Add(jwk(jose.ES256, k.p256, `{"termsOfServiceAgreed":true}`), testURL, uint8(JWK))
	f.Add(jwk(jose.ES384, k.p384, `{}`), testURL, uint8(JWK))
	f.Add(jwk(jose.EdDSA, k.ed, ""), testURL, uint8(KIDOrJWK))
	f.Add(jwk(jose.RS256, k.rsa2048, `{}`), testURL, uint8(JWK))
	f.Add(jwk(jose.ES512, k.p521, `{}`), testURL, uint8(JWK))
	f.Add(jwk(jose.ES256, k.p256, `{}`), "https://ca.example/acme/other", uint8(JWK))
	f.Add(sign(f, signSpec{alg: jose.HS256, key: make([]byte, 32), nonce: fuzzNonce, url: testURL,
		extra: map[jose.HeaderKey]any{"jwk": pub(k.p256)}}, []byte(`{}`)), testURL, uint8(JWK))
	f.Add([]byte(`{"protected":"e30","payload":"","signature":""}`), testURL, uint8(KID))
	f.Add([]byte(`{"signatures":[]}`), testURL, uint8(KID))

	f.Fuzz(func(t *testing.T, body []byte, url string, modeByte uint8) {
		mode := KeyMode(modeByte % 3)
		req, err := v.Verify(context.Background(), body, url, mode)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		checkAccepted(t, body, url, mode, req, accounts)
	})
}

// checkAccepted holds the invariants of an accepted request, re-verifying
// body with go-jose directly rather than through this package.
func checkAccepted(t *testing.T, body []byte, url string, mode KeyMode, req *Request, accounts memAccounts) {
	t.Helper()
	if req.URL != url || req.Nonce != fuzzNonce {
		t.Fatalf("accepted url %q nonce %q for request URL %q", req.URL, req.Nonce, url)
	}
	if !slices.Contains(Algorithms(), req.Algorithm) {
		t.Fatalf("accepted alg %q", req.Algorithm)
	}
	if p := checkKey(jose.SignatureAlgorithm(req.Algorithm), req.Key); p != nil || !req.Key.IsPublic() {
		t.Fatalf("accepted key %+v for %s: %v", req.Key, req.Algorithm, p)
	}
	switch {
	case mode == KID && req.KeyID == "", mode == JWK && req.KeyID != "":
		t.Fatalf("mode %v accepted kid %q", mode, req.KeyID)
	}
	if req.KeyID != "" {
		want, ok := accounts[req.KeyID]
		if !ok || !sameKey(req.Key, want) {
			t.Fatalf("accepted kid %q with a key other than the account's", req.KeyID)
		}
	}
	if tp, err := Thumbprint(req.Key); err != nil || tp != req.Thumbprint {
		t.Fatalf("Thumbprint %q, recomputed %q (%v)", req.Thumbprint, tp, err)
	}

	obj, err := jose.ParseSignedJSON(string(body), everyAlgorithm)
	if err != nil {
		t.Fatalf("go-jose cannot parse an accepted body: %v", err)
	}
	if len(obj.Signatures) != 1 {
		t.Fatalf("accepted %d signatures", len(obj.Signatures))
	}
	payload, err := obj.Verify(req.Key)
	if err != nil {
		t.Fatalf("go-jose does not verify an accepted body with its key: %v", err)
	}
	if !bytes.Equal(payload, req.Payload) {
		t.Fatalf("payload %q, go-jose verified %q", req.Payload, payload)
	}
	sig := obj.Signatures[0]
	h := sig.Protected
	if h.Algorithm != req.Algorithm || h.Nonce != req.Nonce || h.KeyID != req.KeyID || h.ExtraHeaders["url"] != url {
		t.Fatalf("protected header %+v does not match request %+v", h, req)
	}
	if req.KeyID == "" && (h.JSONWebKey == nil || !sameKey(h.JSONWebKey, req.Key)) {
		t.Fatalf("jwk request verified with a key other than its jwk")
	}
	if u := sig.Unprotected; u.Algorithm != "" || u.KeyID != "" || u.JSONWebKey != nil || u.Nonce != "" || len(u.ExtraHeaders) > 0 {
		t.Fatalf("accepted an unprotected header %+v", u)
	}
}

func FuzzVerifyEAB(f *testing.F) {
	k := keySet(f)
	n := newMemNonces()
	nonce := n.issue()
	body := sign(f, signSpec{alg: jose.ES256, key: k.p256, nonce: nonce, url: testNewAccountURL}, []byte(`{}`))
	outer, err := (&Verifier{Nonces: n}).Verify(context.Background(), body, testNewAccountURL, JWK)
	if err != nil {
		f.Fatal(err)
	}
	macKeys := func(_ context.Context, keyID string) ([]byte, error) {
		if keyID == testEABKeyID {
			return testMACKey, nil
		}
		return nil, ErrNotFound
	}

	acctJWK, err := json.Marshal(pub(k.p256))
	if err != nil {
		f.Fatal(err)
	}
	eab := func(alg jose.SignatureAlgorithm, keyID, url string, payload []byte) []byte {
		return sign(f, signSpec{alg: alg, key: testMACKey, noJWK: true,
			extra: map[jose.HeaderKey]any{"kid": keyID, "url": url}}, payload)
	}
	f.Add(eab(jose.HS256, testEABKeyID, testNewAccountURL, acctJWK))
	f.Add(eab(jose.HS384, testEABKeyID, testNewAccountURL, acctJWK))
	f.Add(eab(jose.HS512, testEABKeyID, testNewAccountURL, acctJWK))
	f.Add(eab(jose.HS256, "other", testNewAccountURL, acctJWK))
	f.Add(eab(jose.HS256, testEABKeyID, testURL, acctJWK))
	f.Add(eab(jose.HS256, testEABKeyID, testNewAccountURL, []byte(`{"kty":"EC"}`)))
	f.Add([]byte(`{"protected":"eyJhbGciOiJIUzI1NiJ9","payload":"","signature":""}`))

	f.Fuzz(func(t *testing.T, eab []byte) {
		keyID, err := VerifyEAB(context.Background(), outer, eab, macKeys)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if keyID != testEABKeyID {
			t.Fatalf("accepted key ID %q", keyID)
		}
		obj, err := jose.ParseSignedJSON(string(eab), everyAlgorithm)
		if err != nil || len(obj.Signatures) != 1 {
			t.Fatalf("go-jose cannot parse an accepted EAB: %v", err)
		}
		h := obj.Signatures[0].Protected
		if !containsAlg(eabAlgorithms, h.Algorithm) || h.KeyID != keyID || h.Nonce != "" || h.ExtraHeaders["url"] != outer.URL {
			t.Fatalf("accepted EAB header %+v", h)
		}
		payload, err := obj.Verify(testMACKey)
		if err != nil {
			t.Fatalf("go-jose does not verify an accepted EAB: %v", err)
		}
		var bound jose.JSONWebKey
		if err := bound.UnmarshalJSON(payload); err != nil || !sameKey(&bound, outer.Key) {
			t.Fatalf("accepted EAB binds %s, not the account key (%v)", payload, err)
		}
	})
}

func FuzzVerifyKeyChange(f *testing.F) {
	k := keySet(f)
	oldKey := pub(k.p256)
	tp, err := Thumbprint(oldKey)
	if err != nil {
		f.Fatal(err)
	}
	outer := func(inner []byte) *Request {
		return &Request{Algorithm: "ES256", URL: testKeyChangeURL, KeyID: testAcctURL + "es256", Key: oldKey, Thumbprint: tp, Payload: inner}
	}
	inner := func(alg jose.SignatureAlgorithm, newKey any, account string, old *jose.JSONWebKey) []byte {
		payload, err := json.Marshal(map[string]any{"account": account, "oldKey": old})
		if err != nil {
			f.Fatal(err)
		}
		return sign(f, signSpec{alg: alg, key: newKey, url: testKeyChangeURL}, payload)
	}
	f.Add(inner(jose.ES384, k.p384, testAcctURL+"es256", oldKey))
	f.Add(inner(jose.EdDSA, k.ed, testAcctURL+"es256", oldKey))
	f.Add(inner(jose.RS256, k.rsa2048, testAcctURL+"es256", oldKey))
	f.Add(inner(jose.ES384, k.p384, testAcctURL+"eddsa", oldKey))
	f.Add(inner(jose.ES384, k.p384, testAcctURL+"es256", pub(k.ed)))

	f.Fuzz(func(t *testing.T, payload []byte) {
		newKey, err := VerifyKeyChange(outer(payload))
		if err != nil {
			checkRefusal(t, err)
			return
		}
		obj, err := jose.ParseSignedJSON(string(payload), everyAlgorithm)
		if err != nil || len(obj.Signatures) != 1 {
			t.Fatalf("go-jose cannot parse an accepted inner JWS: %v", err)
		}
		h := obj.Signatures[0].Protected
		if h.JSONWebKey == nil || !sameKey(h.JSONWebKey, newKey) || h.KeyID != "" || h.Nonce != "" || h.ExtraHeaders["url"] != testKeyChangeURL {
			t.Fatalf("accepted inner header %+v", h)
		}
		if p := checkKey(jose.SignatureAlgorithm(h.Algorithm), newKey); p != nil {
			t.Fatalf("accepted new key: %v", p)
		}
		inner, err := obj.Verify(newKey)
		if err != nil {
			t.Fatalf("go-jose does not verify an accepted inner JWS with the new key: %v", err)
		}
		var kc struct {
			Account string          `json:"account"`
			OldKey  json.RawMessage `json:"oldKey"`
		}
		if err := json.Unmarshal(inner, &kc); err != nil {
			t.Fatalf("accepted inner payload %q: %v", inner, err)
		}
		var old jose.JSONWebKey
		if kc.Account != testAcctURL+"es256" || old.UnmarshalJSON(kc.OldKey) != nil || !sameKey(&old, oldKey) {
			t.Fatalf("accepted inner payload %s", inner)
		}
	})
}
