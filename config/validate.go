package config

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Validate checks every value and every relation between values of a
// Config whose defaults are applied. It returns nil, an *Error, or several
// *Error joined with errors.Join. The errors carry no file or line; Load and
// Parse add them.
func (c Config) Validate() error {
	v := &validator{}
	v.config(&c)
	return joinErrors(v.errs)
}

// validator collects problems with a Config. pos, when not nil, holds the
// line of each key the file set: a problem is then placed on its line, and
// a broken relation between two keys is blamed on the one the file set.
// Problems involving a key in skip are dropped: decoding already reported
// that key.
type validator struct {
	pos  map[string]int
	skip map[string]bool
	errs []*Error
	// failed holds the keys reported so far, so a value derived from one
	// of them is not reported again.
	failed map[string]bool
}

// errorf records a problem with key; related names other keys the problem
// depends on.
func (v *validator) errorf(key string, related []string, format string, args ...any) {
	for _, k := range append([]string{key}, related...) {
		if v.skip[k] {
			return
		}
	}
	v.errs = append(v.errs, &Error{Line: v.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
	if v.failed == nil {
		v.failed = map[string]bool{}
	}
	v.failed[key] = true
}

// line returns the line of key, or of its nearest enclosing section when
// the file leaves key out; 0 when neither is in the file.
func (v *validator) line(key string) int {
	for key != "" {
		if l, ok := v.pos[key]; ok {
			return l
		}
		key = key[:max(strings.LastIndexAny(key, ".["), 0)]
	}
	return 0
}

// set reports whether the file set key. Without a file nothing is set.
func (v *validator) set(key string) bool {
	_, ok := v.pos[key]
	return ok
}

// shown formats the value of key for a message about another key, marking
// a value the file left to its default.
func (v *validator) shown(key string, val any) string {
	if v.pos != nil && !v.set(key) {
		return fmt.Sprintf("%v, the default", val)
	}
	return fmt.Sprint(val)
}

// order requires lo <= hi, or lo < hi when strict. A violation is blamed on
// loKey unless only hiKey was set in the file.
func order[T cmp.Ordered](v *validator, loKey string, lo T, hiKey string, hi T, strict bool) {
	if lo < hi || (!strict && lo == hi) {
		return
	}
	if v.set(hiKey) && !v.set(loKey) {
		word := "below"
		if lo == hi {
			word = "not above"
		}
		v.errorf(hiKey, []string{loKey}, "%v is %s %s (%s)", hi, word, loKey, v.shown(loKey, lo))
		return
	}
	word := "above"
	if lo == hi {
		word = "not below"
	}
	v.errorf(loKey, []string{hiKey}, "%v is %s %s (%s)", lo, word, hiKey, v.shown(hiKey, hi))
}

func (v *validator) config(c *Config) {
	if p := trustDomainProblem(c.TrustDomain); p != "" {
		v.errorf("trust_domain", nil, "%s", p)
	}
	v.path("data_dir", c.DataDir)
	v.oneOf("log.level", c.Log.Level, "a log level", "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "a log format", "text", "json")
	v.listen(&c.Listen)
	v.storage(&c.Storage)
	v.seal(&c.Seal, &c.HSM)
	v.hsm(&c.HSM)
	v.ca(&c.CA)
	v.transparencyLog(&c.TransparencyLog)
	if r := c.WorkloadAPI.RotateAt; !(r > 0 && r < 1) {
		v.errorf("workload_api.rotate_at", nil, "%v must be above 0 and below 1", r)
	}
	v.secrets(&c.Secrets)
	v.acme(&c.ACME, &c.CA)
	v.agents(&c.Agents, &c.CA)
}

func (v *validator) agents(a *Agents, ca *CA) {
	if a.SVIDTTL <= 0 {
		v.errorf("agents.svid_ttl", nil, "%v is not positive", a.SVIDTTL)
	} else if ca.Leaf.MaxTTL > 0 {
		order(v, "agents.svid_ttl", a.SVIDTTL, "ca.leaf.max_ttl", ca.Leaf.MaxTTL, false)
	}
	if a.JoinTokenMaxTTL <= 0 {
		v.errorf("agents.join_token_max_ttl", nil, "%v is not positive", a.JoinTokenMaxTTL)
	}
	if a.SyncInterval < Duration(time.Second) {
		v.errorf("agents.sync_interval", nil, "%v is below 1s", a.SyncInterval)
	}
	if a.X509PoPCAFile != "" {
		v.path("agents.x509pop_ca_file", a.X509PoPCAFile)
	}
}

func (v *validator) acme(a *ACME, ca *CA) {
	if a.CertTTL <= 0 {
		v.errorf("acme.cert_ttl", nil, "%v is not positive", a.CertTTL)
	} else if ca.Leaf.MaxTTL > 0 {
		order(v, "acme.cert_ttl", a.CertTTL, "ca.leaf.max_ttl", ca.Leaf.MaxTTL, false)
	}
	if a.ValidationWait <= 0 || a.ValidationWait > Duration(30*time.Second) {
		v.errorf("acme.validation_wait", nil, "%v is not above 0 and at most 30s", a.ValidationWait)
	}
	for _, p := range []struct {
		key  string
		port int
	}{{"acme.http_port", a.HTTPPort}, {"acme.tls_port", a.TLSPort}} {
		if p.port < 1 || p.port > 65535 {
			v.errorf(p.key, nil, "%d is not a port", p.port)
		}
	}
	if a.DNSResolver != "" {
		v.address("acme.dns_resolver", a.DNSResolver)
	}
	for _, l := range []struct {
		key string
		n   int
	}{{"acme.orders_per_account", a.OrdersPerAccount}, {"acme.orders_per_identifier", a.OrdersPerIdentifier}} {
		if l.n < 1 {
			v.errorf(l.key, nil, "%d is not positive", l.n)
		}
	}
	for _, r := range a.IPRanges {
		if _, err := netip.ParsePrefix(r); err != nil {
			v.errorf("acme.ip_ranges", nil, "%q is not a CIDR prefix such as 10.0.0.0/8", r)
		}
	}
}

// reservedMounts are the first segments of the HTTPS API's own paths.
var reservedMounts = []string{"sys", "ca", "entries", "jwt", "policies", "acme", "log", "auth", "identity", "database"}

var mountPattern = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

func (v *validator) secrets(s *Secrets) {
	if len(s.Mounts) == 0 {
		v.errorf("secrets.mounts", nil, "at least one mount is required")
	}
	seen := map[string]bool{}
	for _, m := range s.Mounts {
		switch {
		case !mountPattern.MatchString(m):
			v.errorf("secrets.mounts", nil, "%q must be 1 to 64 of a-z, 0-9, _ and -", m)
		case slices.Contains(reservedMounts, m):
			v.errorf("secrets.mounts", nil, "%q is reserved for the API's own paths (%s)", m, strings.Join(reservedMounts, ", "))
		case seen[m]:
			v.errorf("secrets.mounts", nil, "%q is listed twice", m)
		}
		seen[m] = true
	}
	for _, m := range s.CASRequired {
		if !seen[m] {
			v.errorf("secrets.cas_required", []string{"secrets.mounts"}, "%q is not one of secrets.mounts", m)
		}
	}
	if s.MaxVersions < 1 || s.MaxVersions > 1000 {
		v.errorf("secrets.max_versions", nil, "%d is not from 1 to 1000", s.MaxVersions)
	}
}

func (v *validator) transparencyLog(t *TransparencyLog) {
	if o := t.Origin; o != "" {
		if len(o) > 255 || strings.ContainsFunc(o, func(r rune) bool { return r < 0x21 || r == 0x7f || r > 0x7e }) {
			v.errorf("transparency_log.origin", nil, "%q must be 1 to 255 printable ASCII characters without spaces", o)
		}
	}
	if t.BatchSize < 1 || t.BatchSize > 65536 {
		v.errorf("transparency_log.batch_size", nil, "%d is not from 1 to 65536", t.BatchSize)
	}
	if d := t.BatchDelay.D(); d <= 0 || d > time.Second {
		v.errorf("transparency_log.batch_delay", nil, "%v must be above 0 and at most 1s", d)
	}
}

func (v *validator) listen(l *Listen) {
	v.path("listen.workload_socket", l.WorkloadSocket)
	v.address("listen.https", l.HTTPS)
	v.address("listen.http", l.HTTP)
	v.url("listen.public_url", l.PublicURL, "listen.http", "http://"+l.HTTP, "http", "https")
	v.url("listen.https_url", l.HTTPSURL, "listen.https", "https://"+l.HTTPS, "https")
	if len(l.ServerNames) == 0 {
		v.errorf("listen.server_names", nil, "must name at least one DNS name or IP address")
	}
	for i, name := range l.ServerNames {
		if net.ParseIP(name) != nil {
			continue
		}
		if p := dnsNameProblem(name); p != "" {
			v.errorf(fmt.Sprintf("listen.server_names[%d]", i), nil, "%s is neither an IP address nor a valid DNS name: %s", quote(name), p)
		}
	}
}

// address checks a listen address of the form host:port.
func (v *validator) address(key, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.errorf(key, nil, "%s is not a host:port address, e.g. \"127.0.0.1:8443\" or \":8443\"", quote(addr))
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.errorf(key, nil, "port %s is not a number from 0 to 65535", quote(port))
	}
	if host == "" || net.ParseIP(host) != nil {
		return
	}
	if p := dnsNameProblem(strings.ToLower(host)); p != "" {
		v.errorf(key, nil, "host %s is neither an IP address nor a valid DNS name: %s", quote(host), p)
	}
}

// url checks an absolute base URL with one of schemes. derived is what
// ApplyDefaults makes of fromKey, for a hint when that is the value.
func (v *validator) url(key, raw, fromKey, derived string, schemes ...string) {
	p := urlProblem(raw, schemes)
	if p == "" {
		return
	}
	if raw == derived && v.failed[fromKey] {
		// Already reported where it comes from.
		return
	}
	if raw == derived && !v.set(key) {
		v.errorf(key, []string{fromKey}, "%s (made from %s) %s; set %s to the URL clients use", quote(raw), fromKey, p, key)
		return
	}
	v.errorf(key, nil, "%s %s", quote(raw), p)
}

func urlProblem(raw string, schemes []string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "is not a valid URL"
	}
	if !slices.Contains(schemes, u.Scheme) {
		return "must start with " + strings.Join(schemes, ":// or ") + "://"
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return "has no host"
	}
	if u.User != nil {
		return "must not contain a user name or password"
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#") {
		return "must not have a query or fragment"
	}
	if strings.HasSuffix(u.Path, "/") {
		return "must not end with a slash; drop it"
	}
	host := strings.ToLower(u.Hostname())
	if ip := net.ParseIP(host); ip != nil {
		if ip.IsUnspecified() {
			return "names the unspecified address " + host + ", which clients cannot reach"
		}
	} else if p := dnsNameProblem(host); p != "" {
		return "has an invalid host: " + p
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "has port " + port + ", which is not from 1 to 65535"
		}
	}
	return ""
}

