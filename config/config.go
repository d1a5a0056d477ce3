// Package config owns Sigil's configuration: the structs a YAML file is
// decoded into, their defaults, and all validation. Loading either returns a
// complete, valid Config or an error naming the file, the key and what is
// wrong; nothing downstream re-checks a value. Secrets are never inline: the
// file names where to find them (a file path or an environment variable).
//
// config reads only the file it is given; flags and environment belong to
// cmd/sigil. It imports nothing of Sigil's.
package config

import "time"

// Config is the whole server configuration. Every field documents its
// default, applied by Default and by Load for keys the file leaves out.
type Config struct {
	// TrustDomain is the SPIFFE trust domain, e.g. "example.org". Required.
	TrustDomain string `yaml:"trust_domain"`
	// DataDir holds the SQLite database, the TLS key of the HTTPS listener,
	// the dev seal key and files written at init. Default "/var/lib/sigil".
	DataDir string `yaml:"data_dir"`

	Log     Log     `yaml:"log"`
	Listen  Listen  `yaml:"listen"`
	Storage Storage `yaml:"storage"`
	Seal    Seal    `yaml:"seal"`
	// HSM, when Module is set, holds the root CA key (and the pkcs11 seal's
	// wrapping key). Default: no HSM; the root key is sealed under the barrier.
	HSM HSM `yaml:"hsm"`
	CA  CA  `yaml:"ca"`
	// TransparencyLog configures the Merkle log that every issuance is
	// appended to before it is handed out.
	TransparencyLog TransparencyLog `yaml:"transparency_log"`
	// WorkloadAPI configures the SPIFFE Workload API served on
	// listen.workload_socket.
	WorkloadAPI WorkloadAPI `yaml:"workload_api"`
	// Secrets configures the secret store served on the HTTPS listener.
	Secrets Secrets `yaml:"secrets"`
	// ACME configures the RFC 8555 server at <https_url>/acme/directory.
	ACME ACME `yaml:"acme"`
	// Agents configures how Sigil agents on other nodes attest, renew
	// their SVIDs and receive their registration entries.
	Agents Agents `yaml:"agents"`
}

// Agents configures the server side of Sigil agents.
type Agents struct {
	// SVIDTTL is the lifetime of an agent SVID, at most ca.leaf.max_ttl.
	// Agents renew at half of it. Default 1h, or ca.leaf.max_ttl when that
	// is less.
	SVIDTTL Duration `yaml:"svid_ttl"`
	// JoinTokenMaxTTL is the longest lifetime a join token may be given.
	// Default 24h.
	JoinTokenMaxTTL Duration `yaml:"join_token_max_ttl"`
	// SyncInterval is how often the entry sync stream sends a digest of
	// the agent's entries, so that an agent that missed a change fetches
	// them all again; changes themselves are pushed at once. At least 1s.
	// Default 10s.
	SyncInterval Duration `yaml:"sync_interval"`
	// X509PoPCAFile is a PEM file of the CA certificates that sign node
	// certificates; a node presenting one of their certificates (with its
	// key, in the TLS handshake) attests as the node named by the
	// certificate's common name. Default "": x509pop attestation is off.
	X509PoPCAFile string `yaml:"x509pop_ca_file"`
}

// ACME configures the ACME server. Identifiers must fall under
// ca.dns_domains.
type ACME struct {
	// CertTTL is the lifetime of ACME certificates, at most
	// ca.leaf.max_ttl. Default 24h, or ca.leaf.max_ttl when that is less.
	CertTTL Duration `yaml:"cert_ttl"`
	// HTTPPort is the port http-01 validation connects to. Default 80.
	HTTPPort int `yaml:"http_port"`
	// TLSPort is the port tls-alpn-01 validation connects to. Default 443.
	TLSPort int `yaml:"tls_port"`
	// ValidationWait is how long a challenge request waits for its
	// validation before answering "processing" with Retry-After, above 0
	// and at most 30s; a validation that finishes in time is answered with
	// its outcome, so clients need not poll. Default 2s.
	ValidationWait Duration `yaml:"validation_wait"`
	// DNSResolver is the host:port of the DNS server dns-01 (and the
	// address lookups of the other challenges) asks. Default "": the
	// system's resolver.
	DNSResolver string `yaml:"dns_resolver"`
	// LoopbackNames lists DNS suffixes whose names resolve to 127.0.0.1
	// for validation (development: "localhost"). Default [].
	LoopbackNames []string `yaml:"loopback_names"`
	// OrdersPerAccount and OrdersPerIdentifier cap new orders per hour,
	// per account and per identifier, on each node. Defaults 1,000,000 and
	// 100,000.
	OrdersPerAccount    int `yaml:"orders_per_account"`
	OrdersPerIdentifier int `yaml:"orders_per_identifier"`
	// IPRanges are the CIDR prefixes IP identifiers (RFC 8738) must fall
	// in. Default []: IP identifiers are refused.
	IPRanges []string `yaml:"ip_ranges"`
	// EABRequired makes new accounts present an external account binding
	// made with 'sigil acme eab create'. Default false.
	EABRequired bool `yaml:"eab_required"`
	// TermsOfService and Website are shown in the directory's meta.
	// Default "".
	TermsOfService string `yaml:"terms_of_service"`
	Website        string `yaml:"website"`
}

