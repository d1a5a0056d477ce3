package jws

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
	// go-jose's own JSON decoder: member names match case-sensitively and
	// duplicate members are refused. Using the decoder go-jose verifies with
	// means this package and go-jose cannot read one body two ways.
	"github.com/go-jose/go-jose/v4/json"
)

// envelope is a flattened JWS whose shape has been checked but whose
// signature has not: nothing in it is trusted yet.
type envelope struct {
	body    []byte
	header  map[string]json.RawMessage // the protected header's members
	payload []byte
}

// parseEnvelope checks the shape RFC 8555 §6.2 requires: the flattened JSON
// serialization (RFC 7515 §7.2.2) with one signature, no unprotected header,
// a payload that is present (possibly empty), canonical base64url, and a
// protected header that is a JSON object without "b64" (RFC 7797) or "crit".
// Unknown top-level members are ignored, as RFC 7515 §7.2.1 asks.
func parseEnvelope(body []byte) (*envelope, *Problem) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		p := malformed("expected a JWS in flattened JSON serialization, without duplicate members (RFC 8555 §6.2)")
		p.cause = err
		return nil, p
	}
	if _, ok := top["signatures"]; ok {
		return nil, malformed(`the JWS must use the flattened JSON serialization with exactly one signature, not "signatures" (RFC 8555 §6.2)`)
	}
	if raw, ok := top["header"]; ok {
		var h map[string]json.RawMessage
		if err := json.Unmarshal(raw, &h); err != nil || len(h) > 0 {
			return nil, malformed(`the JWS unprotected header ("header") must not be used (RFC 8555 §6.2)`)
		}
	}
	protected, p := b64Member(top, "protected")
	if p != nil {
		return nil, p
	}
	payload, p := b64Member(top, "payload")
	if p != nil {
		return nil, p
	}
	// An empty signature ("none") is left for the alg check to refuse.
	if _, p := b64Member(top, "signature"); p != nil {
		return nil, p
	}
	if len(protected) == 0 {
		return nil, malformed(`the JWS "protected" header is empty`)
	}
	var h map[string]json.RawMessage
	if err := json.Unmarshal(protected, &h); err != nil || h == nil {
		p := malformed("the JWS protected header is not a JSON object without duplicate members")
		p.cause = err
		return nil, p
	}
	if _, ok := h["b64"]; ok {
		return nil, malformed(`the "b64" header parameter (RFC 7797) is not supported`)
	}
	if _, ok := h["crit"]; ok {
		return nil, malformed(`the "crit" header parameter is not supported`)
	}
	return &envelope{body: body, header: h, payload: payload}, nil
}

// b64Member decodes the top-level member name, which must be present and a
// canonical unpadded base64url string (RFC 7515 §2). Canonical matters:
// go-jose verifies over its re-encoding of the decoded bytes, so only when
// that re-encoding is the text received was the text received verified.
func b64Member(top map[string]json.RawMessage, name string) ([]byte, *Problem) {
	raw, ok := top[name]
	if !ok {
		return nil, malformed("the JWS has no %q member", name)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, malformed("the JWS %q member is not a string", name)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || base64.RawURLEncoding.EncodeToString(b) != s {
		return nil, malformed("the JWS %q member is not unpadded base64url", name)
	}
	return b, nil
}

// has reports whether the protected header has the member name.
func (e *envelope) has(name string) bool {
	_, ok := e.header[name]
	return ok
}

// str returns the protected header's member name, which must be a string
// when present.
func (e *envelope) str(name string) (v string, present bool, p *Problem) {
	raw, ok := e.header[name]
	if !ok {
		return "", false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", true, malformed("the protected header's %q is not a string", name)
	}
	return v, true, nil
}

// alg returns the header's "alg" if it is one of Algorithms(), and
// badSignatureAlgorithm otherwise.
func (e *envelope) alg() (jose.SignatureAlgorithm, *Problem) {
	alg, ok, p := e.str("alg")
	if p != nil {
		return "", p
	}
	if !ok {
		return "", malformed(`the protected header has no "alg"`)
	}
	if !containsAlg(algorithms, alg) {
		return "", badSignatureAlgorithm("alg %q is not supported", alg)
	}
	return jose.SignatureAlgorithm(alg), nil
}

// verify has go-jose check the signature for alg and key, and returns the
// payload it verified. It then checks that go-jose read the header as this
// package did, so that a difference between the two readings fails closed.
func (e *envelope) verify(alg jose.SignatureAlgorithm, key any) ([]byte, error) {
	obj, err := jose.ParseSignedJSON(string(e.body), []jose.SignatureAlgorithm{alg})
	if err != nil {
		return nil, fmt.Errorf("parsing JWS: %w", err)
	}
	if len(obj.Signatures) != 1 {
		return nil, errors.New("not exactly one signature")
	}
	payload, err := obj.Verify(key)
	if err != nil {
		return nil, err
	}
	h := obj.Signatures[0].Protected
	nonce, _, _ := e.str("nonce")
	kid, _, _ := e.str("kid")
	url, _, _ := e.str("url")
	gotURL, _ := h.ExtraHeaders["url"].(string)
	if jose.SignatureAlgorithm(h.Algorithm) != alg || h.Nonce != nonce || h.KeyID != kid ||
		gotURL != url || (h.JSONWebKey != nil) != e.has("jwk") || !bytes.Equal(payload, e.payload) {
		return nil, errors.New("go-jose read the JWS differently")
	}
	return payload, nil
}

// jwk parses the protected header's "jwk" with parseJWK.
func (e *envelope) jwk() (*jose.JSONWebKey, *Problem) {
	k, p := parseJWK(e.header["jwk"])
	if p != nil {
		return nil, within(`"jwk"`, p)
	}
	return k, nil
}

// parseJWK parses raw as a JWK holding a public key (malformed when it is
// not a JWK, badPublicKey when its key is private, symmetric or of a type
// go-jose does not know). Only the key is kept: "kid", "alg", "use" and
// certificates in a JWK are not this package's business.
func parseJWK(raw []byte) (*jose.JSONWebKey, *Problem) {
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(raw); err != nil {
		if errors.Is(err, jose.ErrUnsupportedKeyType) {
			return nil, badPublicKey("unsupported key type")
		}
		p := malformed("not a valid JSON Web Key")
		p.cause = err
		return nil, p
	}
	if !k.IsPublic() {
		return nil, badPublicKey("must be a public key")
	}
	// go-jose reads an RSA exponent through int64; refuse one wider than 32
	// bits rather than verify with a truncated value.
	var rsaRaw struct {
		Kty string `json:"kty"`
		E   string `json:"e"`
	}
	if err := json.Unmarshal(raw, &rsaRaw); err == nil && rsaRaw.Kty == "RSA" {
		if b, err := base64.RawURLEncoding.DecodeString(rsaRaw.E); err != nil || len(bytes.TrimLeft(b, "\x00")) > 4 {
			return nil, badPublicKey("RSA exponent out of range")
		}
	}
	return &jose.JSONWebKey{Key: k.Key}, nil
}
