// Package workload serves the SPIFFE Workload API over gRPC on a Unix
// socket: it attests the caller of each request, finds the registration
// entries its selectors satisfy, and streams X.509-SVIDs, JWT bundles and
// X.509 bundles to it; it mints and validates JWT-SVIDs.
//
// It owns the protocol only: decoding requests, mapping outcomes to gRPC
// status codes, the per-stream push schedule (a fresh SVID before the
// previous one passes half its lifetime, and at once when entries or trust
// change) and the X.509-SVID cache shared by every workload of one entry.
// Attestation, entry lookup, signing and change notification are reached
// through the small interfaces declared here.
//
// It must never store or log an SVID private key (a fresh P-256 key is
// generated for every X.509-SVID and kept only in memory, with the SVID,
// until the SVID expires), never serve a cached SVID past its expiry, never
// serve a caller whose peer could not be attested, and never answer a
// request without the "workload.spiffe.io: true" metadata.
package workload
