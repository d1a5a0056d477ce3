package jws

import (
	"errors"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
)

// VerifyKeyChange checks the payload of outer, a verified keyChange
// request (RFC 8555 §7.3.5) signed with the account's current key, and
// returns the new key it asks for.
//
// The payload must be a flattened JWS signed by the new key, carrying it in
// "jwk", with the outer "url" and no "nonce" or "kid" (malformed); its alg
// and key must be acceptable as for any request (badSignatureAlgorithm,
// badPublicKey); its signature must verify (malformed); and its payload
// must be {"account": outer's kid, "oldKey": the account's current key}
// (malformed, as Boulder answers). That no other account has the new key
// (409 Conflict) is for the caller to check.
func VerifyKeyChange(outer *Request) (*jose.JSONWebKey, error) {
	const what = "keyChange inner JWS"
	if outer == nil || outer.Key == nil {
		return nil, serverInternal(errors.New("jws: VerifyKeyChange needs a verified request"))
	}
	if outer.KeyID == "" {
		return nil, malformed(`keyChange must be signed with the account's "kid"`)
	}
	e, p := parseEnvelope(outer.Payload)
	if p != nil {
		return nil, within(what, p)
	}
	alg, p := e.alg()
	if p != nil {
		return nil, within(what, p)
	}
	if e.has("kid") || !e.has("jwk") {
		return nil, malformed(`%s: must carry the new key in "jwk", without "kid" (RFC 8555 §7.3.5)`, what)
	}
	if e.has("nonce") {
		return nil, malformed(`%s: must not have a "nonce" (RFC 8555 §7.3.5)`, what)
	}
	url, _, p := e.str("url")
	if p != nil {
		return nil, within(what, p)
	}
	if url != outer.URL {
		return nil, malformed(`%s: "url" must equal the outer JWS's (RFC 8555 §7.3.5)`, what)
	}
	newKey, p := e.jwk()
	if p != nil {
		return nil, within(what, p)
	}
	if p := checkKey(alg, newKey); p != nil {
		return nil, within(what, p)
	}
	payload, err := e.verify(alg, newKey)
	if err != nil {
		return nil, signatureInvalid(what, err)
	}

	var kc struct {
		Account string          `json:"account"`
		OldKey  json.RawMessage `json:"oldKey"`
	}
	if err := decodeObject(payload, &kc, what+" payload"); err != nil {
		return nil, err
	}
	if kc.Account != outer.KeyID {
		return nil, malformed(`%s: "account" %q is not the account that signed the request, %q`, what, kc.Account, outer.KeyID)
	}
	if len(kc.OldKey) == 0 {
		return nil, malformed(`%s: the payload has no "oldKey"`, what)
	}
	oldKey, p := parseJWK(kc.OldKey)
	if p != nil {
		return nil, within(what+` "oldKey"`, p)
	}
	if !sameKey(oldKey, outer.Key) {
		return nil, malformed(`%s: "oldKey" is not the account's current key`, what)
	}
	return newKey, nil
}
