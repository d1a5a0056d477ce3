package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Capability is what a caller asks to do with a secret path, or, in a
// rule, Deny.
type Capability string

// The capabilities. Deny appears only in rules, alone: it denies every
// other capability on the rule's paths.
const (
	Read   Capability = "read"
	Create Capability = "create"
	Update Capability = "update"
	Delete Capability = "delete"
	List   Capability = "list"
	Deny   Capability = "deny"
)

// capBits is a set of capabilities, one bit each.
type capBits uint8

func (c Capability) bit() capBits {
	switch c {
	case Read:
		return 1 << 0
	case Create:
		return 1 << 1
	case Update:
		return 1 << 2
	case Delete:
		return 1 << 3
	case List:
		return 1 << 4
	case Deny:
		return 1 << 5
	}
	return 0
}

// grantable reports whether c can be asked for and granted: any
// capability but Deny.
func (c Capability) grantable() bool { return c != Deny && c.bit() != 0 }

// ParseCapability returns s as a Capability if it is one of read, create,
// update, delete, list and deny (lowercase, exactly), and an error
// otherwise.
func ParseCapability(s string) (Capability, error) {
	if c := Capability(s); c.bit() != 0 {
		return c, nil
	}
	return "", fmt.Errorf("unknown capability %s (want read, create, update, delete, list or deny)", quote(s))
}

// Limits on a policy document, so that a hostile document costs bounded
// work and memory.
const (
	// MaxDocumentSize is the largest document Parse reads, in bytes.
	MaxDocumentSize = 1 << 20
	// MaxRules is the most rules a policy may have.
	MaxRules = 1000
	// MaxPathsPerRule is the most paths one rule may list.
	MaxPathsPerRule = 100
	// maxPolicyNameLen is the longest policy name.
	maxPolicyNameLen = 128
	// maxErrors bounds the problems reported for one document.
	maxErrors = 20
)

// ErrInvalid is matched by every error of Parse and ValidName, so callers
// can branch on errors.Is(err, ErrInvalid) for "the policy was refused".
var ErrInvalid = errors.New("invalid policy")

// Error is one problem with a policy: where it is and what is wrong.
// Parse returns an *Error, or several joined with errors.Join; use
// errors.As to reach them.
type Error struct {
	// Policy is the policy's name, as given to Parse.
	Policy string
	// Rule is the 1-based index of the rule at fault; 0 for a problem with
	// the document or the name as a whole.
	Rule int
	// Line is the 1-based line in the document of the value at fault; 0
	// when unknown.
	Line int
	// Field is the rule's key at fault: "spiffe_id", "paths" or
	// "capabilities"; empty otherwise.
	Field string
	// Msg says what is wrong, quoting the value at fault.
	Msg string
}

// Error formats the problem as `policy "name": rule 2, line 7: paths: msg`,
// leaving out the parts that are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("policy ")
	b.WriteString(quote(e.Policy))
	b.WriteString(": ")
	if e.Rule > 0 {
		b.WriteString("rule ")
		b.WriteString(strconv.Itoa(e.Rule))
		if e.Line > 0 {
			b.WriteString(", ")
		} else {
			b.WriteString(": ")
		}
	}
	if e.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Is makes every Error match ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// ValidName returns nil if name can name a policy: 1 to 128 characters
// of [a-z0-9._-], starting with a letter or a digit. Otherwise it returns
// an *Error saying why.
func ValidName(name string) error {
	fail := func(format string, args ...any) error {
		return &Error{Policy: name, Msg: "bad policy name: " + fmt.Sprintf(format, args...)}
	}
	if name == "" || len(name) > maxPolicyNameLen {
		return fail("want 1 to %d characters, got %d", maxPolicyNameLen, len(name))
	}
	if c := name[0]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
		return fail("must start with a lowercase letter or a digit")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fail("character %q at offset %d is not one of [a-z0-9._-]", c, i)
		}
	}
	return nil
}

// Rule is one rule of a policy, as written in its document.
type Rule struct {
	// SPIFFEID is the pattern of the callers the rule is about.
	SPIFFEID string
	// Paths are the rule's path patterns, at least one.
	Paths []string
	// Capabilities are what the rule grants, at least one; or only Deny.
	Capabilities []Capability
	// Line is the rule's 1-based line in the document.
	Line int
}

// rule is a compiled rule.
type rule struct {
	src   Rule
	id    *idPattern
	paths []*pathPattern
	caps  capBits
	deny  bool
}

// Policy is a parsed, valid policy. It is immutable and safe for
// concurrent use.
type Policy struct {
	name  string
	rules []rule
}

// Name returns the policy's name.
func (p *Policy) Name() string { return p.name }

// Rules returns a copy of the policy's rules, in document order.
func (p *Policy) Rules() []Rule {
	out := make([]Rule, len(p.rules))
	for i, r := range p.rules {
		out[i] = r.src
		out[i].Paths = slices.Clone(r.src.Paths)
		out[i].Capabilities = slices.Clone(r.src.Capabilities)
	}
	return out
}

