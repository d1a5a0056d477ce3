package config

import (
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// String formats d as a Go duration without zero trailing units: "24h",
// "1h30m", "90s" is written "1m30s". time.ParseDuration reads it back.
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// MarshalYAML writes d as its String form.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a Go duration string such as "90s", "1h30m" or "720h".
// A null leaves d unchanged. Errors are *Error carrying the node's line.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.ScalarNode {
		return &Error{Line: n.Line, Msg: fmt.Sprintf("expected a duration such as \"90s\", \"15m\" or \"720h\", got %s", describe(n))}
	}
	if n.ShortTag() == "!!null" {
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &Error{Line: n.Line, Msg: fmt.Sprintf("%q is not a duration; write a number with a unit (ns, us, ms, s, m, h), e.g. \"90s\", \"15m\" or \"720h\"", n.Value)}
	}
	*d = Duration(v)
	return nil
}
