package plugin

import "strings"

// splitSQL splits MySQL text on the ';' that lie outside quoted strings
// ('...', "..."), quoted identifiers (`...`) and comments (# and "-- " to
// the end of the line, /* ... */). Inside '...' and "..." a backslash
// escapes the next character; a doubled quote needs no special case, since
// it closes and reopens the string. The separators are dropped and nothing
// else is: strings.Join(splitSQL(s), ";") == s. An unterminated quote or
// comment runs to the end of s.
func splitSQL(s string) []string {
	var parts []string
	start := 0
	scanSQL(s, func(i int) { parts = append(parts, s[start:i]); start = i + 1 }, nil)
	return append(parts, s[start:])
}

// mysqlStatements returns the statements of s to run one by one: the parts
// of splitSQL(s), trimmed, leaving out those that are only whitespace and
// comments (which MySQL refuses as "Query was empty").
func mysqlStatements(s string) []string {
	var out []string
	for _, p := range splitSQL(s) {
		if hasCode(p) {
			out = append(out, strings.Trim(p, sqlSpace))
		}
	}
	return out
}

// sqlSpace is the whitespace scanSQL skips: ASCII only, as MySQL's.
const sqlSpace = " \t\n\r\f\v"

// hasCode reports whether s holds anything but whitespace and comments.
func hasCode(s string) bool {
	code := false
	scanSQL(s, nil, func() { code = true })
	return code
}

// scanSQL walks s, calling sep(i) for each separating ';' at s[i] and
// code() for each byte that is neither whitespace nor part of a comment.
// Either callback may be nil.
func scanSQL(s string, sep func(int), code func()) {
	const (
		normal = iota
		quoted // inside '...', "..." or `...`; q is the quote
		line   // inside # or -- comment
		block  // inside /* */ comment
	)
	state := normal
	var q byte
	mark := func() {
		if code != nil {
			code()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch state {
		case normal:
			switch {
			case c == ';':
				if sep != nil {
					sep(i)
				}
			case c == '\'' || c == '"' || c == '`':
				state, q = quoted, c
				mark()
			case c == '#':
				state = line
			case c == '-' && i+1 < len(s) && s[i+1] == '-' && (i+2 == len(s) || s[i+2] <= ' '):
				state = line
				i++
			case c == '/' && i+1 < len(s) && s[i+1] == '*':
				state = block
				i++
			case strings.IndexByte(sqlSpace, c) >= 0:
			default:
				mark()
			}
		case quoted:
			mark()
			switch {
			case c == '\\' && q != '`':
				i++ // the escaped byte, whatever it is
			case c == q:
				state = normal
			}
		case line:
			if c == '\n' {
				state = normal
			}
		case block:
			if c == '*' && i+1 < len(s) && s[i+1] == '/' {
				state = normal
				i++
			}
		}
	}
}
