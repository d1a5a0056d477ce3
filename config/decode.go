package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// decoder walks a yaml.Node tree into a Config by the yaml tags of its
// fields, recording where each key was set and every problem found, so one
// pass reports all of them with their lines.
type decoder struct {
	errs []*Error
	// full is set once maxErrors problems are recorded; decoding stops.
	full bool
	// pos maps each dotted key present in the file to its line.
	pos map[string]int
	// bad holds the keys whose value could not be decoded, so validation
	// does not report them a second time.
	bad map[string]bool
}

var durationType = reflect.TypeFor[Duration]()

// maxErrors bounds the problems reported for one file, and with them the
// work done on a file that is mostly wrong.
const maxErrors = 50

func (d *decoder) fail(line int, key, format string, args ...any) {
	if key != "" {
		d.bad[key] = true
	}
	if d.full {
		return
	}
	if len(d.errs) == maxErrors {
		d.full = true
		d.errs = append(d.errs, &Error{Line: line, Msg: "too many errors; stopping here"})
		return
	}
	d.errs = append(d.errs, &Error{Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// yamlErrLine matches the position prefix of the YAML parser's errors.
var yamlErrLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns a parser error into an *Error.
func syntaxError(err error) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlErrLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	return &Error{Line: line, Msg: "invalid YAML: " + msg}
}

// decodeFile decodes data into c. It returns the problems found, the line
// of each key present and the set of keys that failed to decode. fatal is
// set when the file is not a YAML mapping at all, so there is nothing to
// validate.
// hint names two top-level keys, for the message about a top level that
// is not a mapping.
func decodeFile(data []byte, c any, hint string) (errs []*Error, pos map[string]int, bad map[string]bool, fatal bool) {
	d := &decoder{pos: map[string]int{}, bad: map[string]bool{}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		return nil, d.pos, d.bad, false
	case err != nil:
		return []*Error{syntaxError(err)}, d.pos, d.bad, true
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return []*Error{syntaxError(err)}, d.pos, d.bad, true
	default:
		d.fail(next.Line, "", "a second YAML document starts here; the file must hold exactly one")
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root := resolve(doc.Content[0])
		if isNull(root) {
			return d.errs, d.pos, d.bad, false
		}
		if root.Kind != yaml.MappingNode {
			d.fail(root.Line, "", "the top level must be a mapping of keys such as %s, got %s", hint, describe(root))
			return d.errs, d.pos, d.bad, true
		}
		d.value(root, "", reflect.ValueOf(c).Elem())
	}
	return d.errs, d.pos, d.bad, false
}

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
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
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!str":
			return "the string " + quote(n.Value)
		case "!!int":
			return "the integer " + clip(n.Value)
		case "!!float":
			return "the number " + clip(n.Value)
		case "!!bool":
			return "the boolean " + clip(n.Value)
		default:
			return "a " + clip(n.ShortTag()) + " value"
		}
	}
	return "nothing"
}

// clip shortens s for a message.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// quote quotes s for a message, shortened.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// value decodes n into v, which is addressable. key is the dotted path of
// n, for messages.
func (d *decoder) value(n *yaml.Node, key string, v reflect.Value) {
	if d.full {
		return
	}
	n = resolve(n)
	if n.Kind == yaml.AliasNode {
		d.fail(n.Line, key, "alias does not name a node")
		return
	}
	if isNull(n) {
		// An empty value leaves the key unset: the default applies.
		return
	}
	switch {
	case v.Type() == durationType:
		d.duration(n, key, v)
	case v.Kind() == reflect.Struct:
		d.mapping(n, key, v)
	case v.Kind() == reflect.String:
		d.str(n, key, v)
	case v.Kind() == reflect.Int:
		d.integer(n, key, v)
	case v.Kind() == reflect.Float64:
		d.float(n, key, v)
	case v.Kind() == reflect.Bool:
		d.boolean(n, key, v)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		d.list(n, key, v)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		d.mappings(n, key, v)
	default:
		panic(fmt.Sprintf("config: field %s has unsupported type %s", key, v.Type()))
	}
}