// Secrets configures the secret store.
type Secrets struct {
	// Mounts are the KV mounts, each served at /v1/<mount>/. Names are 1 to
	// 64 of [a-z0-9_-] and not one of the API's own prefixes. Default
	// ["secret"].
	Mounts []string `yaml:"mounts"`
	// CASRequired lists mounts on which every write must name the version
	// it replaces (check-and-set). Default [].
	CASRequired []string `yaml:"cas_required"`
	// MaxVersions is how many versions a secret keeps unless its metadata
	// says otherwise, 1 to 1000. Default 10.
	MaxVersions int `yaml:"max_versions"`
}

// WorkloadAPI configures the SPIFFE Workload API.
type WorkloadAPI struct {
	// RotateAt is the fraction of an X.509-SVID's lifetime after which open
	// streams get a fresh one, above 0 and below 1. Default 0.5.
	RotateAt float64 `yaml:"rotate_at"`
}

// TransparencyLog configures the Merkle log's checkpoints and its group
// commit.
type TransparencyLog struct {
	// Origin is the first line of every checkpoint, naming the log. Empty
	// means TrustDomain + "/sigil-log". Default "".
	Origin string `yaml:"origin"`
	// BatchSize caps how many entries one commit writes, 1 to 65536.
	// Default 1024.
	BatchSize int `yaml:"batch_size"`
	// BatchDelay is how long a batch may wait to fill before it is
	// committed, above 0 and at most 1s. Default 2ms.
	BatchDelay Duration `yaml:"batch_delay"`
}

// LogOrigin returns the checkpoint origin line in force.
func (c Config) LogOrigin() string {
	if c.TransparencyLog.Origin != "" {
		return c.TransparencyLog.Origin
	}
	return c.TrustDomain + "/sigil-log"
}

// Log configures structured logging.
type Log struct {
	// Level is debug, info, warn or error. Default "info".
	Level string `yaml:"level"`
	// Format is "text" or "json". Default "text".
	Format string `yaml:"format"`
}

// Listen configures the listeners and the URLs put into certificates.
type Listen struct {
	// HTTPS is the address of the mTLS listener (admin API, later ACME and
	// secrets). Default "127.0.0.1:8443".
	HTTPS string `yaml:"https"`
	// HTTP is the address of the public listener (CRL, OCSP, bundle,
	// healthz, metrics). Default "127.0.0.1:8080".
	HTTP string `yaml:"http"`
	// PublicURL is the base URL of the public listener as relying parties
	// reach it; OCSP, CRL and issuer URLs in every certificate are built from
	// it. Default "http://" + HTTP.
	PublicURL string `yaml:"public_url"`
	// HTTPSURL is the base URL of the HTTPS listener as clients reach it.
	// Default "https://" + HTTPS.
	HTTPSURL string `yaml:"https_url"`
	// WorkloadSocket is the Unix socket of the SPIFFE Workload API; any
	// local process may connect, and is told only the identities its
	// attested selectors match. Default DataDir + "/workload.sock".
	WorkloadSocket string `yaml:"workload_socket"`
	// ServerNames are the DNS names and IP addresses in the HTTPS listener's
	// certificate. Default ["localhost", "127.0.0.1", "::1"] plus the host
	// of HTTPSURL.
	ServerNames []string `yaml:"server_names"`
}

// Storage selects and configures the backend.
type Storage struct {
	// Type is "sqlite" or "postgres". Default "sqlite".
	Type   string `yaml:"type"`
	SQLite SQLite `yaml:"sqlite"`
	// Postgres is required when Type is "postgres".
	Postgres Postgres `yaml:"postgres"`
}

// SQLite configures the embedded backend.
type SQLite struct {
	// Path of the database file. Default DataDir + "/sigil.db".
	Path string `yaml:"path"`
}

// Postgres configures the HA backend.
type Postgres struct {
	// DSN is a libpq connection string or URL without a password, e.g.
	// "postgres://sigil@db:5432/sigil?sslmode=verify-full". Required.
	DSN string `yaml:"dsn"`
	// PasswordFile, when set, is read at start and its trimmed content used
	// as the password. Default: none (trust, peer or certificate auth).
	PasswordFile string `yaml:"password_file"`
	// MaxConns caps the connection pool. Default 10.
	MaxConns int `yaml:"max_conns"`
}

// Seal configures how the barrier's master key is protected.
type Seal struct {
	// Type is "shamir", "pkcs11" or "dev". Default "shamir".
	Type   string     `yaml:"type"`
	Shamir ShamirSeal `yaml:"shamir"`
	PKCS11 PKCS11Seal `yaml:"pkcs11"`
	Dev    DevSeal    `yaml:"dev"`
}

