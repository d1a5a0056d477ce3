// Package storage owns Sigil's persistent state: one interface of narrow,
// purpose-named operations, with two implementations that share the SQL and
// differ only in dialect: SQLite (the embedded default, one file in WAL mode)
// and PostgreSQL (several Sigil servers sharing one database for HA).
//
// storage never interprets what it keeps: barrier-encrypted values arrive as
// ciphertext and leave as ciphertext, and certificates are public data. It
// must never log a stored value, and it never imports a protocol package or
// anything above it. Schema changes are versioned migrations applied in order
// at Open; a database from a newer Sigil is refused rather than guessed at.
//
// Consumers declare the subset of Store they use (ca.Store, barrier.Store);
// the contract suite in storagetest runs against every backend.
package storage

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors that callers branch on with errors.Is.
var (
	// ErrNotFound: the named row does not exist.
	ErrNotFound = errors.New("storage: not found")
	// ErrConflict: a create found the row already present, or a
	// compare-and-swap found a different generation than expected.
	ErrConflict = errors.New("storage: conflict")
	// ErrLocked: TryLock found the lock held by another holder.
	ErrLocked = errors.New("storage: lock held elsewhere")
	// ErrSchemaTooNew: the database was migrated by a newer Sigil.
	ErrSchemaTooNew = errors.New("storage: database schema is newer than this binary")
)

// BarrierState is what the barrier persists about itself. SealConfig is an
// opaque document owned by the barrier (seal type parameters, the wrapped
// master key or the share verifiers); Keyring is the keyring encrypted under
// the master key. Neither holds anything readable.
type BarrierState struct {
	SealType   string
	SealConfig []byte
	Keyring    []byte
	// Generation counts keyring replacements; 1 after InitBarrier.
	Generation int64
}

// Issuer is a CA certificate Sigil holds: the root, or one of the
// intermediates (several overlap during rotation).
type Issuer struct {
	// ID is the lowercase hex SHA-256 of the certificate's SubjectPublicKeyInfo,
	// truncated to 16 bytes; stable and safe to put in URLs.
	ID string
	// Kind is "root", "intermediate" or "cross" (another CA's certificate
	// for a root; ID is then "x" and a hash of the certificate, and
	// KeyRef is empty).
	Kind string
	// CertDER is the issuer's certificate.
	CertDER []byte
	// KeyRef says where the private key lives: "pkcs11:<label>" for a key in
	// the token, "barrier:<name>" for a key sealed under the barrier.
	KeyRef    string
	NotBefore time.Time
	NotAfter  time.Time
	CreatedAt time.Time
}

// Certificate is one issued leaf certificate.
type Certificate struct {
	// Seq is assigned by the store on insert, increasing in insert order.
	Seq int64
	// Serial is the lowercase hex of the serial number, without leading zeros.
	Serial   string
	IssuerID string
	Profile  string
	// Subject is a human-readable summary: the SPIFFE ID, or the DNS names
	// and IP addresses joined with ",".
	Subject   string
	NotBefore time.Time
	NotAfter  time.Time
	DER       []byte
	// RevokedAt is zero when the certificate is not revoked.
	RevokedAt time.Time
	// RevocationReason is an RFC 5280 CRLReason code; meaningful only when
	// RevokedAt is set.
	RevocationReason int
}

// Revoked reports whether the certificate has been revoked.
func (c Certificate) Revoked() bool { return !c.RevokedAt.IsZero() }

// CertificateFilter selects certificates for ListCertificates. The zero
// value lists from the first certificate with the default limit.
type CertificateFilter struct {
	// IssuerID, when set, keeps only certificates from that issuer.
	IssuerID string
	// AfterSeq returns certificates with Seq > AfterSeq (pagination).
	AfterSeq int64
	// Limit caps the result; 0 means 100, and it is never above 1000.
	Limit int
	// RevokedOnly keeps only revoked certificates.
	RevokedOnly bool
	// ValidAt, when set, keeps only certificates with NotAfter after it.
	ValidAt time.Time
}

// CRL is the latest revocation list published for an issuer.
type CRL struct {
	IssuerID   string
	Number     int64
	ThisUpdate time.Time
	NextUpdate time.Time
	DER        []byte
}

// Lock is a held cluster-wide lock. Release is idempotent.
type Lock interface {
	Release() error
}

