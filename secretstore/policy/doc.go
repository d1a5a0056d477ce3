// Package policy owns the access policies of the secret store: which SPIFFE
// identities may read, create, update, delete or list which secret paths.
// It parses policy documents strictly, compiles their patterns once, and
// decides single requests against an immutable Set of policies, saying
// which rule decided and why.
//
// Three rules hold for every decision, whatever the policies say:
//
//   - Nothing is allowed by default: a request that no rule grants is
//     denied, and so is every request against an empty or nil Set.
//   - An explicit deny wins: if a deny rule of any policy applies to a
//     request, the request is denied, whatever other rules allow.
//   - A malformed request is denied, never interpreted: a caller ID that is
//     not a SPIFFE ID, a path that CleanPath refuses, or a capability other
//     than read, create, update, delete and list. Paths are never cleaned
//     or rewritten on the caller's behalf, so the path decided on is the
//     path used.
//
// It is pure domain code: it never does I/O, never imports net/http or a
// storage driver, and holds no mutable state. Reading policy files,
// storing policies, and mapping decisions to protocol errors belong to
// the callers.
//
// # Documents
//
// A policy is a name (see ValidName) and a YAML document with one key,
// rules, a non-empty list of rules. Each rule has exactly three keys:
//
//	rules:
//	  - spiffe_id: spiffe://example.org/ns/{ns}/sa/*   # who
//	    paths: ["secret/{ns}/*", "secret/shared/config"] # which secrets
//	    capabilities: [read, list]                       # what
//
// capabilities is a non-empty list of read, create, update, delete and
// list, or the single capability deny. A rule applies to a request when its
// spiffe_id pattern matches the caller and one of its paths matches the
// requested path; an applicable deny rule denies every capability.
//
// # SPIFFE ID patterns
//
// A spiffe_id pattern is a SPIFFE ID whose trust domain is always literal
// and whose path segments are each one of:
//
//   - a literal segment, which matches itself (case-sensitively);
//   - a named segment {name}, which matches exactly one whole non-empty
//     segment and binds name to it for the rule's paths. A name is a
//     lowercase letter followed by at most 31 lowercase letters, digits
//     and '_'; a pattern binds each name once and at most 8 names. A brace
//     is never part of a longer segment: "a{b}" is refused;
//   - "*", only as the whole last segment, which matches one or more
//     further segments: spiffe://example.org/ns/* matches
//     spiffe://example.org/ns/a and spiffe://example.org/ns/a/b but not
//     spiffe://example.org/ns itself.
//
// A caller matches only if its trust domain equals the pattern's, so a
// caller from another trust domain never matches. spiffe://example.org/*
// matches every workload of example.org but not the trust domain's own ID
// spiffe://example.org, which only the pattern spiffe://example.org
// matches.
//
// # Path patterns
//
// A path pattern is a slash-separated secret path whose first segment
// names the mount and is always literal (secret/payments/db). Every later
// segment is a literal segment, a named segment {name} (which matches only
// the exact value that name bound in the caller's SPIFFE ID), or "*" as the
// whole last segment, matching one or more further segments. For the
// caller spiffe://example.org/ns/team-a/sa/web, the rule above behaves as
// the paths secret/team-a/* and secret/shared/config. Bound values are
// compared as data and never re-read as pattern syntax. Literal segments
// follow the rules of CleanPath.
//
// # Listing
//
// A list request names the directory being listed, e.g. secret/team-a.
// A pattern covers for list exactly the paths it covers for every other
// capability, and in addition a pattern ending in "/*" covers its own
// prefix, the directory whose children it names. So secret/team-a/*
// allows listing secret/team-a, secret/team-a/sub and secret/team-a/sub/x,
// but not secret or secret/team-b; secret/team-a/db allows listing only
// secret/team-a/db. The same holds for deny rules: a deny of
// secret/payments/* also denies listing secret/payments. Listing reveals
// the names of a directory's children, not their values.
//
// # Comparison
//
// SPIFFE IDs and paths are compared byte for byte: no case folding, no
// Unicode normalisation, no percent-decoding. A deny rule therefore
// protects exactly the bytes it names, and the store must address a
// secret by exactly the path that was decided on.
package policy
