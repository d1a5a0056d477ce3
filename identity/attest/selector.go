package attest

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"
)

// TypeUnix is the selector type produced by this package.
const TypeUnix = "unix"

// The value kinds of the unix selector type.
const (
	KindUID    = "uid"
	KindGID    = "gid"
	KindUser   = "user"
	KindGroup  = "group"
	KindPath   = "path"
	KindSHA256 = "sha256"
)

// maxNameLen bounds user and group names (LOGIN_NAME_MAX on Linux).
const maxNameLen = 256

// Selector is one attested fact about a workload, a "type:value" pair such as
// unix:uid:1000 (Type "unix", Value "uid:1000").
type Selector struct {
	Type  string
	Value string
}

// String returns the selector in its "type:value" form; for any selector
// returned by ParseSelector it is the string that was parsed.
func (s Selector) String() string {
	return s.Type + ":" + s.Value
}

func unixSelector(kind, v string) Selector {
	return Selector{Type: TypeUnix, Value: kind + ":" + v}
}

// ParseSelector parses a "type:value" selector strictly. The only type is
// "unix", with the value kinds uid and gid (decimal, no sign, no leading
// zero, at most 2^32-1), user and group (POSIX portable names: letters,
// digits, '.', '_' and '-', not starting with '-'), path (absolute, clean,
// valid UTF-8, no NUL) and sha256 (64 lowercase hexadecimal digits).
// The error says what is wrong.
func ParseSelector(s string) (Selector, error) {
	typ, value, ok := strings.Cut(s, ":")
	if !ok {
		return Selector{}, fmt.Errorf("parsing selector %q: missing ':' between type and value", s)
	}
	if typ != TypeUnix {
		return Selector{}, fmt.Errorf("parsing selector %q: unknown type %q (want %q)", s, typ, TypeUnix)
	}
	kind, v, ok := strings.Cut(value, ":")
	if !ok {
		return Selector{}, fmt.Errorf("parsing selector %q: missing ':' between kind and value", s)
	}
	var err error
	switch kind {
	case KindUID, KindGID:
		err = checkID(v)
	case KindUser, KindGroup:
		err = checkName(v)
	case KindPath:
		err = checkPath(v)
	case KindSHA256:
		err = checkSHA256(v)
	default:
		err = fmt.Errorf("unknown unix kind %q (want uid, gid, user, group, path or sha256)", kind)
	}
	if err != nil {
		return Selector{}, fmt.Errorf("parsing selector %q: %w", s, err)
	}
	return Selector{Type: typ, Value: value}, nil
}

func checkID(v string) error {
	if v == "" {
		return fmt.Errorf("empty id")
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return fmt.Errorf("id %q is not a decimal number", v)
		}
	}
	if len(v) > 1 && v[0] == '0' {
		return fmt.Errorf("id %q has a leading zero", v)
	}
	if _, err := strconv.ParseUint(v, 10, 32); err != nil {
		return fmt.Errorf("id %q does not fit in 32 bits", v)
	}
	return nil
}

// checkName enforces the POSIX portable user name rules
// (Base Definitions 3.437 and the Portable Filename Character Set).
func checkName(v string) error {
	if v == "" {
		return fmt.Errorf("empty name")
	}
	if len(v) > maxNameLen {
		return fmt.Errorf("name is %d bytes long, more than %d", len(v), maxNameLen)
	}
	if v[0] == '-' {
		return fmt.Errorf("name %q starts with '-'", v)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("name %q has character %q outside the POSIX portable set [A-Za-z0-9._-]", v, c)
		}
	}
	return nil
}

func checkPath(v string) error {
	if v == "" {
		return fmt.Errorf("empty path")
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("path is not valid UTF-8")
	}
	if strings.IndexByte(v, 0) >= 0 {
		return fmt.Errorf("path contains a NUL byte")
	}
	if !filepath.IsAbs(v) {
		return fmt.Errorf("path %q is not absolute", v)
	}
	if c := filepath.Clean(v); c != v {
		return fmt.Errorf("path %q is not clean (want %q)", v, c)
	}
	return nil
}

func checkSHA256(v string) error {
	if len(v) != 64 {
		return fmt.Errorf("sha256 has %d characters, want 64", len(v))
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("sha256 has character %q, want lowercase hexadecimal", c)
		}
	}
	return nil
}