// Store is Sigil's whole persistent state. Every method is safe for
// concurrent use; every write is durable when the method returns nil.
type Store interface {
	// Backend names the implementation ("sqlite" or "postgres").
	Backend() string
	Close() error

	// LoadBarrier returns the barrier's state, or ErrNotFound before
	// initialisation.
	LoadBarrier(ctx context.Context) (BarrierState, error)
	// InitBarrier stores the first barrier state with Generation 1; it
	// returns ErrConflict if the barrier is already initialised.
	InitBarrier(ctx context.Context, st BarrierState) error
	// UpdateKeyring replaces the encrypted keyring if, and only if, the
	// stored generation equals prevGeneration; the generation becomes
	// prevGeneration+1. A different stored generation is ErrConflict.
	UpdateKeyring(ctx context.Context, prevGeneration int64, keyring []byte) error

	// GetSealed returns the ciphertext stored under name, or ErrNotFound.
	GetSealed(ctx context.Context, name string) ([]byte, error)
	// PutSealed creates or replaces the ciphertext stored under name.
	PutSealed(ctx context.Context, name string, ciphertext []byte) error

	// PutIssuer creates or replaces an issuer by ID.
	PutIssuer(ctx context.Context, iss Issuer) error
	// ListIssuers returns every issuer, oldest NotBefore first.
	ListIssuers(ctx context.Context) ([]Issuer, error)

	// InsertCertificates records issued certificates in one transaction
	// (all or none); a serial already present is ErrConflict. The Seq
	// fields of the argument are ignored.
	InsertCertificates(ctx context.Context, certs []Certificate) error
	// GetCertificate returns the certificate with the serial, or ErrNotFound.
	GetCertificate(ctx context.Context, serial string) (Certificate, error)
	// ListCertificates returns certificates in Seq order.
	ListCertificates(ctx context.Context, f CertificateFilter) ([]Certificate, error)
	// RevokeCertificate marks a certificate revoked and returns it as now
	// stored. ErrNotFound for an unknown serial; ErrConflict if it is
	// already revoked (the stored revocation is left as it was).
	RevokeCertificate(ctx context.Context, serial string, at time.Time, reason int) (Certificate, error)

	// NextCRLNumber atomically increments and returns the issuer's CRL
	// number; the first call for an issuer returns 1.
	NextCRLNumber(ctx context.Context, issuerID string) (int64, error)
	// PutCRL stores crl as the issuer's latest unless a CRL with a higher
	// or equal number is already stored, in which case it returns
	// ErrConflict and keeps the stored one.
	PutCRL(ctx context.Context, crl CRL) error
	// GetCRL returns the issuer's latest CRL, or ErrNotFound.
	GetCRL(ctx context.Context, issuerID string) (CRL, error)

	// TryLock takes the named cluster-wide lock without waiting, or returns
	// ErrLocked. Under PostgreSQL it is a session advisory lock held on a
	// dedicated connection, released when the holder's connection dies;
	// under SQLite it is process-wide.
	TryLock(ctx context.Context, name string) (Lock, error)

	// The transparency log: one log per database, kept as its state (size
	// and latest signed checkpoint) and its tiles.

	// LoadLogState returns the log's size and latest checkpoint; before the
	// first append it is the zero LogState, not an error.
	LoadLogState(ctx context.Context) (LogState, error)
	// AppendLog advances the log from prevSize to b.Size in one
	// transaction: if the stored size is not prevSize it returns
	// ErrConflict and writes nothing; otherwise it writes every tile of b
	// (a tile replaces the stored one at its path only if it is wider, so a
	// partial tile grows into a full one and never shrinks) and the new
	// state. b.Size must exceed prevSize. Either all of b is durable or
	// none of it is visible.
	AppendLog(ctx context.Context, prevSize int64, b LogBatch) error
	// GetLogTile returns the widest tile stored at path (a tlog-tiles path
	// without the partial suffix), or ErrNotFound.
	GetLogTile(ctx context.Context, path string) (LogTile, error)

	// SPIFFE registration entries. The store checks only what it needs to
	// keep its own invariants; the identity layer validates entries.

	// CreateEntry stores a new entry with the Revision given (callers pass
	// 1). Its selectors are stored sorted and without duplicates.
	// ErrConflict if an entry with the same ID exists, or one with the same
	// SPIFFE ID, parent ID and selector set; nothing is written then.
	CreateEntry(ctx context.Context, e RegistrationEntry) error
	// GetEntry returns the entry with the ID, or ErrNotFound.
	GetEntry(ctx context.Context, id string) (RegistrationEntry, error)
	// ListEntries returns the entries f selects in ID order.
	ListEntries(ctx context.Context, f EntryFilter) ([]RegistrationEntry, error)
	// UpdateEntry replaces the entry e.ID if, and only if, its stored
	// revision equals expectRevision; the stored revision becomes
	// expectRevision+1, CreatedAt keeps its stored value, and e.Revision
	// is ignored. ErrNotFound for an unknown ID; ErrConflict for a
	// different stored revision, or when the new (SPIFFE ID, parent ID,
	// selector set) is another entry's.
	UpdateEntry(ctx context.Context, e RegistrationEntry, expectRevision int64) error
	// DeleteEntry removes the entry, or returns ErrNotFound.
	DeleteEntry(ctx context.Context, id string) error
	// EntriesRevision returns a counter that every successful CreateEntry,
	// UpdateEntry and DeleteEntry increases, in the same transaction as
	// the change: equal values mean no entry changed in between. It is 0
	// before the first change.
	EntriesRevision(ctx context.Context) (int64, error)

	// The secret store's KV data: per secret a head (sealed metadata and a
	// revision) and its versions (sealed values). The store sees only
	// ciphertext and the mount and path names.

	// GetKVHead returns a secret's head, or ErrNotFound.
	GetKVHead(ctx context.Context, mount, path string) (KVHead, error)
	// GetKVVersion returns a version's sealed value, or ErrNotFound when the
	// version does not exist or was destroyed.
	GetKVVersion(ctx context.Context, mount, path string, version int64) ([]byte, error)
	// WriteKV applies c in one transaction: the head is created (when
	// c.ExpectRevision is 0) or replaced (when the stored revision equals
	// c.ExpectRevision), its revision becoming c.ExpectRevision+1; the new
	// version is inserted, destroyed versions lose their value and
	// forgotten ones are removed. A different revision, an existing head
	// for 0, or an existing version is ErrConflict, and nothing is
	// written. Durable when it returns nil.
	WriteKV(ctx context.Context, mount, path string, c KVChange) error
	// DeleteKV removes a secret's head and every version if its revision is
	// expectRevision; ErrNotFound or ErrConflict otherwise.
	DeleteKV(ctx context.Context, mount, path string, expectRevision int64) error
	// ListKVPaths returns the mount's secret paths starting with prefix and
	// sorting after after, in byte order, at most limit (0 means 100, never
	// above 1000).
	ListKVPaths(ctx context.Context, mount, prefix, after string, limit int) ([]string, error)

	// Access policies of the secret store, by name.

	// PutPolicy creates or replaces the named policy.
	PutPolicy(ctx context.Context, p Policy) error
	// GetPolicy returns the named policy, or ErrNotFound.
	GetPolicy(ctx context.Context, name string) (Policy, error)
	// ListPolicies returns every policy in name order.
	ListPolicies(ctx context.Context) ([]Policy, error)
	// DeletePolicy removes the named policy, or returns ErrNotFound.
	DeletePolicy(ctx context.Context, name string) error
	// PoliciesRevision returns a counter every successful PutPolicy and
	// DeletePolicy increases in the same transaction; 0 before the first.
	PoliciesRevision(ctx context.Context) (int64, error)

	// The database engine: connections (sealed), roles, static role
	// password state, and leases.

	// PutDBConnection creates or replaces a connection's sealed config.
	PutDBConnection(ctx context.Context, name string, sealed []byte, at time.Time) error
	// GetDBConnection returns a connection's sealed config, or ErrNotFound.
	GetDBConnection(ctx context.Context, name string) ([]byte, error)
	// ListDBConnections returns the connection names in order.
	ListDBConnections(ctx context.Context) ([]string, error)
	// DeleteDBConnection removes a connection, or returns ErrNotFound.
	DeleteDBConnection(ctx context.Context, name string) error
	// PutDBRole creates or replaces a role.
	PutDBRole(ctx context.Context, r DBRole) error
	// GetDBRole returns a role, or ErrNotFound.
	GetDBRole(ctx context.Context, name string) (DBRole, error)
	// ListDBRoles returns the roles of a kind ("dynamic" or "static") in
	// name order.
	ListDBRoles(ctx context.Context, kind string) ([]DBRole, error)
	// DeleteDBRole removes a role and its static state, or returns
	// ErrNotFound.
	DeleteDBRole(ctx context.Context, name string) error
	// GetStaticState returns a static role's password state, or
	// ErrNotFound before its first rotation was recorded.
	GetStaticState(ctx context.Context, role string) (StaticState, error)
	// PutStaticState stores st if the stored revision is expectRevision (0:
	// none stored yet); the stored revision becomes expectRevision+1.
	// ErrConflict otherwise.
	PutStaticState(ctx context.Context, st StaticState, expectRevision int64) error

	// CreateLease stores a new lease; ErrConflict if its ID exists.
	CreateLease(ctx context.Context, l Lease) error
	// GetLease returns a lease, or ErrNotFound.
	GetLease(ctx context.Context, id string) (Lease, error)
	// ExtendLease sets a lease's expiry (and next attempt) to expiresAt;
	// ErrNotFound for an unknown lease.
	ExtendLease(ctx context.Context, id string, expiresAt time.Time) error
	// RecordLeaseFailure counts a failed revocation and sets when to try
	// again; ErrNotFound for an unknown lease.
	RecordLeaseFailure(ctx context.Context, id string, nextAttempt time.Time, reason string) error
	// DeleteLease removes a lease, or returns ErrNotFound.
	DeleteLease(ctx context.Context, id string) error
	// ListLeases returns leases whose ID starts with prefix, sorting after
	// after, in ID order, at most limit (0 means 100, never above 1000).
	ListLeases(ctx context.Context, prefix, after string, limit int) ([]Lease, error)
	// DueLeases returns up to limit leases whose next attempt is at or
	// before now, earliest first.
	DueLeases(ctx context.Context, now time.Time, limit int) ([]Lease, error)
	// CountLeases returns how many leases are stored.
	CountLeases(ctx context.Context) (int64, error)

	// Agents: join tokens, attested nodes and the certificates signed for
	// each.

	// CreateJoinToken stores a join token by its hash; ErrConflict if the
	// hash is stored already.
	CreateJoinToken(ctx context.Context, jt JoinToken) error
	// ConsumeJoinToken removes the token with the hash and returns it, if
	// it expires after now. An unknown, already used or expired token is
	// ErrNotFound (an expired one is removed too). Of concurrent callers
	// with one hash at most one succeeds.
	ConsumeJoinToken(ctx context.Context, hash string, now time.Time) (JoinToken, error)
	// PutAgent creates the agent (expectRevision 0; ErrConflict if its ID
	// or SPIFFE ID exists) or replaces it when the stored revision equals
	// expectRevision (ErrConflict if not, ErrNotFound if absent). The
	// stored revision becomes expectRevision+1; a.Revision is ignored.
	PutAgent(ctx context.Context, a Agent, expectRevision int64) error
	// GetAgent returns the agent with the node ID, or ErrNotFound.
	GetAgent(ctx context.Context, id string) (Agent, error)
	// ListAgents returns agents with ID after afterID, in ID order, at
	// most limit (0 means 100, never above 1000).
	ListAgents(ctx context.Context, afterID string, limit int) ([]Agent, error)
	// AgentsRevision returns a counter every successful PutAgent increases
	// in the same transaction; 0 before the first.
	AgentsRevision(ctx context.Context) (int64, error)
	// RecordAgentCertificate notes that the certificate with the serial was
	// signed for the agent; ErrConflict if the serial is noted already.
	RecordAgentCertificate(ctx context.Context, c AgentCertificate) error
	// AgentCertificates returns the agent's certificates whose NotAfter is
	// after validAt, in serial order.
	AgentCertificates(ctx context.Context, agentID string, validAt time.Time) ([]AgentCertificate, error)

	// ACME objects: JSON documents with a revision for compare-and-swap.
	// Put* with expectRevision 0 creates (ErrConflict if the ID, or for
	// an account the thumbprint, exists); otherwise it replaces when the
	// stored revision matches (ErrConflict if not, ErrNotFound if absent).

	PutACMEAccount(ctx context.Context, d ACMEDoc, thumbprint string, expectRevision int64) error
	GetACMEAccount(ctx context.Context, id string) (ACMEDoc, error)
	GetACMEAccountByThumbprint(ctx context.Context, thumbprint string) (ACMEDoc, error)
	// SetACMEAccountThumbprint changes the account's key thumbprint (key
	// rollover); ErrConflict if another account has it.
	SetACMEAccountThumbprint(ctx context.Context, id, thumbprint string) error
	PutACMEOrder(ctx context.Context, d ACMEDoc, accountID string, expectRevision int64) error
	GetACMEOrder(ctx context.Context, id string) (ACMEDoc, error)
	// ListACMEOrders returns up to limit (at most MaxListLimit) of the
	// account's orders with IDs after after, in ID order.
	ListACMEOrders(ctx context.Context, accountID, after string, limit int) ([]ACMEDoc, error)
	PutACMEAuthz(ctx context.Context, d ACMEDoc, accountID, identifier string, expiresAt time.Time, expectRevision int64) error
	GetACMEAuthz(ctx context.Context, id string) (ACMEDoc, error)
	// FindACMEAuthzs returns the account's authorizations for identifier
	// that expire after now, newest last.
	FindACMEAuthzs(ctx context.Context, accountID, identifier string, now time.Time) ([]ACMEDoc, error)
}

