// Package jwtsvid owns the trust domain's JWT-SVID signing keys and mints
// JWT-SVIDs with them.
//
// Keys are ES256 (P-256) with random key IDs, stored together as one value
// sealed under the barrier ("jwt/keys"). A key set holds the active key,
// possibly a prepared successor that is already published in bundles but
// not yet used to sign (so relying parties learn it before the first token
// it signs), and retired keys that stay published until every token they
// signed has expired. Keys are never written anywhere else and never
// logged.
//
// It mints a token only after the caller's Recorder has made the issuance
// durable: a JWT-SVID that is not in the transparency log is never handed
// out. It never validates tokens for relying parties; they use the
// published keys (the JWKS in the SPIFFE bundle) with any JOSE library.
package jwtsvid
