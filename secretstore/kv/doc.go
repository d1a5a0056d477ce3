// Package kv is the secret store's versioned key-value engine, with the
// semantics of Vault's KV version 2: every write makes a new version; a
// version can be read by number, soft-deleted and undeleted, or destroyed
// for good; check-and-set guards writes; per-secret metadata holds
// max_versions, cas_required, delete_version_after and custom metadata.
//
// Every value and every secret's metadata is sealed (AES-256-GCM under the
// barrier) before it reaches storage, with additional data naming the
// mount, the path and, for values, the version, so that no stored row can
// be moved to another secret or version and still open. Storage sees only
// mount and path names and ciphertext.
//
// It must never return, log or put in an error a secret's value. It knows
// nothing of callers, policies or the audit log: the secretstore package
// decides who may call it and records what was done.
package kv