// JoinToken is a single-use credential with which an agent attests. The
// store sees only the token's hash.
type JoinToken struct {
	// Hash is the lowercase hex SHA-256 of the token.
	Hash string
	// NodeID is the node the token admits; empty lets the agent name it.
	NodeID string
	// Groups are the node groups the agent joins; nil is stored as empty.
	Groups    []string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Agent is a node that has attested to the server.
type Agent struct {
	// ID is the node ID; SPIFFEID is spiffe://<trust domain>/sigil/agent/<ID>.
	ID       string
	SPIFFEID string
	// Attestation is how it last attested: "join_token" or "x509pop".
	Attestation string
	// Selectors are the node selectors attestation found ("type:value");
	// nil is stored as empty.
	Selectors []string
	// Serial and NotAfter describe its current agent SVID.
	Serial     string
	NotAfter   time.Time
	AttestedAt time.Time
	UpdatedAt  time.Time
	// EvictedAt is zero while the agent is in good standing.
	EvictedAt time.Time
	Revision  int64
}

// Evicted reports whether the agent has been evicted.
func (a Agent) Evicted() bool { return !a.EvictedAt.IsZero() }

// AgentCertificate is a certificate signed for an agent.
type AgentCertificate struct {
	Serial   string
	AgentID  string
	NotAfter time.Time
}

// ACMEDoc is one stored ACME object.
type ACMEDoc struct {
	ID       string
	Data     string
	Revision int64
}

// DBRole is a database role: Kind "dynamic" or "static", Config its JSON.
type DBRole struct {
	Name      string
	Kind      string
	Config    string
	UpdatedAt time.Time
}

// StaticState is a static role's password state. Password and Pending are
// sealed by the caller; Pending is set while a rotation is in flight.
type StaticState struct {
	Role         string
	Password     []byte
	Pending      []byte
	LastRotated  time.Time
	NextRotation time.Time
	Revision     int64
}

// Lease is a lease on something to revoke: Data (sealed by the caller)
// says what. A lease is due for revocation at NextAttempt, which is its
// expiry until a revocation fails and is retried later.
type Lease struct {
	ID           string
	Owner        string
	IssuedAt     time.Time
	ExpiresAt    time.Time
	MaxExpiresAt time.Time
	Data         []byte
	Attempts     int64
	NextAttempt  time.Time
	LastError    string
}

// Policy is a stored access policy document.
type Policy struct {
	Name      string
	Document  string
	UpdatedAt time.Time
	// Revision counts the policy's versions, from 1.
	Revision int64
}

// RegistrationEntry is a SPIFFE registration entry as stored; see the
// identity/entry package for what the fields mean.
type RegistrationEntry struct {
	ID       string
	SPIFFEID string
	// ParentID is empty when the entry has no parent.
	ParentID string
	// Selectors come back sorted and without duplicates.
	Selectors   []string
	X509SVIDTTL time.Duration
	JWTSVIDTTL  time.Duration
	// DNSNames come back in the order stored; nil is stored as empty.
	DNSNames  []string
	Hint      string
	CreatedAt time.Time
	UpdatedAt time.Time
	Revision  int64
}

// EntryFilter selects entries for ListEntries. The zero value lists from
// the first entry with the default limit.
type EntryFilter struct {
	// SPIFFEID, when set, keeps only entries with that SPIFFE ID.
	SPIFFEID string
	// Selector, when set, keeps only entries having that selector.
	Selector string
	// AfterID returns entries with ID > AfterID (pagination).
	AfterID string
	// Limit caps the result; 0 means 100, and it is never above 1000.
	Limit int
}

// LogState is the transparency log's head. Checkpoint is the signed note
// for Size, empty while Size is 0.
type LogState struct {
	Size       int64
	Checkpoint []byte
}

// LogBatch is what one AppendLog writes: the new state and the tiles and
// entry bundles that changed.
type LogBatch struct {
	Size       int64
	Checkpoint []byte
	Tiles      []LogTile
}

// LogTile is one hash tile or entry bundle. Path is its tlog-tiles path
// without the partial suffix, e.g. "tile/0/x001/234" or "tile/entries/x001";
// Width is how many hashes or entries Data holds, 1..256.
type LogTile struct {
	Path  string
	Width int
	Data  []byte
}
