package jws

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
)

// AccountKeys finds the key of an existing account.
type AccountKeys interface {
	// AccountKey returns the public key of the account whose URL is
	// accountURL, exactly as the client sent it in "kid".
	//
	// It MUST return an error wrapping ErrNotFound when there is no such
	// account. It may return a *Problem to refuse the account with that
	// problem, for example unauthorized for a deactivated account (RFC 8555
	// §7.3.6). Any other error is reported to the client as serverInternal
	// and kept as the problem's cause for the log. It MUST NOT change state.
	AccountKey(ctx context.Context, accountURL string) (*jose.JSONWebKey, error)
}

// Nonces is the server's anti-replay nonce store (RFC 8555 §6.5).
type Nonces interface {
	// Consume reports whether nonce was issued by this server and has not
	// been used, and marks it used. It MUST be atomic: of concurrent calls
	// with one nonce, at most one returns true, on every server sharing the
	// store. An error means the store failed, not that the nonce is bad; it
	// is reported as serverInternal.
	Consume(ctx context.Context, nonce string) (bool, error)
}

// KeyMode says how an endpoint's requests name their signing key (RFC 8555
// §6.2). The zero value, KID, is what all but two endpoints take.
type KeyMode int

const (
	// KID: "kid" is the URL of an existing account, whose key must have
	// signed the request. Every endpoint but newAccount and revokeCert.
	KID KeyMode = iota
	// JWK: "jwk" carries the key that signed the request. newAccount
	// (RFC 8555 §7.3).
	JWK
	// KIDOrJWK: either; revokeCert (§7.6) takes an account's kid or the
	// certificate key's jwk. Request.KeyID says which was used.
	KIDOrJWK
)

func (m KeyMode) String() string {
	switch m {
	case KID:
		return "kid"
	case JWK:
		return "jwk"
	case KIDOrJWK:
		return "kid or jwk"
	}
	return fmt.Sprintf("KeyMode(%d)", int(m))
}

// Verifier authenticates ACME POST requests. Both fields are required; a
// Verifier without Nonces refuses every request. It is safe for concurrent
// use when its stores are.
type Verifier struct {
	Accounts AccountKeys
	Nonces   Nonces
}

// Request is an authenticated ACME request: its signature verified, its
// url matched and its nonce consumed.
type Request struct {
	// Algorithm is the "alg" the request was signed with.
	Algorithm string
	// Nonce is the nonce the request consumed.
	Nonce string
	// URL is the "url" header parameter, equal to the request URL.
	URL string
	// KeyID is the account URL from "kid"; empty when the request carried
	// its key in "jwk".
	KeyID string
	// Key is the public key that verified the signature: the account's key
	// for a kid request, the embedded one for a jwk request.
	Key *jose.JSONWebKey
	// Thumbprint is the RFC 7638 thumbprint of Key (see Thumbprint).
	Thumbprint string
	// Payload is the verified payload; empty for POST-as-GET.
	Payload []byte
}

// IsPostAsGet reports whether the payload is the empty string, which makes
// the request a POST-as-GET (RFC 8555 §6.3).
func (r *Request) IsPostAsGet() bool { return len(r.Payload) == 0 }

// Decode unmarshals the payload, which must be a JSON object, into v.
// Member names match case-sensitively and a duplicate member is refused;
// unknown members are ignored, so that clients may send fields from later
// RFCs. Any failure is a malformed *Problem.
func (r *Request) Decode(v any) error {
	return decodeObject(r.Payload, v, "payload")
}

func decodeObject(data []byte, v any, what string) error {
	i := 0
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n') {
		i++
	}
	if i == len(data) {
		return malformed("the %s is empty; a JSON object was expected", what)
	}
	if data[i] != '{' {
		return malformed("the %s is not a JSON object", what)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return malformed("the %s could not be decoded: %v", what, err)
	}
	return nil
}

