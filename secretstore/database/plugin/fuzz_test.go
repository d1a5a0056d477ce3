package plugin

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

// placeholderRE is an independent statement of the placeholder syntax,
// the oracle for FuzzRender.
var placeholderRE = regexp.MustCompile(`\{\{[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*\}\}`)

var knownPlaceholder = regexp.MustCompile(`\{\{[ \t]*(name|username|password|expiration)[ \t]*\}\}`)

func FuzzRender(f *testing.F) {
	for _, s := range []string{
		`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`,
		"{{ name }}{{\tusername}}{{{name}}}", "{{{{name}}}}", "{{name", "}}{{", "{{nmae}}", "{{ 1 }}",
		"CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT ON db.* TO '{{name}}'@'%';",
	} {
		f.Add(s, uint8(0), "role", int64(1700000000))
	}
	f.Fuzz(func(t *testing.T, tmpl string, k uint8, nameTail string, unix int64) {
		kd := kind(k % 4)
		// The name always holds a '-', which no placeholder can: so a
		// placeholder in the output can only come from the template.
		v := &values{name: "v-" + nameTail, password: "Pw-0123456789abcdef", expiration: time.Unix(unix%(1<<40), 0)}
		if validName(v.name, 63) != nil {
			v.name = "v-x"
		}
		out, err := render(tmpl, kd, v)
		if checkErr := checkTemplate(tmpl, kd); (checkErr == nil) != (err == nil) {
			t.Fatalf("render and checkTemplate disagree: %v vs %v", err, checkErr)
		}

		// Oracle: the placeholders the regexp finds, left to right.
		matches := placeholderRE.FindAllStringSubmatchIndex(tmpl, -1)
		var want strings.Builder
		last := 0
		var wantErr bool
		for _, m := range matches {
			ident := tmpl[m[2]:m[3]]
			var val string
			switch ident {
			case "name", "username":
				val = v.name
			case "password":
				val = v.password
			case "expiration":
				val = formatExpiration(v.expiration)
			default:
				wantErr = true
			}
			if !kd.allows(ident) {
				wantErr = true
			}
			want.WriteString(tmpl[last:m[0]])
			want.WriteString(val)
			last = m[1]
		}
		want.WriteString(tmpl[last:])
		if wantErr {
			if !errors.Is(err, ErrBadTemplate) {
				t.Fatalf("render(%q, %s) = %q, %v; want ErrBadTemplate", tmpl, kd, out, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("render(%q, %s): %v", tmpl, kd, err)
		}
		if out != want.String() {
			t.Fatalf("render(%q, %s) = %q, want %q", tmpl, kd, out, want.String())
		}
		if loc := knownPlaceholder.FindStringIndex(out); loc != nil {
			t.Fatalf("render(%q) = %q still holds the placeholder %q", tmpl, out, out[loc[0]:loc[1]])
		}
		if len(matches) == 0 && out != tmpl {
			t.Fatalf("render changed a template without placeholders: %q -> %q", tmpl, out)
		}
	})
}

func FuzzSplitSQL(f *testing.F) {
	for _, s := range []string{
		"CREATE USER 'a'@'%'; GRANT SELECT ON db.* TO 'a'@'%';",
		`SELECT 'it''s;'; SELECT "a\";b"; SELECT ` + "`x``;`", "-- c;\n#d;\n/* e; */ SELECT 1;",
		"SELECT 1--1;", "'unterminated;", "/* unterminated;", `'\`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		raw := splitSQL(s)
		if got := strings.Join(raw, ";"); got != s {
			t.Fatalf("join(splitSQL(%q)) = %q", s, got)
		}
		for _, p := range raw {
			// A part starts outside any quote or comment, so it holds no
			// separator of its own.
			if again := splitSQL(p); len(again) != 1 || again[0] != p {
				t.Fatalf("part %q of %q splits again into %q", p, s, again)
			}
		}
		// The statements to run are the parts with code, trimmed, in order.
		stmts := mysqlStatements(s)
		j := 0
		for _, p := range raw {
			if !hasCode(p) {
				continue
			}
			if j >= len(stmts) || stmts[j] != strings.Trim(p, sqlSpace) {
				t.Fatalf("mysqlStatements(%q) = %q, does not follow the parts %q", s, stmts, raw)
			}
			j++
		}
		if j != len(stmts) {
			t.Fatalf("mysqlStatements(%q) = %q has extra statements", s, stmts)
		}
		for _, st := range stmts {
			if strings.Trim(st, sqlSpace) == "" || !hasCode(st) {
				t.Fatalf("mysqlStatements(%q) gave a blank statement", s)
			}
		}
	})
}

// FuzzGenerateUsername: whatever the role and display names, a generated
// name passes the checks that keep statements safe.
func FuzzGenerateUsername(f *testing.F) {
	f.Add("readonly", `x"; DROP ROLE postgres; --`, true)
	f.Add("", "", false)
	f.Fuzz(func(t *testing.T, role, display string, mysqlPlugin bool) {
		plugin := Postgres
		if mysqlPlugin {
			plugin = MySQL
		}
		name, err := GenerateUsername(plugin, "{{.RoleName}}-{{.DisplayName}}", UsernameData{RoleName: role, DisplayName: display, Rand: &counting{}})
		if err != nil {
			if !errors.Is(err, ErrInvalidName) {
				t.Fatalf("GenerateUsername: %v", err)
			}
			return
		}
		p, _ := lookup(plugin)
		if err := validName(name, p.maxName); err != nil {
			t.Fatalf("GenerateUsername(%q, %q) = %q: %v", role, display, name, err)
		}
	})
}