// Parse parses the YAML policy document doc under the given name (see
// ValidName; it comes from a file name or a CLI argument, not from the
// document) and compiles its patterns.
//
// Parse is strict: it refuses an invalid name, a document larger than
// MaxDocumentSize, more than one YAML document, aliases, keys other than
// those of the package documentation or a key given twice, values of the
// wrong type, an empty rules list or more than MaxRules rules, a rule
// without spiffe_id, paths or capabilities, an empty paths or capabilities
// list, more than MaxPathsPerRule paths, a path or capability listed twice,
// an unknown capability, deny with another capability, and every malformed
// pattern, including a {name} in a path that the rule's spiffe_id does not
// bind and a name bound twice. The error is an *Error, or several joined
// with errors.Join (at most 20, rule by rule), each matching
// ErrInvalid and naming the rule and line at fault. On error the *Policy
// is nil.
func Parse(name string, doc []byte) (*Policy, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	if len(doc) > MaxDocumentSize {
		return nil, &Error{Policy: name, Msg: fmt.Sprintf("the document is %d bytes, more than %d", len(doc), MaxDocumentSize)}
	}
	ps := &parser{name: name}
	p := ps.document(doc)
	if len(ps.errs) > 0 {
		if len(ps.errs) == 1 {
			return nil, ps.errs[0]
		}
		return nil, errors.Join(ps.errs...)
	}
	return p, nil
}

// parser walks a policy document's node tree, collecting problems.
type parser struct {
	name string
	errs []error
	// full is set once maxErrors problems are recorded.
	full bool
}