func (d *decoder) mapping(n *yaml.Node, key string, v reflect.Value) {
	t := v.Type()
	if n.Kind != yaml.MappingNode {
		d.fail(n.Line, key, "expected a mapping with keys %s, got %s", strings.Join(fieldNames(t), ", "), describe(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := resolve(n.Content[i]), n.Content[i+1]
		if kn.Kind != yaml.ScalarNode {
			d.fail(kn.Line, key, "keys must be plain names, got %s", describe(kn))
			continue
		}
		if kn.ShortTag() == "!!merge" {
			d.fail(kn.Line, join(key, kn.Value), "merge keys (<<) are not supported; write the keys out")
			continue
		}
		name := kn.Value
		full := join(key, clip(name))
		if first, dup := seen[name]; dup {
			d.fail(kn.Line, full, "duplicate key; it is already set on line %d", first)
			continue
		}
		seen[name] = kn.Line
		idx := fieldIndex(t, name)
		if idx < 0 {
			d.unknown(kn.Line, key, name, t)
			continue
		}
		d.pos[full] = kn.Line
		d.value(vn, full, v.Field(idx))
	}
}

// unknown reports a key the struct t does not have, suggesting the
// nearest known one.
func (d *decoder) unknown(line int, key, name string, t reflect.Type) {
	names := fieldNames(t)
	msg := "unknown key"
	best, bestDist := "", 3
	for _, known := range names {
		if dist := editDistance(strings.ToLower(name), known); dist < bestDist {
			best, bestDist = known, dist
		}
	}
	if best != "" {
		msg += "; did you mean " + best + "?"
	}
	where := "at the top level"
	if key != "" {
		where = "in " + key
	}
	d.fail(line, join(key, clip(name)), "%s (allowed %s: %s)", msg, where, strings.Join(names, ", "))
}

func (d *decoder) str(n *yaml.Node, key string, v reflect.Value) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n.Line, key, "expected a string, got %s", describe(n))
		return
	}
	switch n.ShortTag() {
	case "!!str", "!!int", "!!float", "!!bool", "!!timestamp":
		v.SetString(n.Value)
	default:
		d.fail(n.Line, key, "expected a string, got %s", describe(n))
	}
}

func (d *decoder) integer(n *yaml.Node, key string, v reflect.Value) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		d.fail(n.Line, key, "expected a whole number, got %s", describe(n))
		return
	}
	var i int
	if err := n.Decode(&i); err != nil {
		d.fail(n.Line, key, "%s is not a whole number this program can hold", clip(n.Value))
		return
	}
	if i == 0 {
		d.fail(n.Line, key, "0 is not allowed; give a positive number, or leave the key out to use the default")
		return
	}
	v.SetInt(int64(i))
}

func (d *decoder) boolean(n *yaml.Node, key string, v reflect.Value) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || (n.Value != "true" && n.Value != "false") {
		d.fail(n.Line, key, "expected true or false, got %s", describe(n))
		return
	}
	v.SetBool(n.Value == "true")
}

func (d *decoder) float(n *yaml.Node, key string, v reflect.Value) {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!float" && n.ShortTag() != "!!int") {
		d.fail(n.Line, key, "expected a number such as 0.5, got %s", describe(n))
		return
	}
	var f float64
	if err := n.Decode(&f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		d.fail(n.Line, key, "%s is not a finite number", clip(n.Value))
		return
	}
	if f == 0 {
		d.fail(n.Line, key, "0 is not allowed; give a positive number, or leave the key out to use the default")
		return
	}
	v.SetFloat(f)
}

func (d *decoder) duration(n *yaml.Node, key string, v reflect.Value) {
	var dur Duration
	if err := dur.UnmarshalYAML(n); err != nil {
		var e *Error
		if errors.As(err, &e) {
			d.fail(n.Line, key, "%s", e.Msg)
		} else {
			d.fail(n.Line, key, "%v", err)
		}
		return
	}
	if dur == 0 {
		d.fail(n.Line, key, "%s is not allowed; give a positive duration, or leave the key out to use the default", clip(n.Value))
		return
	}
	v.Set(reflect.ValueOf(dur))
}

func (d *decoder) list(n *yaml.Node, key string, v reflect.Value) {
	if n.Kind != yaml.SequenceNode {
		d.fail(n.Line, key, "expected a list of strings, got %s", describe(n))
		return
	}
	out := make([]string, 0, len(n.Content))
	ok := true
	for i, item := range n.Content {
		item = resolve(item)
		ikey := fmt.Sprintf("%s[%d]", key, i)
		d.pos[ikey] = item.Line
		if item.Kind != yaml.ScalarNode || isNull(item) {
			d.fail(item.Line, ikey, "expected a string, got %s", describe(item))
			d.bad[key] = true
			ok = false
			continue
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		d.str(item, ikey, elem)
		out = append(out, elem.String())
	}
	if ok {
		v.Set(reflect.ValueOf(out).Convert(v.Type()))
	}
}

// mappings decodes a list of mappings into a slice of structs; each item's
// keys are named key[i].name.
func (d *decoder) mappings(n *yaml.Node, key string, v reflect.Value) {
	if n.Kind != yaml.SequenceNode {
		d.fail(n.Line, key, "expected a list of mappings with keys %s, got %s", strings.Join(fieldNames(v.Type().Elem()), ", "), describe(n))
		return
	}
	out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		item = resolve(item)
		ikey := fmt.Sprintf("%s[%d]", key, i)
		d.pos[ikey] = item.Line
		d.mapping(item, ikey, out.Index(i))
	}
	v.Set(out)
}

// fieldNames lists the YAML keys of struct t in declaration order.
func fieldNames(t reflect.Type) []string {
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		names = append(names, yamlName(t.Field(i)))
	}
	return names
}

// fieldIndex returns the index of the field of t whose YAML key is name,
// or -1.
func fieldIndex(t reflect.Type, name string) int {
	for i := range t.NumField() {
		if yamlName(t.Field(i)) == name {
			return i
		}
	}
	return -1
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b))
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
