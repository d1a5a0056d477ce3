// Package challenge validates ACME challenges: http-01 (RFC 8555 §8.3),
// dns-01 (RFC 8555 §8.4) and tls-alpn-01 (RFC 8737), for DNS identifiers
// and, where RFC 8738 allows it, IP identifiers.
//
// It owns the dialing out: resolving the identifier, connecting to the
// applicant's server or asking DNS, and judging what comes back. A failed
// validation is a *Problem carrying the RFC 8555 §6.7 error type and a
// detail meant for the client; the internal cause rides along in
// Problem.Cause for the server's log. Pool runs validations off the request
// path with bounded concurrency. The package keeps no state and stores
// nothing: the acme package decides which challenges to offer, records the
// outcome and speaks ACME; this package never sees a JWS, an account or an
// order.
//
// # What it never does
//
//   - It never connects anywhere but to the addresses the identifier's own
//     name resolution gives (Config.Resolver, Config.LookupIP, or the system
//     resolver with a dotted name made absolute, so no search domain applies),
//     or the IP of an IP identifier, and never through a proxy from the
//     environment. Loopback, unspecified, link-local, multicast and broadcast
//     addresses are refused unless Config.AllowLoopback permits loopback.
//   - It never follows an http-01 redirect to a scheme other than http or
//     https, to a port other than Config.HTTPPort (http) or Config.TLSPort
//     (https), or more than Config.MaxRedirects times.
//   - It never reads more than 8 KiB of an http-01 body nor more than 16 KiB
//     of response headers, and never echoes a body back in a Problem: a
//     redirect may point at a host the applicant cannot reach, and the
//     detail must not make the CA a reader for it.
//   - It never spends more than Config.Timeout on one validation, DNS
//     lookups included; cancelling ctx ends a validation at once.
//   - It never offers TLS below 1.2 for tls-alpn-01 (RFC 8737 §4) and never
//     judges a certificate's chain: only the negotiated protocol, the
//     leaf's subjectAltName and its acmeIdentifier extension count.
//
// # Problem types
//
// A validation that fails gets one of these types (the URN's last part):
//
//   - dns: the identifier (or a redirect target, or the dns-01 TXT name)
//     could not be resolved: NXDOMAIN, SERVFAIL, a lookup timeout, or no
//     usable address.
//   - connection: no connection could be made or kept (refused, reset,
//     timeout, an address the policy refuses), or a redirect the rules above
//     forbid.
//   - tls: the TLS handshake failed (tls-alpn-01, or an https redirect).
//   - unauthorized: the server answered but holds no authorization: an
//     http-01 status other than 200, or no TXT record at the dns-01 name.
//   - incorrectResponse: something came back but it is wrong: an http-01 body
//     other than the key authorization, no TXT record with the digest, a
//     tls-alpn-01 server that does not negotiate acme-tls/1 or whose
//     certificate breaks RFC 8737 §3.
//   - malformed, unsupportedIdentifier, rejectedIdentifier: the caller's
//     input cannot be validated at all (a bad token or name, dns-01 for an IP,
//     a wildcard outside dns-01, an IP identifier the address policy
//     refuses). The acme package should not have asked.
//   - serverInternal: ctx was cancelled or reached its own deadline
//     (Problem.Cause is the context's cause). The challenge did not fail; the
//     caller should retry it later rather than mark it invalid. Bound a
//     validation with Config.Timeout, not with ctx's deadline.
package challenge
