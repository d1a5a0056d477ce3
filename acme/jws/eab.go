package jws

import (
	"context"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// eabAlgorithms are the MAC algorithms an external account binding may use.
var eabAlgorithms = []jose.SignatureAlgorithm{jose.HS256, jose.HS384, jose.HS512}

// MACKeyFunc returns the MAC key the CA issued under keyID for external
// account binding. It MUST return an error wrapping ErrNotFound for an
// unknown keyID; it may return a *Problem (for example unauthorized for a
// key already bound) to refuse with that problem. Other errors are
// serverInternal. Keys shorter than the hash (32 bytes for HS256) never
// verify. It MUST NOT change state: binding happens only after the account
// is created.
type MACKeyFunc func(ctx context.Context, keyID string) ([]byte, error)

// VerifyEAB checks the externalAccountBinding member eab of a newAccount
// payload (RFC 8555 §7.3.4) against outer, the newAccount request it came
// in, and returns the EAB key ID it was MACed with. Whether a binding is
// required (externalAccountRequired) is for the caller to decide.
//
// eab must be a flattened JWS whose protected header has "alg" HS256,
// HS384 or HS512, "kid" the key ID, "url" the outer request's url, and
// neither "nonce" nor "jwk" (malformed otherwise); whose MAC verifies with
// the key macKey returns for kid (unauthorized otherwise); and whose
// payload is a JWK of the key that signed outer (unauthorized otherwise).
func VerifyEAB(ctx context.Context, outer *Request, eab []byte, macKey MACKeyFunc) (keyID string, err error) {
	const what = "externalAccountBinding"
	if outer == nil || outer.Key == nil || macKey == nil {
		return "", serverInternal(errors.New("jws: VerifyEAB needs a verified request and a MAC key lookup"))
	}
	if outer.KeyID != "" {
		return "", malformed(`%s is only for newAccount requests, signed with "jwk"`, what)
	}
	e, p := parseEnvelope(eab)
	if p != nil {
		return "", within(what, p)
	}
	alg, ok, p := e.str("alg")
	if p != nil {
		return "", within(what, p)
	}
	if !ok || !containsAlg(eabAlgorithms, alg) {
		return "", malformed(`%s: "alg" must be HS256, HS384 or HS512 (RFC 8555 §7.3.4)`, what)
	}
	if e.has("nonce") {
		return "", malformed(`%s: must not have a "nonce" (RFC 8555 §7.3.4)`, what)
	}
	if e.has("jwk") {
		return "", malformed(`%s: must not have a "jwk"`, what)
	}
	kid, ok, p := e.str("kid")
	if p != nil {
		return "", within(what, p)
	}
	if !ok || kid == "" {
		return "", malformed(`%s: "kid" must be the EAB key ID (RFC 8555 §7.3.4)`, what)
	}
	url, _, p := e.str("url")
	if p != nil {
		return "", within(what, p)
	}
	if url != outer.URL {
		return "", malformed(`%s: "url" must be the newAccount URL, as in the outer JWS (RFC 8555 §7.3.4)`, what)
	}

	key, err := macKey(ctx, kid)
	if err != nil {
		var p *Problem
		switch {
		case errors.Is(err, ErrNotFound):
			return "", unauthorized("%s: unknown key ID %q", what, kid)
		case errors.As(err, &p):
			return "", p
		default:
			return "", serverInternal(fmt.Errorf("looking up EAB key %q: %w", kid, err))
		}
	}
	payload, err := e.verify(jose.SignatureAlgorithm(alg), key)
	if err != nil {
		p := unauthorized("%s: MAC invalid", what)
		p.cause = err
		return "", p
	}

	bound, p := parseJWK(payload)
	if p != nil {
		return "", malformed("%s: the payload must be the account's public JWK", what)
	}
	if !sameKey(bound, outer.Key) {
		return "", unauthorized("%s: binds a key other than the one that signed the request", what)
	}
	return kid, nil
}

func containsAlg(algs []jose.SignatureAlgorithm, alg string) bool {
	for _, a := range algs {
		if string(a) == alg {
			return true
		}
	}
	return false
}
