package config

import (
	_ "embed"
	"fmt"
	"os"
	"slices"
)

// Example is sigil.example.yaml: every key, its meaning and its default,
// with trust_domain set to example.org. Parsing it gives Default with that
// trust domain.
//
//go:embed sigil.example.yaml
var Example []byte

// Load reads the YAML file at path and returns its Config with defaults
// applied, or the problems found: an error wrapping the read failure, or
// *Error values (joined when several) naming path, line and key.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes one YAML document strictly (no unknown or duplicate keys,
// no value of the wrong type), applies defaults and validates the result.
// It reports every problem found, each an *Error whose File is name; one
// alone, several joined with errors.Join. On error the Config is zero.
func Parse(name string, data []byte) (Config, error) {
	var c Config
	errs, pos, bad, fatal := decodeFile(data, &c, "trust_domain and ca")
	if !fatal {
		c.ApplyDefaults()
		v := &validator{pos: pos, skip: bad}
		v.config(&c)
		errs = append(errs, v.errs...)
	}
	if len(errs) == 0 {
		return c, nil
	}
	// Problems in file order; those without a line (defaults, missing
	// keys) last.
	slices.SortStableFunc(errs, func(a, b *Error) int {
		return lineOrder(a.Line) - lineOrder(b.Line)
	})
	for _, e := range errs {
		e.File = name
	}
	return Config{}, joinErrors(errs)
}

func lineOrder(line int) int {
	if line == 0 {
		return int(^uint(0) >> 2)
	}
	return line
}
