package policy

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxPathLen is the longest secret path, and the longest path pattern, in
// bytes.
const MaxPathLen = 512

// maxIDLen bounds a SPIFFE ID pattern, as the SPIFFE ID specification
// bounds a SPIFFE ID.
const maxIDLen = 2048

// maxNames bounds the named segments of one SPIFFE ID pattern.
const maxNames = 8

// maxNameLen bounds the name inside {name}.
const maxNameLen = 32

// ErrBadPath is wrapped by every error of CleanPath, and by Decision.Err
// when the requested path was refused.
var ErrBadPath = errors.New("bad secret path")

// The reasons a path is not clean. They are static, so that Decide can
// check a path without allocating.
var (
	errPathEmpty      = errors.New("empty")
	errPathTooLong    = fmt.Errorf("longer than %d bytes", MaxPathLen)
	errLeadingSlash   = errors.New("starts with '/'")
	errTrailingSlash  = errors.New("ends with '/'")
	errEmptySegment   = errors.New(`has an empty segment ("//")`)
	errDotSegment     = errors.New(`has a "." or ".." segment`)
	errInvalidUTF8    = errors.New("is not valid UTF-8")
	errNotPrintable   = errors.New("has a control or non-printable character")
	errReservedInPath = errors.New("has '*', '{' or '}', which are reserved for patterns")
)

// CleanPath returns p unchanged if it is a clean secret path, and an error
// wrapping ErrBadPath that says what is wrong otherwise. A clean path is
// 1 to MaxPathLen bytes of valid UTF-8, made of non-empty segments
// separated by single slashes, with no leading or trailing slash, no "."
// or ".." segment, only printable characters (unicode.IsPrint: no control,
// format or non-ASCII space characters), and none of '*', '{' and '}', so
// that every clean path can be written as a literal path pattern.
//
// CleanPath never rewrites a path: callers refuse what it refuses, so the
// path a decision is made on is the path that is used.
func CleanPath(p string) (string, error) {
	if err := checkPath(p); err != nil {
		return "", fmt.Errorf("%w %s: %w", ErrBadPath, quote(p), err)
	}
	return p, nil
}

// checkPath is CleanPath without allocating: it returns one of the static
// reasons above.
func checkPath(p string) error {
	switch {
	case p == "":
		return errPathEmpty
	case len(p) > MaxPathLen:
		return errPathTooLong
	case p[0] == '/':
		return errLeadingSlash
	case p[len(p)-1] == '/':
		return errTrailingSlash
	}
	for p != "" {
		var seg string
		seg, p = nextSegment(p)
		if err := checkSegment(seg); err != nil {
			return err
		}
	}
	return nil
}

// nextSegment splits rest, a path without a leading slash, into its first
// segment and what follows the slash after it.
func nextSegment(rest string) (seg, after string) {
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[:i], rest[i+1:]
	}
	return rest, ""
}