// Verify authenticates body, the POST body of a request to requestURL (the
// URL the client used, as the server reconstructs it), for an endpoint that
// takes keys as mode says. It returns a *Problem for every failure.
//
// Checks, in order; the first that fails decides the problem:
//  1. shape: one flattened JWS, canonical base64url, no unprotected
//     header, no "b64" or "crit" (malformed);
//  2. "alg" is ES256, ES384, RS256 or EdDSA (badSignatureAlgorithm);
//  3. exactly one of "jwk" and "kid", the one mode allows (malformed);
//  4. "nonce" is present and base64url (badNonce), "url" is present
//     (malformed);
//  5. the key: "jwk" parsed as a public key, or the account of "kid"
//     looked up (accountDoesNotExist); acceptable (badPublicKey) and
//     matching alg (badSignatureAlgorithm);
//  6. the signature verifies with that key (malformed);
//  7. "url" equals requestURL (unauthorized, RFC 8555 §6.4);
//  8. the nonce is consumed (badNonce).
//
// Everything before 8 is read-only, so a request refused for any other
// reason, a bad signature included, leaves its nonce usable. The payload is
// not looked at before 6.
func (v *Verifier) Verify(ctx context.Context, body []byte, requestURL string, mode KeyMode) (*Request, error) {
	if v.Nonces == nil {
		return nil, serverInternal(errors.New("jws: Verifier has no Nonces"))
	}
	if mode != KID && mode != JWK && mode != KIDOrJWK {
		return nil, serverInternal(fmt.Errorf("jws: unknown %v", mode))
	}
	e, p := parseEnvelope(body)
	if p != nil {
		return nil, p
	}
	alg, p := e.alg()
	if p != nil {
		return nil, p
	}

	hasJWK, hasKID := e.has("jwk"), e.has("kid")
	switch {
	case hasJWK && hasKID:
		return nil, malformed(`the protected header must have "jwk" or "kid", not both (RFC 8555 §6.2)`)
	case !hasJWK && !hasKID:
		return nil, malformed(`the protected header must have "jwk" or "kid" (RFC 8555 §6.2)`)
	case hasJWK && mode == KID:
		return nil, malformed(`"jwk" is not allowed here; sign with the account's "kid" (RFC 8555 §6.2)`)
	case hasKID && mode == JWK:
		return nil, malformed(`"kid" is not allowed here; this request must carry its key in "jwk" (RFC 8555 §6.2)`)
	}

	nonce, ok, p := e.str("nonce")
	if p != nil || !ok || nonce == "" {
		return nil, badNonce(`the protected header has no valid "nonce" (RFC 8555 §6.5.2)`)
	}
	if _, err := base64.RawURLEncoding.DecodeString(nonce); err != nil {
		return nil, badNonce("the nonce is not base64url (RFC 8555 §6.5.1)")
	}
	url, ok, p := e.str("url")
	if p != nil {
		return nil, p
	}
	if !ok || url == "" {
		return nil, malformed(`the protected header has no "url" (RFC 8555 §6.4)`)
	}

	var key *jose.JSONWebKey
	var kid string
	if hasJWK {
		if key, p = e.jwk(); p != nil {
			return nil, p
		}
	} else {
		if kid, _, p = e.str("kid"); p != nil {
			return nil, p
		}
		if kid == "" {
			return nil, malformed(`the protected header's "kid" is empty`)
		}
		if key, p = v.accountKey(ctx, kid); p != nil {
			return nil, p
		}
	}
	if p := checkKey(alg, key); p != nil {
		return nil, p
	}

	payload, err := e.verify(alg, key)
	if err != nil {
		return nil, signatureInvalid("JWS", err)
	}

	if url != requestURL {
		return nil, unauthorized("the JWS url %q does not match the request URL %q (RFC 8555 §6.4)", url, requestURL)
	}

	tp, err := Thumbprint(key)
	if err != nil {
		return nil, serverInternal(err)
	}

	ok, err = v.Nonces.Consume(ctx, nonce)
	if err != nil {
		return nil, serverInternal(fmt.Errorf("consuming nonce: %w", err))
	}
	if !ok {
		return nil, badNonce("the nonce is unknown, expired or already used (RFC 8555 §6.5)")
	}

	return &Request{
		Algorithm:  string(alg),
		Nonce:      nonce,
		URL:        url,
		KeyID:      kid,
		Key:        key,
		Thumbprint: tp,
		Payload:    payload,
	}, nil
}

func (v *Verifier) accountKey(ctx context.Context, kid string) (*jose.JSONWebKey, *Problem) {
	if v.Accounts == nil {
		return nil, serverInternal(errors.New("jws: Verifier has no Accounts"))
	}
	key, err := v.Accounts.AccountKey(ctx, kid)
	var p *Problem
	switch {
	case err == nil && key == nil:
		return nil, serverInternal(fmt.Errorf("looking up account %q: no key and no error", kid))
	case err == nil:
		return key, nil
	case errors.Is(err, ErrNotFound):
		return nil, accountDoesNotExist("no account %q", kid)
	case errors.As(err, &p):
		return nil, p
	default:
		return nil, serverInternal(fmt.Errorf("looking up account %q: %w", kid, err))
	}
}
