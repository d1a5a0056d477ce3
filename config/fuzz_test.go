package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

// FuzzParse checks that Parse never panics, that every rejection is made
// of *Error values naming the file, and that every accepted Config
// validates and survives yaml.Marshal and a second Parse unchanged.
func FuzzParse(f *testing.F) {
	f.Add(Example)
	// Strings YAML could take for other types, and quoting in free text.
	f.Add([]byte(`trust_domain: a_b-c.d
data_dir: "null"
log: {level: debug}
listen:
  https: "[::1]:443"
  public_url: https://pki.example.org:8443/base
  server_names: ["fe80::1", x.y, "1.2.3.4"]
seal: {type: dev, dev: {key_file: "~"}}
hsm: {module: "0x10", token_label: "yes", pin_file: "123", root_key_label: "true"}
ca:
  dns_domains: [a, b-c.d]
  root: {common_name: "Sigil: Root #1 'single' \"double\"", ttl: 1h0m30s}
  intermediate: {ttl: 3600000ms, rotate_before: 30m}
  leaf: {default_ttl: 1s, max_ttl: 1m}
  crl: {validity: 2h, refresh: 1h59m59.5s}
`))
	for _, pattern := range []string{"testdata/bad/*.yaml", "testdata/good/*.yaml"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "fuzz.yaml"
		c, err := Parse(name, data)
		if err != nil {
			checkErrors(t, err, name, data)
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a Config that Validate rejects: %v", err)
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("Marshal of an accepted Config: %v", err)
		}
		again, err := Parse(name, out)
		if err != nil {
			t.Fatalf("Parse rejects the marshalled Config: %v\n%s", err, out)
		}
		if diff := cmp.Diff(c, again); diff != "" {
			t.Fatalf("marshal round trip changed the Config (-first +second):\n%s", diff)
		}
	})
}

// checkErrors fails t unless err is made of *Error values naming the file
// and a line within data.
func checkErrors(t *testing.T, err error, name string, data []byte) {
	t.Helper()
	// An upper bound on the lines: the parser also breaks lines at \r,
	// NEL, LS and PS.
	lines := 2
	for _, brk := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
		lines += strings.Count(string(data), brk)
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var ce *Error
		if !errors.As(e, &ce) {
			t.Fatalf("error %v (%T) is not a *Error", e, e)
		}
		if ce.File != name || ce.Msg == "" || ce.Line < 0 || ce.Line > lines {
			t.Fatalf("malformed error %#v for a %d-line input", ce, lines)
		}
	}
}

// FuzzParseAgent checks that ParseAgent never panics, rejects only with
// *Error values naming the file, and that an accepted AgentConfig
// survives yaml.Marshal and a second ParseAgent unchanged.
func FuzzParseAgent(f *testing.F) {
	files, _ := filepath.Glob("testdata/agent/bad/*.yaml")
	for _, file := range append(files, "sigil-agent.example.yaml") {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "agent.yaml"
		c, err := ParseAgent(name, data)
		if err != nil {
			checkErrors(t, err, name, data)
			return
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("Marshal of an accepted AgentConfig: %v", err)
		}
		again, err := ParseAgent(name, out)
		if err != nil {
			t.Fatalf("ParseAgent rejects the marshalled AgentConfig: %v\n%s", err, out)
		}
		if diff := cmp.Diff(c, again); diff != "" {
			t.Fatalf("marshal round trip changed the AgentConfig (-first +second):\n%s", diff)
		}
	})
}
