// Package ca is Sigil's certificate authority: the root and intermediate
// lifecycle, issuance under two profiles (X.509-SVID and TLS server) with a
// name policy, the record of every certificate issued, revocation, CRLs and a
// pre-signed OCSP responder.
//
// It owns the rules about what may be issued and how revocation is published.
// It never speaks HTTP, never opens a database and never holds a private key
// it did not get from its KeyStore: the server maps HTTP onto Authority's
// methods, the Store persists, the KeyStore keeps keys (the root in the HSM or
// sealed under the barrier, intermediates under the barrier). It never logs a
// key or hands out a certificate that is not durably recorded.
//
// # Hierarchy
//
// One self-signed root signs intermediates and its own CRL, nothing else. The
// newest unexpired, unrevoked intermediate issues leaves; Rotate makes a new
// one when the active one has less than Config.RotateBefore left, and the old
// one stays in the bundle until it expires. Every intermediate is
// name-constrained (critical) to the trust domain for URIs and to
// Config.DNSDomains for DNS names, and is itself recorded as a certificate
// issued by the root (profile "intermediate"), so RevokeIntermediate or
// Revoke put it on the root's CRL.
//
// # Issuance
//
// Issue validates the request against the profile and the name policy,
// signs with the cached active intermediate, then hands the record to a group
// committer: concurrent issuances are written with one InsertCertificates
// call, and each caller returns only once its batch is durable and the
// Recorder (the transparency log) has accepted the certificate. A failure at
// either step returns no certificate.
//
// # OCSP
//
// The responder follows the pre-signed model: each response is signed by the
// issuing intermediate itself (no delegated responder certificate) and
// cached per issuer, serial and CertID hash algorithm. A cached response is
// served until less than Config.OCSPRefreshBefore remains before its
// nextUpdate, and re-signed on the next request after that; concurrent
// requests for one certificate sign once. Issuance signs no OCSP response:
// the first request for a certificate does. Revoke signs the revoked
// response at once and replaces the cached one, so the next request sees the
// revocation without a signature on the request path. Serials we never
// issued under one of our intermediates, and CertIDs naming an issuer we do
// not hold, get a signed "unknown" response (signed by the named issuer when
// it is ours, by the active intermediate otherwise), kept in a bounded LRU.
// Requests are parsed here rather than with x/crypto/ocsp so that the nonce
// extension (RFC 8954) can be read: a request carrying a nonce gets a freshly
// signed response echoing it in responseExtensions, up to
// Config.OCSPNonceRate such signatures per second overall; beyond that it
// gets the cached response without a nonce, which RFC 8954 permits. Garbage,
// an unsupported CertID hash or a request list without exactly one entry is
// answered with malformedRequest; unauthorized is never sent.
//
// # CRLs
//
// Each issuer has its own CRL signed by its own key, numbered from
// Store.NextCRLNumber, listing its revoked, unexpired certificates. Revoke
// regenerates the issuer's CRL at once; RefreshCRLs (driven by Run) and CRL
// regenerate any older than Config.CRLRefresh.
package ca