// ShamirSeal splits the master key into shares at init.
type ShamirSeal struct {
	// Shares is the number of shares made at init, 1 to 255. Default 5.
	Shares int `yaml:"shares"`
	// Threshold is how many shares unseal, 1 to Shares. Default 3.
	Threshold int `yaml:"threshold"`
}

// PKCS11Seal wraps the master key with an AES-256 key in the HSM token
// (the hsm section must be set); the server unseals itself at start.
type PKCS11Seal struct {
	// KeyLabel is the CKA_LABEL of the wrapping key, created at init.
	// Default "sigil-seal".
	KeyLabel string `yaml:"key_label"`
}

// DevSeal keeps the master key's wrapping key in a plain file. It protects
// nothing against anyone who can read the data directory: development only.
type DevSeal struct {
	// KeyFile is created at init with mode 0600. Default DataDir + "/dev-seal.key".
	KeyFile string `yaml:"key_file"`
}

// HSM configures a PKCS#11 token.
type HSM struct {
	// Module is the PKCS#11 library, e.g. "/usr/lib/softhsm/libsofthsm2.so".
	// Empty means no HSM.
	Module string `yaml:"module"`
	// TokenLabel selects the token by CKA_LABEL. Required with Module.
	TokenLabel string `yaml:"token_label"`
	// PINFile is a file holding the user PIN. One of PINFile and PINEnv is
	// required with Module.
	PINFile string `yaml:"pin_file"`
	// PINEnv names an environment variable holding the user PIN.
	PINEnv string `yaml:"pin_env"`
	// RootKeyLabel is the CKA_LABEL of the root CA key generated at init.
	// Default "sigil-root".
	RootKeyLabel string `yaml:"root_key_label"`
}

// CA configures the certificate authority.
type CA struct {
	// DNSDomains are the permitted DNS name constraints of the intermediate:
	// leaves may carry these names and their subdomains only. Default
	// ["localhost"].
	DNSDomains []string `yaml:"dns_domains"`
	// KeyType is the key type of the root and intermediates: "ec-p256" or
	// "ec-p384". Default "ec-p256".
	KeyType string `yaml:"key_type"`
	// Root configures the self-signed root.
	Root Root `yaml:"root"`
	// Intermediate configures the issuing CA.
	Intermediate Intermediate `yaml:"intermediate"`
	// Leaf configures issued certificates.
	Leaf Leaf `yaml:"leaf"`
	// CRL configures revocation lists.
	CRL CRL `yaml:"crl"`
	// OCSP configures the responder.
	OCSP OCSP `yaml:"ocsp"`
	// JWT configures the JWT-SVID signing keys.
	JWT JWT `yaml:"jwt"`
}

// JWT configures the JWT-SVID signing keys.
type JWT struct {
	// RotateEvery is how long a key signs before its successor takes over;
	// the successor is published in the bundle PrepareLead earlier.
	// Default 24h.
	RotateEvery Duration `yaml:"rotate_every"`
	// PrepareLead: a successor key is in the bundle this long before it
	// signs; below rotate_every. Default 10m.
	PrepareLead Duration `yaml:"prepare_lead"`
}

// Root configures the root certificate.
type Root struct {
	// CommonName of the root. Default "Sigil Root CA".
	CommonName string `yaml:"common_name"`
	// TTL is the root's lifetime. Default 87600h (10 years).
	TTL Duration `yaml:"ttl"`
}

// Intermediate configures the issuing CA and its rotation.
type Intermediate struct {
	// CommonName of each intermediate. Default "Sigil Intermediate CA".
	CommonName string `yaml:"common_name"`
	// TTL is each intermediate's lifetime; at most Root.TTL. Default 2160h (90 days).
	TTL Duration `yaml:"ttl"`
	// RotateBefore: a new intermediate is made when the active one has less
	// than this left; the old one stays in the bundle until it expires. Must
	// be below TTL and at least Leaf.MaxTTL. Default 720h (30 days).
	RotateBefore Duration `yaml:"rotate_before"`
}

// Leaf configures issued certificates.
type Leaf struct {
	// DefaultTTL applies when a request names none. Default 1h.
	DefaultTTL Duration `yaml:"default_ttl"`
	// MaxTTL caps every request; DefaultTTL must not exceed it. Default 24h.
	MaxTTL Duration `yaml:"max_ttl"`
}

// CRL configures revocation lists.
type CRL struct {
	// Validity is nextUpdate - thisUpdate. Default 24h.
	Validity Duration `yaml:"validity"`
	// Refresh is how often CRLs are regenerated even without a revocation;
	// below Validity. Default 1h.
	Refresh Duration `yaml:"refresh"`
}

// OCSP configures the responder.
type OCSP struct {
	// Validity is nextUpdate - thisUpdate of each response. Default 24h.
	Validity Duration `yaml:"validity"`
	// RefreshBefore: a cached response is re-signed when less than this is
	// left before its nextUpdate; below Validity. Default 12h.
	RefreshBefore Duration `yaml:"refresh_before"`
}

// Duration is a time.Duration written in YAML as a Go duration string
// ("90s", "1h30m", "720h").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