func (v *validator) storage(s *Storage) {
	v.oneOf("storage.type", s.Type, "a storage type", "sqlite", "postgres")
	v.path("storage.sqlite.path", s.SQLite.Path)
	pg := &s.Postgres
	switch {
	case s.Type == "postgres" && pg.DSN == "":
		v.errorf("storage.postgres.dsn", []string{"storage.type"}, "required when storage.type is postgres, e.g. \"postgres://sigil@db:5432/sigil?sslmode=verify-full\"")
	case s.Type != "postgres" && pg.DSN != "":
		v.errorf("storage.postgres.dsn", []string{"storage.type"}, "is set but storage.type is %s; set storage.type to postgres or remove the dsn", quote(s.Type))
	}
	if pg.DSN != "" {
		// The DSN may hold a secret: messages never quote it.
		if p := dsnProblem(pg.DSN); p != "" {
			v.errorf("storage.postgres.dsn", nil, "%s", p)
		}
	}
	if pg.PasswordFile != "" {
		v.path("storage.postgres.password_file", pg.PasswordFile)
	}
	if pg.MaxConns < 1 {
		v.errorf("storage.postgres.max_conns", nil, "%d is below 1; the pool needs at least one connection", pg.MaxConns)
	}
}

func (v *validator) seal(s *Seal, h *HSM) {
	v.oneOf("seal.type", s.Type, "a seal type", "shamir", "pkcs11", "dev")
	sh := &s.Shamir
	shares, threshold := "seal.shamir.shares", "seal.shamir.threshold"
	if sh.Shares < 1 || sh.Shares > 255 {
		v.errorf(shares, nil, "%d is not from 1 to 255", sh.Shares)
	}
	if sh.Threshold < 1 {
		v.errorf(threshold, nil, "%d is below 1; at least one share must be needed to unseal", sh.Threshold)
	}
	if sh.Shares >= 1 && sh.Threshold >= 1 {
		// Threshold above shares: the key could never be recovered.
		order(v, threshold, sh.Threshold, shares, sh.Shares, false)
	}
	v.label("seal.pkcs11.key_label", s.PKCS11.KeyLabel)
	v.path("seal.dev.key_file", s.Dev.KeyFile)
	if s.Type == "pkcs11" && h.Module == "" {
		v.errorf("seal.type", []string{"hsm.module"}, "the pkcs11 seal needs an HSM; set hsm.module, hsm.token_label and hsm.pin_file or hsm.pin_env")
	}
}

