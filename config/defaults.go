package config

import (
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Documented defaults. Derived ones (paths under DataDir, URLs from the
// listen addresses, server names) are computed in ApplyDefaults.
const (
	defaultDataDir            = "/var/lib/sigil"
	defaultLogLevel           = "info"
	defaultLogFormat          = "text"
	defaultHTTPS              = "127.0.0.1:8443"
	defaultHTTP               = "127.0.0.1:8080"
	defaultStorageType        = "sqlite"
	defaultSQLiteFile         = "sigil.db"
	defaultMaxConns           = 10
	defaultSealType           = "shamir"
	defaultShares             = 5
	defaultThreshold          = 3
	defaultSealKeyLabel       = "sigil-seal"
	defaultDevSealFile        = "dev-seal.key"
	defaultRootKeyLabel       = "sigil-root"
	defaultKeyType            = "ec-p256"
	defaultRootCN             = "Sigil Root CA"
	defaultRootTTL            = Duration(87600 * time.Hour)
	defaultIntermediateCN     = "Sigil Intermediate CA"
	defaultIntermediateTTL    = Duration(2160 * time.Hour)
	defaultRotateBefore       = Duration(720 * time.Hour)
	defaultLeafTTL            = Duration(time.Hour)
	defaultLeafMaxTTL         = Duration(24 * time.Hour)
	defaultCRLValidity        = Duration(24 * time.Hour)
	defaultCRLRefresh         = Duration(time.Hour)
	defaultOCSPValidity       = Duration(24 * time.Hour)
	defaultOCSPRefreshBefore  = Duration(12 * time.Hour)
	defaultJWTRotateEvery     = Duration(24 * time.Hour)
	defaultJWTPrepareLead     = Duration(10 * time.Minute)
	defaultRotateAt           = 0.5
	defaultMaxVersions        = 10
	defaultACMECertTTL        = Duration(24 * time.Hour)
	defaultACMEValidationWait = Duration(2 * time.Second)
	defaultLogBatchSize       = 1024
	defaultLogBatchDelay      = Duration(2 * time.Millisecond)
	defaultAgentSVIDTTL       = Duration(time.Hour)
	defaultJoinTokenMaxTTL    = Duration(24 * time.Hour)
	defaultAgentSyncInterval  = Duration(10 * time.Second)
)

// defaultServerNames are always in the default Listen.ServerNames.
var defaultServerNames = []string{"localhost", "127.0.0.1", "::1"}

// defaultDNSDomains is the default CA.DNSDomains.
var defaultDNSDomains = []string{"localhost"}

// Default returns a Config with every documented default applied. Its
// TrustDomain is empty, so it does not validate until one is set.
func Default() Config {
	var c Config
	c.ApplyDefaults()
	return c
}

// ApplyDefaults sets every zero field to its documented default. Derived
// defaults follow the fields they derive from, which are defaulted first:
// SQLite.Path and Dev.KeyFile from DataDir, PublicURL from HTTP, HTTPSURL
// from HTTPS, ServerNames from HTTPSURL. An empty list counts as zero.
// ApplyDefaults is idempotent.
func (c *Config) ApplyDefaults() {
	setString(&c.DataDir, defaultDataDir)

	setString(&c.Log.Level, defaultLogLevel)
	setString(&c.Log.Format, defaultLogFormat)

	l := &c.Listen
	setString(&l.HTTPS, defaultHTTPS)
	setString(&l.HTTP, defaultHTTP)
	setString(&l.PublicURL, "http://"+l.HTTP)
	setString(&l.HTTPSURL, "https://"+l.HTTPS)
	setString(&l.WorkloadSocket, filepath.Join(c.DataDir, "workload.sock"))
	if len(l.ServerNames) == 0 {
		l.ServerNames = slices.Clone(defaultServerNames)
		if host := urlHost(l.HTTPSURL); host != "" && !slices.Contains(l.ServerNames, host) {
			l.ServerNames = append(l.ServerNames, host)
		}
	}

	s := &c.Storage
	setString(&s.Type, defaultStorageType)
	setString(&s.SQLite.Path, filepath.Join(c.DataDir, defaultSQLiteFile))
	setInt(&s.Postgres.MaxConns, defaultMaxConns)

	seal := &c.Seal
	setString(&seal.Type, defaultSealType)
	setInt(&seal.Shamir.Shares, defaultShares)
	setInt(&seal.Shamir.Threshold, defaultThreshold)
	setString(&seal.PKCS11.KeyLabel, defaultSealKeyLabel)
	setString(&seal.Dev.KeyFile, filepath.Join(c.DataDir, defaultDevSealFile))

	setString(&c.HSM.RootKeyLabel, defaultRootKeyLabel)

	ca := &c.CA
	if len(ca.DNSDomains) == 0 {
		ca.DNSDomains = slices.Clone(defaultDNSDomains)
	}
	setString(&ca.KeyType, defaultKeyType)
	setString(&ca.Root.CommonName, defaultRootCN)
	setDuration(&ca.Root.TTL, defaultRootTTL)
	setString(&ca.Intermediate.CommonName, defaultIntermediateCN)
	setDuration(&ca.Intermediate.TTL, defaultIntermediateTTL)
	setDuration(&ca.Intermediate.RotateBefore, defaultRotateBefore)
	setDuration(&ca.Leaf.DefaultTTL, defaultLeafTTL)
	setDuration(&ca.Leaf.MaxTTL, defaultLeafMaxTTL)
	setDuration(&ca.CRL.Validity, defaultCRLValidity)
	setDuration(&ca.CRL.Refresh, defaultCRLRefresh)
	setDuration(&ca.OCSP.Validity, defaultOCSPValidity)
	setDuration(&ca.OCSP.RefreshBefore, defaultOCSPRefreshBefore)
	setDuration(&ca.JWT.RotateEvery, defaultJWTRotateEvery)
	setDuration(&ca.JWT.PrepareLead, defaultJWTPrepareLead)

	if c.Secrets.Mounts == nil {
		c.Secrets.Mounts = []string{"secret"}
	}
	if c.ACME.CertTTL == 0 {
		c.ACME.CertTTL = min(defaultACMECertTTL, c.CA.Leaf.MaxTTL)
	}
	setDuration(&c.ACME.ValidationWait, defaultACMEValidationWait)
	setInt(&c.ACME.HTTPPort, 80)
	setInt(&c.ACME.TLSPort, 443)
	if len(c.ACME.LoopbackNames) == 0 {
		c.ACME.LoopbackNames = nil
	}
	setInt(&c.ACME.OrdersPerAccount, 1_000_000)
	setInt(&c.ACME.OrdersPerIdentifier, 100_000)
	if len(c.ACME.IPRanges) == 0 {
		c.ACME.IPRanges = nil
	}
	if len(c.Secrets.CASRequired) == 0 {
		c.Secrets.CASRequired = nil
	}
	setInt(&c.Secrets.MaxVersions, defaultMaxVersions)
	if c.WorkloadAPI.RotateAt == 0 {
		c.WorkloadAPI.RotateAt = defaultRotateAt
	}
	if c.Agents.SVIDTTL == 0 {
		c.Agents.SVIDTTL = min(defaultAgentSVIDTTL, c.CA.Leaf.MaxTTL)
	}
	setDuration(&c.Agents.JoinTokenMaxTTL, defaultJoinTokenMaxTTL)
	setDuration(&c.Agents.SyncInterval, defaultAgentSyncInterval)
	setInt(&c.TransparencyLog.BatchSize, defaultLogBatchSize)
	setDuration(&c.TransparencyLog.BatchDelay, defaultLogBatchDelay)
}

func setString(p *string, def string) {
	if *p == "" {
		*p = def
	}
}

func setInt(p *int, def int) {
	if *p == 0 {
		*p = def
	}
}

func setDuration(p *Duration, def Duration) {
	if *p == 0 {
		*p = def
	}
}

// urlHost returns the host of u in lowercase, without port or brackets, or
// "" when u does not parse or its host is neither a usable IP address nor a
// DNS name. Validate reports why.
func urlHost(u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return ""
	}
	host := strings.ToLower(parsed.Hostname())
	if ip := net.ParseIP(host); ip != nil {
		if ip.IsUnspecified() {
			return ""
		}
		return ip.String()
	}
	if dnsNameProblem(host) != "" {
		return ""
	}
	return host
}
