package plugin

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// DefaultUsernameTemplate is GenerateUsername's template when none is
// given. The role name is cut to 8 bytes so that the random part and the
// time survive MySQL's 32-byte limit.
const DefaultUsernameTemplate = `v-{{.RoleName | truncate 8}}-{{random 8}}-{{unix_time}}`

// UsernameData is what a username template sees and draws on.
type UsernameData struct {
	// RoleName and DisplayName are {{.RoleName}} and {{.DisplayName}}.
	RoleName    string
	DisplayName string
	// Time is what {{unix_time}} renders. Default (zero): time.Now().
	Time time.Time
	// Rand is where {{random N}} draws from. Default (nil): crypto/rand.
	Rand io.Reader
}

// maxRandom bounds {{random N}}.
const maxRandom = 64

// GenerateUsername makes a user name for plugin (Postgres or MySQL) from
// tmpl, a text/template (DefaultUsernameTemplate if empty) over data, with
// the functions
//
//	random N      N (1 to 64) random characters of [a-z0-9]
//	unix_time     the time in seconds since 1970
//	truncate N S  the first N bytes of S (pipeline: {{.RoleName | truncate 8}})
//
// The result is made safe for statements: lowercased, every run of
// characters outside [a-z0-9_] turned into one '-', leading and trailing
// '-' dropped, then cut to the plugin's limit (63 bytes for PostgreSQL, 32
// for MySQL), cutting from the end. It always passes the checks that
// CreateUser makes on names. An empty result is an error.
func GenerateUsername(plugin, tmpl string, data UsernameData) (string, error) {
	p, err := lookup(plugin)
	if err != nil {
		return "", err
	}
	if tmpl == "" {
		tmpl = DefaultUsernameTemplate
	}
	r := data.Rand
	if r == nil {
		r = rand.Reader
	}
	now := data.Time
	if now.IsZero() {
		now = time.Now()
	}
	funcs := template.FuncMap{
		"random": func(n int) (string, error) {
			if n < 1 || n > maxRandom {
				return "", fmt.Errorf("random %d: want 1 to %d", n, maxRandom)
			}
			return randomString(r, n, lowerDigits)
		},
		"unix_time": func() string { return strconv.FormatInt(now.Unix(), 10) },
		"truncate": func(n int, s string) (string, error) {
			if n < 0 {
				return "", fmt.Errorf("truncate %d: negative", n)
			}
			if len(s) > n {
				s = s[:n]
			}
			return s, nil
		},
	}
	t, err := template.New("username").Funcs(funcs).Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return "", fmt.Errorf("parsing username template: %w", err)
	}
	var b strings.Builder
	view := struct{ RoleName, DisplayName string }{data.RoleName, data.DisplayName}
	if err := t.Execute(&b, view); err != nil {
		return "", fmt.Errorf("running username template: %w", err)
	}
	name := sanitizeName(b.String(), p.maxName)
	if name == "" {
		return "", fmt.Errorf("%w: username template gave nothing usable", ErrInvalidName)
	}
	return name, nil
}

// sanitizeName lowercases s, turns each run of bytes outside [a-z0-9_]
// into one '-', trims '-' at both ends and cuts the result to max bytes.
func sanitizeName(s string, max int) string {
	s = strings.ToLower(s)
	b := make([]byte, 0, len(s))
	dash := true // at the start, a dash would be leading: drop it
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' {
			b = append(b, c)
			dash = false
			continue
		}
		if !dash {
			b = append(b, '-')
			dash = true
		}
	}
	if len(b) > max {
		b = b[:max]
	}
	return strings.TrimRight(string(b), "-")
}

// PasswordLen is the length of GeneratePassword's passwords.
const PasswordLen = 32

const (
	lowerDigits   = "abcdefghijklmnopqrstuvwxyz0123456789"
	passwordChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"
)

// GeneratePassword returns a password of PasswordLen characters drawn
// uniformly from crypto/rand over letters, digits and '-', with at least
// one upper-case letter, one lower-case letter and one digit, and not
// starting with '-'. Its characters need no escaping inside a quoted SQL
// literal.
func GeneratePassword() (string, error) {
	return generatePassword(rand.Reader)
}

func generatePassword(r io.Reader) (string, error) {
	for range 100 {
		pw, err := randomString(r, PasswordLen, passwordChars)
		if err != nil {
			return "", err
		}
		if pw[0] != '-' && strings.ContainsAny(pw, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") &&
			strings.ContainsAny(pw, "abcdefghijklmnopqrstuvwxyz") &&
			strings.ContainsAny(pw, "0123456789") {
			return pw, nil
		}
	}
	return "", errors.New("generating a password: the random source gave no acceptable password in 100 tries")
}

// randomString draws n characters uniformly from alphabet (at most 256
// characters) by rejection sampling bytes from r.
func randomString(r io.Reader, n int, alphabet string) (string, error) {
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/2+8)
	for len(out) < n {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", fmt.Errorf("reading randomness: %w", err)
		}
		for _, c := range buf {
			if int(c) < limit {
				out = append(out, alphabet[int(c)%len(alphabet)])
				if len(out) == n {
					break
				}
			}
		}
	}
	return string(out), nil
}
