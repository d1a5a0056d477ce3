// Package jws authenticates ACME requests: the JSON Web Signatures of RFC
// 8555 §6.2–6.5, the external account binding of §7.3.4 and the nested
// signature of an account key change, §7.3.5.
//
// It owns one question: who signed this request body, for which URL, with
// which nonce, and is that acceptable? [Verifier.Verify] answers it for a
// POST body; [VerifyEAB] and [VerifyKeyChange] answer it for the JWS nested
// in a newAccount or keyChange payload. It also computes RFC 7638 key
// thumbprints and the key authorizations of §8.1 built from them.
//
// It is pure: no HTTP, no storage, no clock, no logging. Account keys and
// nonces come through the small interfaces [AccountKeys] and [Nonces], EAB
// MAC keys through a function; the HTTP layer limits the body size, checks
// the Content-Type and maps a [*Problem] to a problem document.
// Cryptography is go-jose's; this package only decides what go-jose is
// asked to verify, and with which key.
//
// What it must never do:
//   - accept an alg outside ES256, ES384, RS256 and EdDSA; in particular
//     never "none", never a MAC (HS256…) for a request, never a key whose
//     type or curve does not match the alg, never RSA below 2048 bits;
//   - accept a body that is not a single flattened JSON serialization
//     (compact and general serializations, "signatures", an unprotected
//     "header", "b64" and "crit" are all refused), or base64url that is
//     padded or otherwise not canonical;
//   - accept both "jwk" and "kid", or neither, or the one the endpoint
//     does not take; or a "jwk" that carries a private or symmetric key;
//   - look at the payload before the signature has verified;
//   - consume a nonce for a request that fails any other check: the nonce
//     is the last thing checked, so a rejected request changes nothing
//     (DESIGN.md invariant 6);
//   - tell a client an internal cause: errors from the injected lookups
//     become serverInternal with the cause kept for the log only.
//
// Every error returned by this package's verification functions is a
// [*Problem] carrying the ACME error type and HTTP status to answer with.
package jws
