package plugin

import (
	"fmt"
	"strings"
	"time"
)

// ExpirationLayout is how {{expiration}} is rendered, always in UTC.
const ExpirationLayout = "2006-01-02 15:04:05-0700"

// Limits on substituted values.
const (
	minPasswordLen = 16
	maxPasswordLen = 128
)

// kind is a kind of statement; it decides which placeholders have values.
type kind int

const (
	creation kind = iota
	revocation
	renewal
	rotation
)

func (k kind) String() string {
	return [...]string{"creation", "revocation", "renewal", "rotation"}[k]
}

// allows reports whether placeholder p has a value in statements of kind k.
func (k kind) allows(p string) bool {
	switch p {
	case "name", "username":
		return true
	case "password":
		return k == creation || k == rotation
	case "expiration":
		return k == creation || k == renewal
	}
	return false
}

// values are what placeholders are replaced with; a field is used only
// where its kind allows it.
type values struct {
	name       string
	password   string
	expiration time.Time
}

func formatExpiration(t time.Time) string {
	if t.IsZero() {
		return "infinity"
	}
	return t.UTC().Format(ExpirationLayout)
}

// placeholderAt reports whether a placeholder starts at s[i]: "{{", optional
// spaces or tabs, an identifier, optional spaces or tabs, "}}". It returns
// the identifier and the index just past the closing braces.
func placeholderAt(s string, i int) (ident string, end int, ok bool) {
	if !strings.HasPrefix(s[i:], "{{") {
		return "", 0, false
	}
	j := i + 2
	for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
		j++
	}
	start := j
	for j < len(s) && isIdentByte(s[j], j == start) {
		j++
	}
	if j == start {
		return "", 0, false
	}
	ident = s[start:j]
	for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
		j++
	}
	if !strings.HasPrefix(s[j:], "}}") {
		return "", 0, false
	}
	return ident, j + 2, true
}

func isIdentByte(c byte, first bool) bool {
	switch {
	case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		return true
	case '0' <= c && c <= '9':
		return !first
	}
	return false
}

// checkTemplate reports the first placeholder of tmpl that is unknown or
// has no value in statements of kind k.
func checkTemplate(tmpl string, k kind) error {
	_, err := render(tmpl, k, nil)
	return err
}

// render replaces tmpl's placeholders with v's values. With v nil it only
// checks tmpl. The values must have been validated (validName,
// validPassword): render does not quote them.
func render(tmpl string, k kind, v *values) (string, error) {
	var b strings.Builder
	if v != nil {
		b.Grow(len(tmpl) + 64)
	}
	last := 0
	for i := 0; i < len(tmpl); i++ {
		if tmpl[i] != '{' {
			continue
		}
		ident, end, ok := placeholderAt(tmpl, i)
		if !ok {
			continue
		}
		switch ident {
		case "name", "username", "password", "expiration":
		default:
			return "", fmt.Errorf("%w: unknown placeholder {{%s}}", ErrBadTemplate, ident)
		}
		if !k.allows(ident) {
			return "", fmt.Errorf("%w: {{%s}} has no value in %s statements", ErrBadTemplate, ident, k)
		}
		if v != nil {
			b.WriteString(tmpl[last:i])
			switch ident {
			case "name", "username":
				b.WriteString(v.name)
			case "password":
				b.WriteString(v.password)
			case "expiration":
				b.WriteString(formatExpiration(v.expiration))
			}
		}
		last = end
		i = end - 1
	}
	if v == nil {
		return "", nil
	}
	b.WriteString(tmpl[last:])
	return b.String(), nil
}

// validName checks a user name against the rules that make it safe to
// substitute inside a quoted identifier or literal: 1 to max bytes of
// [A-Za-z0-9_-], not starting with '-' and without "--" (which would start
// a comment should a template leave the name unquoted).
func validName(name string, max int) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(name) > max {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidName, len(name), max)
	}
	if name[0] == '-' || strings.Contains(name, "--") {
		return fmt.Errorf("%w: %q starts with '-' or contains \"--\"", ErrInvalidName, name)
	}
	for i := 0; i < len(name); i++ {
		if !safeByte(name[i]) {
			return fmt.Errorf("%w: %q has a character outside [A-Za-z0-9_-]", ErrInvalidName, name)
		}
	}
	return nil
}

// validPassword checks a password: 16 to 128 bytes of [A-Za-z0-9_-]. The
// error never quotes the password.
func validPassword(pw string) error {
	if len(pw) < minPasswordLen || len(pw) > maxPasswordLen {
		return fmt.Errorf("%w: length %d, want %d to %d", ErrInvalidPassword, len(pw), minPasswordLen, maxPasswordLen)
	}
	for i := 0; i < len(pw); i++ {
		if !safeByte(pw[i]) {
			return fmt.Errorf("%w: a character outside [A-Za-z0-9_-] at offset %d", ErrInvalidPassword, i)
		}
	}
	return nil
}

func safeByte(c byte) bool {
	return c == '_' || c == '-' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
