package config

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.err from the current output")

// allErrors flattens err, which Parse or Validate returned, into its
// *Error values, failing the test on anything else.
func allErrors(t *testing.T, err error) []*Error {
	t.Helper()
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	out := make([]*Error, 0, len(errs))
	for _, e := range errs {
		ce, ok := e.(*Error)
		if !ok {
			t.Fatalf("error %v (%T) is not a *config.Error", e, e)
		}
		out = append(out, ce)
	}
	return out
}

// TestBad parses each testdata/bad/*.yaml and compares the full error text
// with the sibling .err file. Run with -update to rewrite them.
func TestBad(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/bad/*.yaml: %v", err)
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			c, err := Parse(name, data)
			if err == nil {
				t.Fatalf("Parse accepted %s", name)
			}
			if !reflect.DeepEqual(c, Config{}) {
				t.Errorf("Parse returned a non-zero Config with an error")
			}
			for _, e := range allErrors(t, err) {
				if e.File != name || e.Msg == "" {
					t.Errorf("error %#v: want File %q and a message", e, name)
				}
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(file, ".yaml") + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("error for %s differs from %s (-want +got):\n%s", name, golden, diff)
			}
		})
	}
}

// TestBadErrFilesHaveYAML keeps testdata/bad free of stale .err files.
func TestBadErrFilesHaveYAML(t *testing.T) {
	errs, _ := filepath.Glob("testdata/bad/*.err")
	for _, e := range errs {
		if _, err := os.Stat(strings.TrimSuffix(e, ".err") + ".yaml"); err != nil {
			t.Errorf("%s has no .yaml: %v", e, err)
		}
	}
}

// TestErrorDetails checks the structured fields of errors, not only their
// text: the golden files could hide a wrong Line or Key behind a plausible
// message.
func TestErrorDetails(t *testing.T) {
	tests := []struct {
		file string
		want []Error
	}{
		{"unknown_nested.yaml", []Error{{Line: 4, Key: "ca.leaf.max_tll"}}},
		{"max_ttl_above_rotate_before.yaml", []Error{{Line: 12, Key: "ca.leaf.max_ttl"}}},
		{"rotate_before_below_default_max_ttl.yaml", []Error{{Line: 4, Key: "ca.intermediate.rotate_before"}}},
		{"postgres_without_dsn.yaml", []Error{{Line: 2, Key: "storage.postgres.dsn"}}},
		{"hsm_without_token_and_pin.yaml", []Error{{Line: 2, Key: "hsm.token_label"}, {Line: 3, Key: "hsm.module"}}},
		{"two_errors.yaml", []Error{{Line: 3, Key: "log.level"}, {Line: 5, Key: "ca.key_type"}}},
		{"decode_and_validate_errors.yaml", []Error{
			{Line: 1, Key: "trust_domain"},
			{Line: 2, Key: "colour"},
			{Line: 5, Key: "seal.shamir.shares"},
		}},
		{"two_documents.yaml", []Error{{Line: 2}}},
		{"syntax_error.yaml", []Error{{Line: 3}}}, // the parser notices one line early
		{"empty.yaml", []Error{{Key: "trust_domain"}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata/bad", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(tt.file, data)
			if err == nil {
				t.Fatal("Parse accepted the file")
			}
			var got []Error
			for _, e := range allErrors(t, err) {
				got = append(got, Error{Line: e.Line, Key: e.Key})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestErrorsAs(t *testing.T) {
	_, err := Parse("sigil.yaml", []byte("trust_domain: example.org\nca:\n  leaf:\n    max_ttl: 48h\n  intermediate:\n    rotate_before: 24h\n"))
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("errors.As(%v, *Error) = false", err)
	}
	want := "sigil.yaml:4: ca.leaf.max_ttl: 48h is above ca.intermediate.rotate_before (24h)"
	if e.Error() != want {
		t.Errorf("got %q, want %q", e.Error(), want)
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		name string
		err  Error
		want string
	}{
		{"all", Error{File: "sigil.yaml", Line: 12, Key: "a.b", Msg: "bad"}, "sigil.yaml:12: a.b: bad"},
		{"no line", Error{File: "sigil.yaml", Key: "a.b", Msg: "bad"}, "sigil.yaml: a.b: bad"},
		{"no key", Error{File: "sigil.yaml", Line: 3, Msg: "bad"}, "sigil.yaml:3: bad"},
		{"no file", Error{Key: "a.b", Msg: "bad"}, "a.b: bad"},
		{"line only", Error{Line: 2, Msg: "bad"}, "line 2: bad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestSecretsNotInErrors: a password written into the DSN never appears in
// the error that rejects it.
func TestSecretsNotInErrors(t *testing.T) {
	for _, dsn := range []string{
		"postgres://sigil:s3cr3t-value@db/sigil",
		"postgresql://sigil@db/sigil?password=s3cr3t-value",
		"host=db password=s3cr3t-value",
		"host=db PASSWORD = 's3cr3t-value'",
		"host=db password='s3cr3t-value", // unterminated quote
	} {
		t.Run(dsn, func(t *testing.T) {
			in := "trust_domain: example.org\nstorage:\n  type: postgres\n  postgres:\n    dsn: \"" + dsn + "\"\n"
			_, err := Parse("sigil.yaml", []byte(in))
			if err == nil {
				t.Fatal("Parse accepted a DSN with a password")
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("error reveals the password: %v", err)
			}
		})
	}
}

func TestDSNWithoutPassword(t *testing.T) {
	for _, dsn := range []string{
		"postgres://sigil@db:5432/sigil?sslmode=verify-full",
		"postgres://db1:5432,db2:5432/sigil?target_session_attrs=read-write",
		"postgresql:///sigil?host=/run/postgresql",
		"host=db user=sigil dbname=sigil sslmode=verify-full",
		"host = db application_name='sigil server'",
	} {
		t.Run(dsn, func(t *testing.T) {
			c := valid()
			c.Storage.Type = "postgres"
			c.Storage.Postgres.DSN = dsn
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

// valid returns Default with a trust domain: a Config that validates.
func valid() Config {
	c := Default()
	c.TrustDomain = "example.org"
	return c
}

// TestValidate covers Validate on Configs built in code: each case breaks
// one rule and names the key blamed.
func TestValidate(t *testing.T) {
	h := time.Hour
	tests := []struct {
		name   string
		modify func(*Config)
		key    string
		msg    string // a substring of the message
	}{
		{"no trust domain", func(c *Config) { c.TrustDomain = "" }, "trust_domain", "required"},
		{"trust domain path", func(c *Config) { c.TrustDomain = "example.org/ns" }, "trust_domain", "without a path"},
		{"trust domain long", func(c *Config) { c.TrustDomain = strings.Repeat("a", 256) }, "trust_domain", "at most 255"},
		{"empty data dir", func(c *Config) { c.DataDir = "" }, "data_dir", "must not be empty"},
		{"log level", func(c *Config) { c.Log.Level = "trace" }, "log.level", "use debug, info, warn or error"},
		{"https address", func(c *Config) { c.Listen.HTTPS = "localhost" }, "listen.https", "host:port"},
		{"http port", func(c *Config) { c.Listen.HTTP = "127.0.0.1:70000" }, "listen.http", "0 to 65535"},
		{"https_url scheme", func(c *Config) { c.Listen.HTTPSURL = "http://127.0.0.1:8443" }, "listen.https_url", "must start with https://"},
		{"public_url query", func(c *Config) { c.Listen.PublicURL = "http://pki.example.org?x=1" }, "listen.public_url", "query"},
		{"public_url user", func(c *Config) { c.Listen.PublicURL = "http://u@pki.example.org" }, "listen.public_url", "user name"},
		{"public_url relative", func(c *Config) { c.Listen.PublicURL = "/pki" }, "listen.public_url", "must start with http:// or https://"},
		{"public_url unspecified", func(c *Config) { c.Listen.PublicURL = "http://0.0.0.0:8080" }, "listen.public_url", "unspecified"},
		{"no server names", func(c *Config) { c.Listen.ServerNames = nil }, "listen.server_names", "at least one"},
		{"server name wildcard", func(c *Config) { c.Listen.ServerNames = []string{"*.example.org"} }, "listen.server_names[0]", "wildcards"},
		{"storage type", func(c *Config) { c.Storage.Type = "" }, "storage.type", "use sqlite or postgres"},
		{"max conns", func(c *Config) { c.Storage.Postgres.MaxConns = 0 }, "storage.postgres.max_conns", "at least one"},
		{"dsn not postgres", func(c *Config) {
			c.Storage.Type = "postgres"
			c.Storage.Postgres.DSN = "mysql://db/sigil"
		}, "storage.postgres.dsn", "postgres:// or postgresql://"},
		{"dsn garbage", func(c *Config) {
			c.Storage.Type = "postgres"
			c.Storage.Postgres.DSN = "db.example.org"
		}, "storage.postgres.dsn", "neither"},
		{"shares zero", func(c *Config) { c.Seal.Shamir.Shares = 0 }, "seal.shamir.shares", "1 to 255"},
		{"threshold zero", func(c *Config) { c.Seal.Shamir.Threshold = 0 }, "seal.shamir.threshold", "below 1"},
		{"threshold above shares", func(c *Config) { c.Seal.Shamir.Threshold = 6 }, "seal.shamir.threshold", "6 is above seal.shamir.shares (5)"},
		{"pkcs11 seal", func(c *Config) { c.Seal.Type = "pkcs11" }, "seal.type", "needs an HSM"},
		{"seal label long", func(c *Config) { c.Seal.PKCS11.KeyLabel = strings.Repeat("k", 33) }, "seal.pkcs11.key_label", "at most 32"},
		{"dev key file control", func(c *Config) { c.Seal.Dev.KeyFile = "/tmp/a\nb" }, "seal.dev.key_file", "control characters"},
		{"hsm no token", func(c *Config) {
			c.HSM.Module = "/lib/p11.so"
			c.HSM.PINEnv = "PIN"
		}, "hsm.token_label", "required with hsm.module"},
		{"hsm pin env name", func(c *Config) {
			c.HSM.Module = "/lib/p11.so"
			c.HSM.TokenLabel = "t"
			c.HSM.PINEnv = "1PIN"
		}, "hsm.pin_env", "environment variable name"},
		{"token without module", func(c *Config) { c.HSM.TokenLabel = "t" }, "hsm.token_label", "hsm.module is empty"},
		{"no dns domains", func(c *Config) { c.CA.DNSDomains = nil }, "ca.dns_domains", "at least one"},
		{"dns domain dot", func(c *Config) { c.CA.DNSDomains = []string{"example.org", "a..b"} }, "ca.dns_domains[1]", "empty label"},
		{"dns domain hyphen", func(c *Config) { c.CA.DNSDomains = []string{"-a.example.org"} }, "ca.dns_domains[0]", "starts or ends with '-'"},
		{"dns domain label long", func(c *Config) { c.CA.DNSDomains = []string{strings.Repeat("a", 64) + ".org"} }, "ca.dns_domains[0]", "longer than 63"},
		{"key type", func(c *Config) { c.CA.KeyType = "ed25519" }, "ca.key_type", "use ec-p256 or ec-p384"},
		{"empty common name", func(c *Config) { c.CA.Intermediate.CommonName = " " }, "ca.intermediate.common_name", "must not be empty"},
		{"negative ttl", func(c *Config) { c.CA.Leaf.MaxTTL = Duration(-h) }, "ca.leaf.max_ttl", "-1h is not positive"},
		{"zero ttl", func(c *Config) { c.CA.CRL.Refresh = 0 }, "ca.crl.refresh", "0s is not positive"},
		{"default above max", func(c *Config) { c.CA.Leaf.DefaultTTL = Duration(25 * h) }, "ca.leaf.default_ttl", "25h is above ca.leaf.max_ttl (24h)"},
		{"max above rotate", func(c *Config) { c.CA.Leaf.MaxTTL = Duration(721 * h) }, "ca.leaf.max_ttl", "721h is above ca.intermediate.rotate_before (720h)"},
		{"rotate equals ttl", func(c *Config) { c.CA.Intermediate.RotateBefore = Duration(2160 * h) }, "ca.intermediate.rotate_before", "2160h is not below ca.intermediate.ttl (2160h)"},
		{"intermediate above root", func(c *Config) { c.CA.Root.TTL = Duration(2000 * h) }, "ca.intermediate.ttl", "2160h is above ca.root.ttl (2000h)"},
		{"crl refresh", func(c *Config) { c.CA.CRL.Refresh = Duration(24 * h) }, "ca.crl.refresh", "24h is not below ca.crl.validity (24h)"},
		{"ocsp refresh", func(c *Config) { c.CA.OCSP.RefreshBefore = Duration(30 * h) }, "ca.ocsp.refresh_before", "30h is above ca.ocsp.validity (24h)"},
		{"reserved mount", func(c *Config) { c.Secrets.Mounts = []string{"secret", "sys"} }, "secrets.mounts", "\"sys\" is reserved for the API's own paths (sys, ca, entries, jwt, policies, acme, log, auth, identity, database)"},
		{"cas on unknown mount", func(c *Config) { c.Secrets.CASRequired = []string{"kv"} }, "secrets.cas_required", "\"kv\" is not one of secrets.mounts"},
		{"rotate at one", func(c *Config) { c.WorkloadAPI.RotateAt = 1 }, "workload_api.rotate_at", "1 must be above 0 and below 1"},
		{"jwt lead", func(c *Config) { c.CA.JWT.PrepareLead = Duration(24 * h) }, "ca.jwt.prepare_lead", "24h is not below ca.jwt.rotate_every (24h)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.modify(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate accepted the Config")
			}
			errs := allErrors(t, err)
			if len(errs) != 1 {
				t.Fatalf("want one error, got %d: %v", len(errs), err)
			}
			e := errs[0]
			if e.File != "" || e.Line != 0 || e.Key != tt.key || !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("got %#v, want key %q and a message containing %q", e, tt.key, tt.msg)
			}
		})
	}
}

func TestValidateCollectsAll(t *testing.T) {
	err := Config{}.Validate()
	keys := map[string]bool{}
	for _, e := range allErrors(t, err) {
		keys[e.Key] = true
	}
	for _, k := range []string{"trust_domain", "data_dir", "log.level", "listen.https", "storage.type", "seal.type", "ca.key_type", "ca.root.ttl", "ca.ocsp.refresh_before"} {
		if !keys[k] {
			t.Errorf("Validate of a zero Config reported nothing for %s; got %v", k, err)
		}
	}
}

func TestDefault(t *testing.T) {
	c := Default()
	if c.TrustDomain != "" {
		t.Errorf("TrustDomain = %q, want empty", c.TrustDomain)
	}
	errs := allErrors(t, c.Validate())
	if len(errs) != 1 || errs[0].Key != "trust_domain" {
		t.Errorf("Validate(Default()) = %v, want only the missing trust_domain", errs)
	}
	// Spot checks against the documented defaults; TestExample checks all
	// of them against sigil.example.yaml.
	if c.Storage.SQLite.Path != "/var/lib/sigil/sigil.db" || c.Listen.PublicURL != "http://127.0.0.1:8080" ||
		c.CA.Root.TTL.D() != 87600*time.Hour || !slices.Equal(c.Listen.ServerNames, []string{"localhost", "127.0.0.1", "::1"}) {
		t.Errorf("Default() = %+v", c)
	}
	// Defaults are fresh slices: changing one Config leaves the next alone.
	c.CA.DNSDomains[0] = "changed"
	c.Listen.ServerNames[0] = "changed"
	if d := Default(); d.CA.DNSDomains[0] != "localhost" || d.Listen.ServerNames[0] != "localhost" {
		t.Errorf("Default shares slices between calls")
	}
}

func TestApplyDefaultsIdempotent(t *testing.T) {
	c := Config{DataDir: "/d", Listen: Listen{HTTPS: "sigil.example.org:443"}}
	c.ApplyDefaults()
	once := c
	once.Listen.ServerNames = slices.Clone(c.Listen.ServerNames)
	c.ApplyDefaults()
	if diff := cmp.Diff(once, c); diff != "" {
		t.Errorf("second ApplyDefaults changed the Config (-first +second):\n%s", diff)
	}
	if want := []string{"localhost", "127.0.0.1", "::1", "sigil.example.org"}; !slices.Equal(c.Listen.ServerNames, want) {
		t.Errorf("ServerNames = %q, want %q", c.Listen.ServerNames, want)
	}
}

func TestGood(t *testing.T) {
	tests := []struct {
		file string
		want func(*Config)
	}{
		{"minimal.yaml", func(c *Config) { c.TrustDomain = "example.org" }},
		{"ha.yaml", func(c *Config) {
			c.TrustDomain = "prod.example.org"
			c.DataDir = "/srv/sigil"
			c.Log = Log{Level: "warn", Format: "json"}
			c.Listen = Listen{
				HTTPS:          "0.0.0.0:8443",
				HTTP:           "0.0.0.0:8080",
				PublicURL:      "http://pki.example.org",
				HTTPSURL:       "https://sigil.example.org:8443",
				WorkloadSocket: "/srv/sigil/workload.sock",
				ServerNames:    []string{"localhost", "127.0.0.1", "::1", "sigil.example.org"},
			}
			c.Storage = Storage{
				Type:   "postgres",
				SQLite: SQLite{Path: "/srv/sigil/sigil.db"},
				Postgres: Postgres{
					DSN:          "postgres://sigil@db.example.org:5432/sigil?sslmode=verify-full",
					PasswordFile: "/etc/sigil/db-password",
					MaxConns:     20,
				},
			}
			c.Seal.Type = "pkcs11"
			c.Seal.Dev.KeyFile = "/srv/sigil/dev-seal.key"
			c.HSM = HSM{Module: "/usr/lib/softhsm/libsofthsm2.so", TokenLabel: "sigil", PINEnv: "SIGIL_HSM_PIN", RootKeyLabel: "sigil-root"}
			c.CA.DNSDomains = []string{"example.org", "example.net"}
			c.CA.KeyType = "ec-p384"
			c.CA.Leaf = Leaf{DefaultTTL: Duration(30 * time.Minute), MaxTTL: Duration(4 * time.Hour)}
			c.ACME.CertTTL = Duration(4 * time.Hour) // the default, cut to ca.leaf.max_ttl
		}},
		{"derived.yaml", func(c *Config) {
			c.TrustDomain = "dev.local"
			c.DataDir = "./data"
			c.Listen = Listen{
				HTTPS:          "[::1]:9443",
				HTTP:           "localhost:9080",
				PublicURL:      "http://localhost:9080",
				HTTPSURL:       "https://[::1]:9443",
				WorkloadSocket: "data/workload.sock",
				ServerNames:    []string{"localhost", "127.0.0.1", "::1"},
			}
			c.Storage.SQLite.Path = "data/sigil.db"
			c.Seal.Type = "dev"
			c.Seal.Dev.KeyFile = "data/dev-seal.key"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := Load(filepath.Join("testdata/good", tt.file))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := Default()
			tt.want(&want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Load (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "absent.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want fs.ErrNotExist", err)
	}
}

func TestLoadNamesPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigil.yaml")
	if err := os.WriteFile(path, []byte("trust_domain: example.org\nlog:\n  level: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	want := path + `:3: log.level: "loud" is not a log level; use debug, info, warn or error`
	if err == nil || err.Error() != want {
		t.Errorf("Load: %v, want %s", err, want)
	}
}

// TestExample: the embedded example parses to the defaults with
// trust_domain example.org.
func TestExample(t *testing.T) {
	got, err := Parse("sigil.example.yaml", Example)
	if err != nil {
		t.Fatalf("Parse(Example): %v", err)
	}
	want := Default()
	want.TrustDomain = "example.org"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("example differs from Default (-want +got):\n%s", diff)
	}
	onDisk, err := os.ReadFile("sigil.example.yaml")
	if err != nil || string(onDisk) != string(Example) {
		t.Errorf("Example is not the content of sigil.example.yaml (%v)", err)
	}
}

// TestExampleDocumentsEveryKey: every key of Config is written out in the
// example, each with a comment above it or beside it that states its
// default.
func TestExampleDocumentsEveryKey(t *testing.T) {
	var doc yaml.Node
	if err := yaml.Unmarshal(Example, &doc); err != nil {
		t.Fatal(err)
	}
	type entry struct {
		comment string
	}
	found := map[string]entry{}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := join(prefix, k.Value)
			found[key] = entry{comment: k.HeadComment + k.LineComment + v.LineComment}
			if v.Kind == yaml.MappingNode {
				walk(v, key)
			}
		}
	}
	walk(doc.Content[0], "")

	var want []string
	var keys func(t reflect.Type, prefix string)
	keys = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			key := join(prefix, yamlName(f))
			want = append(want, key)
			if f.Type.Kind() == reflect.Struct && f.Type != durationType {
				keys(f.Type, key)
			}
		}
	}
	keys(reflect.TypeFor[Config](), "")

	for _, key := range want {
		e, ok := found[key]
		switch {
		case !ok:
			t.Errorf("example lacks %s", key)
		case strings.TrimSpace(e.comment) == "":
			t.Errorf("example has no comment for %s", key)
		case !strings.Contains(e.comment, "efault") && !strings.Contains(e.comment, "no default") &&
			!isSection(key):
			t.Errorf("comment for %s does not state the default: %q", key, e.comment)
		}
	}
	if len(found) != len(want) {
		t.Errorf("example has %d keys, Config has %d", len(found), len(want))
	}
}

// isSection reports whether key names a mapping of other keys, whose
// defaults are stated on those keys.
func isSection(key string) bool {
	f, ok := fieldByKey(reflect.TypeFor[Config](), key)
	return ok && f.Type.Kind() == reflect.Struct && f.Type != durationType
}

func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	head, rest, more := strings.Cut(key, ".")
	i := fieldIndex(t, head)
	if i < 0 {
		return reflect.StructField{}, false
	}
	if !more {
		return t.Field(i), true
	}
	return fieldByKey(t.Field(i).Type, rest)
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		str  string
	}{
		{"90s", 90 * time.Second, "1m30s"},
		{"720h", 720 * time.Hour, "720h"},
		{"1h30m", 90 * time.Minute, "1h30m"},
		{"1h0m30s", time.Hour + 30*time.Second, "1h0m30s"},
		{"500ms", 500 * time.Millisecond, "500ms"},
		{"-2h", -2 * time.Hour, "-2h"},
		{"0s", 0, "0s"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			if err := yaml.Unmarshal([]byte(tt.in), &d); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if d.D() != tt.want || d.String() != tt.str {
				t.Errorf("got %v (%s), want %v (%s)", d.D(), d, tt.want, tt.str)
			}
			out, err := yaml.Marshal(d)
			if err != nil || string(out) != tt.str+"\n" {
				t.Errorf("Marshal = %q, %v; want %q", out, err, tt.str+"\n")
			}
		})
	}
}

func TestDurationUnmarshalErrors(t *testing.T) {
	for _, in := range []string{"24", "1 hour", "[1h]", "{a: 1}", "1d"} {
		t.Run(in, func(t *testing.T) {
			var d Duration
			err := yaml.Unmarshal([]byte(in), &d)
			var e *Error
			if !errors.As(err, &e) || e.Line != 1 || !strings.Contains(e.Msg, `"720h"`) {
				t.Errorf("Unmarshal(%q) = %v, want an *Error on line 1 naming the allowed form", in, err)
			}
		})
	}
}