func (v *validator) hsm(h *HSM) {
	v.label("hsm.root_key_label", h.RootKeyLabel)
	if h.Module == "" {
		for _, f := range []struct{ key, val string }{
			{"hsm.token_label", h.TokenLabel},
			{"hsm.pin_file", h.PINFile},
			{"hsm.pin_env", h.PINEnv},
		} {
			if f.val != "" {
				v.errorf(f.key, []string{"hsm.module"}, "is set but hsm.module is empty; set the PKCS#11 module or remove this key")
			}
		}
		return
	}
	v.path("hsm.module", h.Module)
	if h.TokenLabel == "" {
		v.errorf("hsm.token_label", []string{"hsm.module"}, "required with hsm.module: the CKA_LABEL of the token to use")
	} else {
		v.label("hsm.token_label", h.TokenLabel)
	}
	switch {
	case h.PINFile == "" && h.PINEnv == "":
		v.errorf("hsm.module", nil, "needs the token's user PIN; set hsm.pin_file or hsm.pin_env")
	case h.PINFile != "" && h.PINEnv != "":
		v.errorf("hsm.pin_env", []string{"hsm.pin_file"}, "set only one of hsm.pin_file and hsm.pin_env")
	case h.PINFile != "":
		v.path("hsm.pin_file", h.PINFile)
	default:
		if !isEnvName(h.PINEnv) {
			v.errorf("hsm.pin_env", nil, "%s is not an environment variable name; use letters, digits and '_', not starting with a digit", quote(h.PINEnv))
		}
	}
}

