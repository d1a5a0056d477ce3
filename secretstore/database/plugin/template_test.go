package plugin

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRender(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	v := &values{name: "v-app-x1", password: "Pw-0123456789abcdef", expiration: exp}
	tests := []struct {
		name string
		kind kind
		tmpl string
		want string
		err  error
	}{
		{"all", creation,
			`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`,
			`CREATE ROLE "v-app-x1" WITH LOGIN PASSWORD 'Pw-0123456789abcdef' VALID UNTIL '2030-01-02 02:04:05+0000';`, nil},
		{"spaces and tabs", creation, "{{ name }}|{{\tpassword\t}}|{{  username}}", "v-app-x1|Pw-0123456789abcdef|v-app-x1", nil},
		{"repeated", revocation, "{{name}}{{name}}", "v-app-x1v-app-x1", nil},
		{"no placeholder", revocation, "SELECT 1", "SELECT 1", nil},
		{"not a placeholder", revocation, "{ {name}} {{.name}} {{na-me}} {{1x}} {{name", "{ {name}} {{.name}} {{na-me}} {{1x}} {{name", nil},
		{"brace before", revocation, "{{{name}}}", "{v-app-x1}", nil},
		{"newline inside is not a placeholder", revocation, "{{\nname}}", "{{\nname}}", nil},
		{"json literal", revocation, `SELECT '{"a":{"b":1}}', '{{1,2},{3,4}}'`, `SELECT '{"a":{"b":1}}', '{{1,2},{3,4}}'`, nil},
		{"unknown", creation, "{{nmae}}", "", ErrBadTemplate},
		{"password in revocation", revocation, "{{password}}", "", ErrBadTemplate},
		{"password in renewal", renewal, "{{password}}", "", ErrBadTemplate},
		{"expiration in rotation", rotation, "{{expiration}}", "", ErrBadTemplate},
		{"expiration in renewal", renewal, "'{{expiration}}'", "'2030-01-02 02:04:05+0000'", nil},
		{"case matters", creation, "{{Name}}", "", ErrBadTemplate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := render(tt.tmpl, tt.kind, v)
			if !errors.Is(err, tt.err) {
				t.Fatalf("render(%q) error = %v, want %v", tt.tmpl, err, tt.err)
			}
			if got != tt.want {
				t.Errorf("render(%q) = %q, want %q", tt.tmpl, got, tt.want)
			}
			if cerr := checkTemplate(tt.tmpl, tt.kind); !errors.Is(cerr, tt.err) {
				t.Errorf("checkTemplate(%q) = %v, want %v", tt.tmpl, cerr, tt.err)
			}
		})
	}
}

func TestRenderNoExpiration(t *testing.T) {
	got, err := render("VALID UNTIL '{{expiration}}'", creation, &values{name: "a"})
	if err != nil || got != "VALID UNTIL 'infinity'" {
		t.Fatalf("render = %q, %v; want VALID UNTIL 'infinity'", got, err)
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		ok   bool
	}{
		{"generated", "v-app-abcd1234-1700000000", 63, true},
		{"upper and underscore", "App_User", 63, true},
		{"digit first", "1user", 63, true},
		{"at max", strings.Repeat("a", 32), 32, true},
		{"over max", strings.Repeat("a", 33), 32, false},
		{"empty", "", 63, false},
		{"leading dash", "-a", 63, false},
		{"double dash", "a--b", 63, false},
		{"quote", `a"b`, 63, false},
		{"single quote", "a'b", 63, false},
		{"semicolon", "a;b", 63, false},
		{"space", "a b", 63, false},
		{"dollar", "a$b", 63, false},
		{"brace", "a{b", 63, false},
		{"backslash", `a\b`, 63, false},
		{"dot", "a.b", 63, false},
		{"non-ascii", "é", 63, false},
		{"nul", "a\x00", 63, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validName(tt.in, tt.max)
			if (err == nil) != tt.ok {
				t.Fatalf("validName(%q, %d) = %v, want ok=%v", tt.in, tt.max, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidName) {
				t.Errorf("error %v is not ErrInvalidName", err)
			}
		})
	}
}

func TestValidPassword(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"generated shape", "Ab3-Ab3-Ab3-Ab3-Ab3-Ab3-Ab3-Ab3-", true},
		{"16", strings.Repeat("a", 16), true},
		{"15", strings.Repeat("a", 15), false},
		{"128", strings.Repeat("a", 128), true},
		{"129", strings.Repeat("a", 129), false},
		{"quote", strings.Repeat("a", 16) + "'", false},
		{"backslash", strings.Repeat("a", 16) + `\`, false},
		{"space", strings.Repeat("a", 16) + " ", false},
		{"dollar", strings.Repeat("a", 16) + "$", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validPassword(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("validPassword = %v, want ok=%v", err, tt.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalidPassword) {
					t.Errorf("error %v is not ErrInvalidPassword", err)
				}
				if strings.Contains(err.Error(), tt.in) {
					t.Errorf("error %q quotes the password", err)
				}
			}
		})
	}
}

func TestValidateStatements(t *testing.T) {
	create := []string{`CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}'`}
	tests := []struct {
		name   string
		plugin string
		st     Statements
		err    error
	}{
		{"minimal postgres", Postgres, Statements{Creation: create}, nil},
		{"minimal mysql", MySQL, Statements{Creation: []string{"CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'"}}, nil},
		{"all kinds", Postgres, Statements{
			Creation:   create,
			Revocation: []string{`DROP ROLE "{{name}}"`},
			Renewal:    []string{`ALTER ROLE "{{name}}" VALID UNTIL '{{expiration}}'`},
			Rotation:   []string{`ALTER ROLE "{{name}}" PASSWORD '{{password}}'`},
		}, nil},
		{"unknown plugin", "oracle", Statements{Creation: create}, ErrUnknownPlugin},
		{"no creation", Postgres, Statements{}, ErrNoStatements},
		{"blank creation", Postgres, Statements{Creation: []string{"  \n"}}, ErrNoStatements},
		{"mysql comment only", MySQL, Statements{Creation: []string{"-- nothing\n/* at all */;"}}, ErrNoStatements},
		{"password in revocation", Postgres, Statements{Creation: create, Revocation: []string{"{{password}}"}}, ErrBadTemplate},
		{"unknown in rotation", MySQL, Statements{Creation: create, Rotation: []string{"{{pasword}}"}}, ErrBadTemplate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := ValidateStatements(tt.plugin, tt.st); !errors.Is(err, tt.err) {
				t.Fatalf("ValidateStatements = %v, want %v", err, tt.err)
			}
		})
	}
}