// checkSegment checks one segment of a clean path.
func checkSegment(seg string) error {
	switch seg {
	case "":
		return errEmptySegment
	case ".", "..":
		return errDotSegment
	}
	for i := 0; i < len(seg); {
		c := seg[i]
		if c < utf8.RuneSelf {
			switch {
			case c < 0x20 || c == 0x7f:
				return errNotPrintable
			case c == '*' || c == '{' || c == '}':
				return errReservedInPath
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(seg[i:])
		if r == utf8.RuneError && size == 1 {
			return errInvalidUTF8
		}
		if !unicode.IsPrint(r) {
			return errNotPrintable
		}
		i += size
	}
	return nil
}

// segment is one compiled segment of a pattern.
type segment struct {
	// lit is the literal the segment must equal, when name < 0.
	lit string
	// name is the index of the named segment in the ID pattern's names,
	// or -1 for a literal.
	name int
}

// idPattern is a compiled SPIFFE ID pattern.
type idPattern struct {
	src string
	// td is the trust domain name, e.g. "example.org".
	td   string
	segs []segment
	// tail is set when the pattern ends in "/*".
	tail bool
	// names are the names the pattern binds, in order.
	names []string
}

// pathPattern is a compiled path pattern.
type pathPattern struct {
	src  string
	segs []segment
	tail bool
	// named is set when some segment is named, so the pattern differs
	// from its substitution.
	named bool
}

// bindings holds the values of a caller's named segments, by index. The
// values are substrings of the caller's ID.
type bindings [maxNames]string

// compileID compiles a SPIFFE ID pattern; the error says what is wrong.
func compileID(s string) (*idPattern, error) {
	if len(s) > maxIDLen {
		return nil, fmt.Errorf("longer than %d bytes", maxIDLen)
	}
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return nil, errors.New("does not start with spiffe://")
	}
	tdName, path, hasPath := strings.Cut(rest, "/")
	switch {
	case tdName == "":
		return nil, errors.New("the trust domain is missing")
	case strings.ContainsAny(tdName, "*{}"):
		return nil, fmt.Errorf("trust domain %s: the trust domain is always literal, without '*' or {name}", quote(tdName))
	}
	td, err := spiffeid.TrustDomainFromString(tdName)
	if err != nil {
		return nil, fmt.Errorf("trust domain %s: %v", quote(tdName), err)
	}
	p := &idPattern{src: s, td: td.Name()}
	if !hasPath {
		return p, nil
	}
	if path == "" || path[len(path)-1] == '/' {
		return nil, errors.New("ends with '/'")
	}
	segs := strings.Split(path, "/")
	for i, seg := range segs {
		last := i == len(segs)-1
		if seg == "*" {
			if !last {
				return nil, errors.New(`"*" is allowed only as the whole last segment`)
			}
			p.tail = true
			break
		}
		if name, ok, err := namedSegment(seg); err != nil {
			return nil, err
		} else if ok {
			for _, n := range p.names {
				if n == name {
					return nil, fmt.Errorf("{%s} is bound twice", name)
				}
			}
			if len(p.names) == maxNames {
				return nil, fmt.Errorf("more than %d named segments", maxNames)
			}
			p.segs = append(p.segs, segment{name: len(p.names)})
			p.names = append(p.names, name)
			continue
		}
		if err := spiffeid.ValidatePathSegment(seg); err != nil {
			return nil, fmt.Errorf("segment %s: %v", quote(seg), err)
		}
		p.segs = append(p.segs, segment{lit: seg, name: -1})
	}
	return p, nil
}

// namedSegment reports whether seg is a named segment {name}, and returns
// its name. It refuses a segment that uses '*', '{' or '}' any other way.
func namedSegment(seg string) (name string, ok bool, err error) {
	if strings.Contains(seg, "*") {
		return "", false, fmt.Errorf(`segment %s: "*" is allowed only as the whole last segment`, quote(seg))
	}
	if !strings.ContainsAny(seg, "{}") {
		return "", false, nil
	}
	name, ok = strings.CutPrefix(seg, "{")
	if ok {
		name, ok = strings.CutSuffix(name, "}")
	}
	if !ok || strings.ContainsAny(name, "{}") {
		return "", false, fmt.Errorf("segment %s: a named segment must be a whole segment, like {name}", quote(seg))
	}
	if !validSegmentName(name) {
		return "", false, fmt.Errorf("segment %s: a name must be a lowercase letter followed by at most %d lowercase letters, digits or '_'", quote(seg), maxNameLen-1)
	}
	return name, true, nil
}

func validSegmentName(n string) bool {
	if n == "" || len(n) > maxNameLen || n[0] < 'a' || n[0] > 'z' {
		return false
	}
	for i := 1; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// compilePath compiles a path pattern whose named segments must be among
// names, the names bound by the rule's SPIFFE ID pattern. If names is not
// known (the ID pattern did not compile), pass known false: named segments
// are then only checked for syntax.
func compilePath(s string, names []string, known bool) (*pathPattern, error) {
	switch {
	case s == "":
		return nil, errPathEmpty
	case len(s) > MaxPathLen:
		return nil, errPathTooLong
	case s[0] == '/':
		return nil, errLeadingSlash
	case s[len(s)-1] == '/':
		return nil, errTrailingSlash
	}
	p := &pathPattern{src: s}
	segs := strings.Split(s, "/")
	for i, seg := range segs {
		last := i == len(segs)-1
		if seg == "*" {
			switch {
			case i == 0:
				return nil, errors.New("the first segment names the mount and must be literal")
			case !last:
				return nil, errors.New(`"*" is allowed only as the whole last segment`)
			}
			p.tail = true
			break
		}
		name, ok, err := namedSegment(seg)
		if err != nil {
			return nil, err
		}
		if ok {
			if i == 0 {
				return nil, errors.New("the first segment names the mount and must be literal")
			}
			idx := -1
			for j, n := range names {
				if n == name {
					idx = j
				}
			}
			if idx < 0 && known {
				if len(names) == 0 {
					return nil, fmt.Errorf("{%s} is not bound: the rule's spiffe_id binds no names", name)
				}
				return nil, fmt.Errorf("{%s} is not bound by the rule's spiffe_id, which binds {%s}", name, strings.Join(names, "}, {"))
			}
			p.segs = append(p.segs, segment{name: idx})
			p.named = true
			continue
		}
		if err := checkSegment(seg); err != nil {
			if err == errEmptySegment || err == errDotSegment {
				return nil, err
			}
			return nil, fmt.Errorf("segment %s %w", quote(seg), err)
		}
		p.segs = append(p.segs, segment{lit: seg, name: -1})
	}
	return p, nil
}

// match reports whether the path of a valid SPIFFE ID ("" for the trust
// domain's own ID, else "/a/b") matches p, whose trust domain the caller
// has already compared. It fills b with the named segments' values.
func (p *idPattern) match(idPath string, b *bindings) bool {
	rest := strings.TrimPrefix(idPath, "/")
	for _, s := range p.segs {
		if rest == "" {
			return false
		}
		var seg string
		seg, rest = nextSegment(rest)
		if s.name < 0 {
			if seg != s.lit {
				return false
			}
		} else {
			b[s.name] = seg
		}
	}
	if p.tail {
		return rest != ""
	}
	return rest == ""
}

// match reports whether the clean path matches p once p's named segments
// take their values from b. For a list request, a pattern ending in "/*"
// also matches its own prefix.
func (p *pathPattern) match(path string, b *bindings, list bool) bool {
	rest := path
	for _, s := range p.segs {
		if rest == "" {
			return false
		}
		var seg string
		seg, rest = nextSegment(rest)
		want := s.lit
		if s.name >= 0 {
			want = b[s.name]
		}
		if seg != want {
			return false
		}
	}
	if p.tail {
		return rest != "" || list
	}
	return rest == ""
}

// substitute returns p with its named segments replaced by their values.
func (p *pathPattern) substitute(b *bindings) string {
	if !p.named {
		return p.src
	}
	var sb strings.Builder
	for i, s := range p.segs {
		if i > 0 {
			sb.WriteByte('/')
		}
		if s.name >= 0 {
			sb.WriteString(b[s.name])
		} else {
			sb.WriteString(s.lit)
		}
	}
	if p.tail {
		sb.WriteString("/*")
	}
	return sb.String()
}

// quote quotes s for a message, shortened to a readable length.
func quote(s string) string {
	const max = 96
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return fmt.Sprintf("%q...", s[:cut])
	}
	return fmt.Sprintf("%q", s)
}