func (v *validator) ca(ca *CA) {
	if len(ca.DNSDomains) == 0 {
		v.errorf("ca.dns_domains", nil, "must name at least one DNS domain")
	}
	for i, d := range ca.DNSDomains {
		key := fmt.Sprintf("ca.dns_domains[%d]", i)
		if net.ParseIP(d) != nil {
			v.errorf(key, nil, "%s is an IP address; dns_domains takes DNS names", quote(d))
		} else if p := dnsNameProblem(d); p != "" {
			v.errorf(key, nil, "%s is not a valid DNS name: %s", quote(d), p)
		}
	}
	v.oneOf("ca.key_type", ca.KeyType, "a key type", "ec-p256", "ec-p384")
	v.commonName("ca.root.common_name", ca.Root.CommonName)
	v.commonName("ca.intermediate.common_name", ca.Intermediate.CommonName)

	ttls := []struct {
		key string
		d   Duration
	}{
		{"ca.root.ttl", ca.Root.TTL},
		{"ca.intermediate.ttl", ca.Intermediate.TTL},
		{"ca.intermediate.rotate_before", ca.Intermediate.RotateBefore},
		{"ca.leaf.default_ttl", ca.Leaf.DefaultTTL},
		{"ca.leaf.max_ttl", ca.Leaf.MaxTTL},
		{"ca.crl.validity", ca.CRL.Validity},
		{"ca.crl.refresh", ca.CRL.Refresh},
		{"ca.ocsp.validity", ca.OCSP.Validity},
		{"ca.ocsp.refresh_before", ca.OCSP.RefreshBefore},
		{"ca.jwt.rotate_every", ca.JWT.RotateEvery},
		{"ca.jwt.prepare_lead", ca.JWT.PrepareLead},
	}
	positive := true
	for _, t := range ttls {
		if t.d <= 0 {
			v.errorf(t.key, nil, "%v is not positive", t.d)
			positive = false
		}
	}
	if !positive {
		// The relations below mean nothing between non-positive values.
		return
	}
	// default_ttl <= max_ttl <= rotate_before < intermediate.ttl <= root.ttl
	order(v, "ca.leaf.default_ttl", ca.Leaf.DefaultTTL, "ca.leaf.max_ttl", ca.Leaf.MaxTTL, false)
	order(v, "ca.leaf.max_ttl", ca.Leaf.MaxTTL, "ca.intermediate.rotate_before", ca.Intermediate.RotateBefore, false)
	order(v, "ca.intermediate.rotate_before", ca.Intermediate.RotateBefore, "ca.intermediate.ttl", ca.Intermediate.TTL, true)
	order(v, "ca.intermediate.ttl", ca.Intermediate.TTL, "ca.root.ttl", ca.Root.TTL, false)
	order(v, "ca.crl.refresh", ca.CRL.Refresh, "ca.crl.validity", ca.CRL.Validity, true)
	order(v, "ca.ocsp.refresh_before", ca.OCSP.RefreshBefore, "ca.ocsp.validity", ca.OCSP.Validity, true)
	order(v, "ca.jwt.prepare_lead", ca.JWT.PrepareLead, "ca.jwt.rotate_every", ca.JWT.RotateEvery, true)
}

