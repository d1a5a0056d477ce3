// Package acme is Sigil's RFC 8555 ACME server: the directory, nonces,
// accounts, orders, authorizations, challenges, finalization, certificate
// download and revocation, over the certificate authority, so that
// certbot, lego and other ACME clients get certificates unchanged.
//
// It owns the protocol's state machine and its resources' JSON; request
// authentication is acme/jws, challenge validation acme/challenge,
// issuance the CA (through Issuer). Every failure is answered as an RFC
// 7807 problem document with the ACME error type for it; internal causes
// go to the log, never to the client. It never issues for an identifier
// the policy refuses or the account has not proven control of, and never
// serves a certificate the CA has not recorded and logged.
package acme