func (ps *parser) fail(ruleIdx, line int, field, format string, args ...any) {
	if ps.full {
		return
	}
	if len(ps.errs) == maxErrors {
		ps.full = true
		ps.errs = append(ps.errs, &Error{Policy: ps.name, Rule: ruleIdx, Line: line, Msg: "too many errors; stopping here"})
		return
	}
	ps.errs = append(ps.errs, &Error{Policy: ps.name, Rule: ruleIdx, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (ps *parser) document(doc []byte) *Policy {
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	var root yaml.Node
	switch err := dec.Decode(&root); {
	case errors.Is(err, io.EOF):
		ps.fail(0, 0, "", "the document is empty; it must have a rules list")
		return nil
	case err != nil:
		ps.syntaxError(err)
		return nil
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		ps.syntaxError(err)
		return nil
	default:
		ps.fail(0, next.Line, "", "a second YAML document starts here; a policy is exactly one document")
		return nil
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) != 1 {
		ps.fail(0, root.Line, "", "the document must be a mapping with the key rules")
		return nil
	}
	top := root.Content[0]
	switch {
	case top.Kind == yaml.AliasNode:
		ps.fail(0, top.Line, "", "aliases are not supported")
		return nil
	case isNull(top):
		ps.fail(0, top.Line, "", "the document is empty; it must have a rules list")
		return nil
	case top.Kind != yaml.MappingNode:
		ps.fail(0, top.Line, "", "the document must be a mapping with the key rules, got %s", describe(top))
		return nil
	}
	var rules *yaml.Node
	ps.mapping(0, top, func(key string, k, v *yaml.Node) {
		if key != "rules" {
			ps.fail(0, k.Line, "", "unknown key %s (the only key is rules)", quote(key))
			return
		}
		rules = v
	})
	switch {
	case rules == nil:
		if len(ps.errs) == 0 {
			ps.fail(0, top.Line, "", "missing key rules")
		}
		return nil
	case rules.Kind == yaml.AliasNode:
		ps.fail(0, rules.Line, "", "rules: aliases are not supported")
		return nil
	case rules.Kind != yaml.SequenceNode:
		ps.fail(0, rules.Line, "", "rules: want a list of rules, got %s", describe(rules))
		return nil
	case len(rules.Content) == 0:
		ps.fail(0, rules.Line, "", "rules: the list is empty; a policy needs at least one rule")
		return nil
	case len(rules.Content) > MaxRules:
		ps.fail(0, rules.Line, "", "rules: %d rules, more than %d", len(rules.Content), MaxRules)
		return nil
	}
	p := &Policy{name: ps.name, rules: make([]rule, 0, len(rules.Content))}
	for i, n := range rules.Content {
		if r, ok := ps.rule(i+1, n); ok {
			p.rules = append(p.rules, r)
		}
	}
	return p
}

// mapping calls fn for each key of n in order, after refusing keys that
// are not plain strings and keys given twice.
func (ps *parser) mapping(ruleIdx int, n *yaml.Node, fn func(key string, k, v *yaml.Node)) {
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			ps.fail(ruleIdx, k.Line, "", "merge keys (<<) are not supported")
			continue
		}
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			ps.fail(ruleIdx, k.Line, "", "a key must be a string, got %s", describe(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			ps.fail(ruleIdx, k.Line, "", "key %s is set twice (first on line %d)", quote(k.Value), first)
			continue
		}
		seen[k.Value] = k.Line
		fn(k.Value, k, v)
	}
}

// rule compiles the rule n, the idx-th (1-based) of the document.
func (ps *parser) rule(idx int, n *yaml.Node) (rule, bool) {
	before := len(ps.errs)
	if n.Kind == yaml.AliasNode {
		ps.fail(idx, n.Line, "", "aliases are not supported")
		return rule{}, false
	}
	if n.Kind != yaml.MappingNode {
		ps.fail(idx, n.Line, "", "a rule must be a mapping with the keys spiffe_id, paths and capabilities, got %s", describe(n))
		return rule{}, false
	}
	var idNode, pathsNode, capsNode *yaml.Node
	ps.mapping(idx, n, func(key string, k, v *yaml.Node) {
		switch key {
		case "spiffe_id":
			idNode = v
		case "paths":
			pathsNode = v
		case "capabilities":
			capsNode = v
		default:
			ps.fail(idx, k.Line, "", "unknown key %s (want spiffe_id, paths and capabilities)", quote(key))
		}
	})
	r := rule{src: Rule{Line: n.Line}}

	idOK := false
	if s, ok := ps.str(idx, n, idNode, "spiffe_id"); ok {
		id, err := compileID(s)
		if err != nil {
			ps.fail(idx, idNode.Line, "spiffe_id", "%s: %v", quote(s), err)
		} else {
			r.src.SPIFFEID, r.id, idOK = s, id, true
		}
	}

	var names []string
	if idOK {
		names = r.id.names
	}
	for _, v := range ps.list(idx, n, pathsNode, "paths", MaxPathsPerRule) {
		s, ok := ps.str(idx, n, v, "paths")
		if !ok {
			continue
		}
		if slices.Contains(r.src.Paths, s) {
			ps.fail(idx, v.Line, "paths", "%s is listed twice", quote(s))
			continue
		}
		pp, err := compilePath(s, names, idOK)
		if err != nil {
			ps.fail(idx, v.Line, "paths", "%s: %v", quote(s), err)
			continue
		}
		r.src.Paths = append(r.src.Paths, s)
		r.paths = append(r.paths, pp)
	}

	for _, v := range ps.list(idx, n, capsNode, "capabilities", 6) {
		s, ok := ps.str(idx, n, v, "capabilities")
		if !ok {
			continue
		}
		c, err := ParseCapability(s)
		if err != nil {
			ps.fail(idx, v.Line, "capabilities", "%v", err)
			continue
		}
		if r.caps&c.bit() != 0 {
			ps.fail(idx, v.Line, "capabilities", "%s is listed twice", c)
			continue
		}
		r.caps |= c.bit()
		r.src.Capabilities = append(r.src.Capabilities, c)
	}
	if r.caps&Deny.bit() != 0 {
		r.deny = true
		if r.caps != Deny.bit() {
			ps.fail(idx, capsNode.Line, "capabilities", "deny must be the rule's only capability: it denies every other one")
		}
	}
	return r, len(ps.errs) == before
}

// str returns the string value v of the rule's field, reporting a missing
// or non-string value.
func (ps *parser) str(idx int, ruleNode, v *yaml.Node, field string) (string, bool) {
	switch {
	case v == nil:
		ps.fail(idx, ruleNode.Line, field, "missing")
	case v.Kind == yaml.AliasNode:
		ps.fail(idx, v.Line, field, "aliases are not supported")
	case v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str":
		ps.fail(idx, v.Line, field, "want a string, got %s", describe(v))
	default:
		return v.Value, true
	}
	return "", false
}

// list returns the items of the rule's non-empty list field v, reporting
// a missing, empty, overlong or non-list value.
func (ps *parser) list(idx int, ruleNode, v *yaml.Node, field string, max int) []*yaml.Node {
	switch {
	case v == nil:
		ps.fail(idx, ruleNode.Line, field, "missing")
	case v.Kind == yaml.AliasNode:
		ps.fail(idx, v.Line, field, "aliases are not supported")
	case v.Kind != yaml.SequenceNode:
		ps.fail(idx, v.Line, field, "want a list of strings, got %s", describe(v))
	case len(v.Content) == 0:
		ps.fail(idx, v.Line, field, "the list is empty")
	case len(v.Content) > max:
		ps.fail(idx, v.Line, field, "%d items, more than %d", len(v.Content), max)
	default:
		return v.Content
	}
	return nil
}

// syntaxError records an error of the YAML parser, with its line.
func (ps *parser) syntaxError(err error) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, after, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil && n > 0 {
				line, msg = n, after
			}
		}
	}
	ps.fail(0, line, "", "invalid YAML: %s", msg)
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node holds, for "got ..." in messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		switch tag := n.ShortTag(); tag {
		case "!!null":
			return "null"
		case "!!str":
			return "the string " + quote(n.Value)
		case "!!int":
			return "the integer " + quote(n.Value)
		case "!!float":
			return "the number " + quote(n.Value)
		case "!!bool":
			return "the boolean " + quote(n.Value)
		default:
			return "a value tagged " + quote(tag)
		}
	}
	return "nothing"
}