// oneOf requires val to be one of allowed; what names the kind of value.
func (v *validator) oneOf(key, val, what string, allowed ...string) {
	if slices.Contains(allowed, val) {
		return
	}
	list := strings.Join(allowed[:len(allowed)-1], ", ") + " or " + allowed[len(allowed)-1]
	v.errorf(key, nil, "%s is not %s; use %s", quote(val), what, list)
}

// path requires a non-empty file path without control characters.
func (v *validator) path(key, p string) {
	if p == "" {
		v.errorf(key, nil, "must not be empty")
	} else if !printable(p) {
		v.errorf(key, nil, "must be valid UTF-8 without control characters")
	}
}

// label requires a non-empty PKCS#11 label of at most 32 bytes (CK_UTF8CHAR[32]).
func (v *validator) label(key, l string) {
	switch {
	case l == "":
		v.errorf(key, nil, "must not be empty")
	case !printable(l):
		v.errorf(key, nil, "must be valid UTF-8 without control characters")
	case len(l) > 32:
		v.errorf(key, nil, "is %d bytes long; a PKCS#11 label holds at most 32", len(l))
	}
}

// commonName requires a non-empty name of at most 64 characters, the
// X.509 upper bound for a common name.
func (v *validator) commonName(key, cn string) {
	switch {
	case strings.TrimSpace(cn) == "":
		v.errorf(key, nil, "must not be empty")
	case !printable(cn):
		v.errorf(key, nil, "must be valid UTF-8 without control characters")
	case utf8.RuneCountInString(cn) > 64:
		v.errorf(key, nil, "is %d characters long; a certificate's common name holds at most 64", utf8.RuneCountInString(cn))
	}
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func isEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// trustDomainProblem says what is wrong with a SPIFFE trust domain name, or
// returns "".
func trustDomainProblem(td string) string {
	if td == "" {
		return "required; set it to your SPIFFE trust domain, e.g. example.org"
	}
	if rest, ok := strings.CutPrefix(strings.ToLower(td), "spiffe://"); ok {
		rest, _, _ = strings.Cut(rest, "/")
		return fmt.Sprintf("%s must be the trust domain alone, without \"spiffe://\", e.g. %s", quote(td), quote(rest))
	}
	if strings.Contains(td, "://") {
		return fmt.Sprintf("%s must be a bare trust domain such as example.org, without a scheme", quote(td))
	}
	if strings.Contains(td, "/") {
		return fmt.Sprintf("%s must be a bare trust domain such as example.org, without a path", quote(td))
	}
	if strings.Contains(td, ":") {
		return fmt.Sprintf("%s must be a bare trust domain such as example.org, without a port", quote(td))
	}
	if strings.ToLower(td) != td {
		return fmt.Sprintf("%s must be lowercase: %s", quote(td), quote(strings.ToLower(td)))
	}
	if len(td) > 255 {
		return fmt.Sprintf("is %d characters long; a trust domain has at most 255", len(td))
	}
	for _, r := range td {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Sprintf("%s contains %q; a trust domain has only lowercase letters, digits, '.', '-' and '_'", quote(td), r)
		}
	}
	return ""
}

