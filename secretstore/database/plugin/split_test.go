package plugin

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSplitSQL(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // mysqlStatements(in)
	}{
		{"one", "SELECT 1", []string{"SELECT 1"}},
		{"two", "CREATE USER 'a'@'%'; GRANT SELECT ON db.* TO 'a'@'%';", []string{"CREATE USER 'a'@'%'", "GRANT SELECT ON db.* TO 'a'@'%'"}},
		{"empty", "", nil},
		{"only separators", " ; ;\n;", nil},
		{"single quoted", "SELECT 'a;b'; SELECT 2", []string{"SELECT 'a;b'", "SELECT 2"}},
		{"double quoted", `SELECT "a;b"; SELECT 2`, []string{`SELECT "a;b"`, "SELECT 2"}},
		{"backtick", "SELECT `a;b`; SELECT 2", []string{"SELECT `a;b`", "SELECT 2"}},
		{"doubled quote", "SELECT 'it''s;'; SELECT 2", []string{"SELECT 'it''s;'", "SELECT 2"}},
		{"backslash quote", `SELECT 'it\';'; SELECT 2`, []string{`SELECT 'it\';'`, "SELECT 2"}},
		{"backslash backslash", `SELECT 'a\\'; SELECT 2`, []string{`SELECT 'a\\'`, "SELECT 2"}},
		{"backtick no escapes", "SELECT `a\\`; SELECT 2", []string{"SELECT `a\\`", "SELECT 2"}},
		{"doubled backtick", "SELECT `a``;`; SELECT 2", []string{"SELECT `a``;`", "SELECT 2"}},
		{"other quotes inside", `SELECT '"; ` + "`" + `'; SELECT 2`, []string{`SELECT '"; ` + "`" + `'`, "SELECT 2"}},
		{"dash comment", "SELECT 1 -- a; b\n; SELECT 2", []string{"SELECT 1 -- a; b", "SELECT 2"}},
		{"dash without space is not a comment", "SELECT 1--1; SELECT 2", []string{"SELECT 1--1", "SELECT 2"}},
		{"hash comment", "SELECT 1 # a; b\n; SELECT 2", []string{"SELECT 1 # a; b", "SELECT 2"}},
		{"block comment", "SELECT /* a; b */ 1; SELECT 2", []string{"SELECT /* a; b */ 1", "SELECT 2"}},
		{"comment-only part dropped", "SELECT 1; -- done\n", []string{"SELECT 1"}},
		{"block-only part dropped", "/* x; */; SELECT 1", []string{"SELECT 1"}},
		{"unterminated quote", "SELECT 'a; b", []string{"SELECT 'a; b"}},
		{"unterminated comment", "SELECT 1 /* a; b", []string{"SELECT 1 /* a; b"}},
		{"quote in comment", "-- it's\nSELECT 1; SELECT 2", []string{"-- it's\nSELECT 1", "SELECT 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := splitSQL(tt.in)
			if got := strings.Join(raw, ";"); got != tt.in {
				t.Errorf("joining splitSQL(%q) = %q, want the input", tt.in, got)
			}
			if diff := cmp.Diff(tt.want, mysqlStatements(tt.in)); diff != "" {
				t.Errorf("mysqlStatements(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}
