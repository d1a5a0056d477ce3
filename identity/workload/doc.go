// Package workload serves the SPIFFE Workload API over gRPC on a Unix
// socket: it attests the peer of each connection, finds the registration
// entries its selectors satisfy, and streams X.509-SVIDs and the trust
// bundle to it, pushing a fresh SVID before the previous one reaches half
// its lifetime.
//
// It owns the protocol only: decoding requests, mapping outcomes to gRPC
// status codes, and the per-stream rotation schedule. Attestation, entry
// lookup and signing are reached through the small interfaces declared
// here. It must never store or log an SVID private key (a fresh P-256 key
// is generated for every SVID and handed only to the workload), never serve
// a connection whose peer could not be attested, and never answer a
// request without the "workload.spiffe.io: true" metadata.
//
// The JWT-SVID methods (FetchJWTSVID, FetchJWTBundles, ValidateJWTSVID) and
// the WIT methods answer codes.Unimplemented for now; JWT-SVID issuance is
// the next step.
package workload