// dnsNameProblem says what is wrong with a lowercase DNS name without a
// trailing dot or wildcard, or returns "".
func dnsNameProblem(name string) string {
	switch {
	case name == "":
		return "it is empty"
	case strings.Contains(name, "*"):
		return "wildcards are not allowed"
	case strings.HasSuffix(name, "."):
		return "drop the trailing dot"
	case strings.ToLower(name) != name:
		return "it must be lowercase"
	case len(name) > 253:
		return "it is longer than 253 characters"
	}
	for label := range strings.SplitSeq(name, ".") {
		switch {
		case label == "":
			return "it has an empty label"
		case len(label) > 63:
			return "a label is longer than 63 characters"
		case label[0] == '-' || label[len(label)-1] == '-':
			return "a label starts or ends with '-'"
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Sprintf("it contains %q; use lowercase letters, digits, '-' and '.'", r)
			}
		}
	}
	return ""
}

// dsnProblem reports a password in a PostgreSQL connection string, or a
// string that is neither form. It never repeats the string.
func dsnProblem(dsn string) string {
	const usePasswordFile = "must not contain a password; remove it and name a file holding the password in storage.postgres.password_file"
	lower := strings.ToLower(dsn)
	if strings.HasPrefix(lower, "postgres://") || strings.HasPrefix(lower, "postgresql://") {
		_, rest, _ := strings.Cut(dsn, "://")
		authority, tail := rest, ""
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			authority, tail = rest[:i], rest[i:]
		}
		if at := strings.LastIndex(authority, "@"); at >= 0 && strings.Contains(authority[:at], ":") {
			return usePasswordFile
		}
		if _, query, ok := strings.Cut(tail, "?"); ok {
			query, _, _ = strings.Cut(query, "#")
			q, err := url.ParseQuery(query)
			if err != nil {
				return "has a query that does not parse as URL parameters"
			}
			if q.Has("password") {
				return usePasswordFile
			}
		}
		return ""
	}
	if strings.Contains(dsn, "://") {
		return "must be a postgres:// or postgresql:// URL or key=value pairs"
	}
	keys, ok := dsnKeys(dsn)
	if !ok {
		return "is neither a postgres:// URL nor key=value pairs such as \"host=db user=sigil dbname=sigil\""
	}
	if slices.Contains(keys, "password") {
		return usePasswordFile
	}
	return ""
}

// dsnKeys returns the keys of a libpq keyword/value connection string,
// lowercased, and whether it parsed.
func dsnKeys(s string) ([]string, bool) {
	var keys []string
	i := 0
	skipSpace := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
	}
	for {
		skipSpace()
		if i == len(s) {
			return keys, len(keys) > 0
		}
		start := i
		for i < len(s) && s[i] != '=' && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' {
			i++
		}
		key := strings.ToLower(s[start:i])
		skipSpace()
		if key == "" || i == len(s) || s[i] != '=' {
			return nil, false
		}
		i++
		skipSpace()
		if i < len(s) && s[i] == '\'' {
			i++
			for i < len(s) && s[i] != '\'' {
				if s[i] == '\\' {
					i++
				}
				i++
			}
			if i >= len(s) {
				return nil, false
			}
			i++
		} else {
			for i < len(s) && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' {
				if s[i] == '\\' {
					i++
				}
				i++
			}
			if i > len(s) {
				return nil, false
			}
		}
		keys = append(keys, key)
	}
}
