package config

import (
	"errors"
	"strconv"
	"strings"
)

// Error is one problem with a configuration: where it is and what is wrong.
// Load, Parse and Validate return an *Error, or several joined with
// errors.Join; use errors.As to reach them.
type Error struct {
	// File is the name the configuration was loaded from; empty for a
	// Config checked by Validate.
	File string
	// Line is the 1-based line of Key in File; when the file leaves Key
	// out, the line of its nearest enclosing section. 0 when unknown (no
	// file, or nothing of Key's in it).
	Line int
	// Key is the dotted key path, e.g. "ca.leaf.max_ttl", with [i] for a
	// list element; empty for a problem with the file as a whole.
	Key string
	// Msg says what is wrong and what is allowed. It never holds a secret.
	Msg string
}

// Error formats the problem as "file:line: key: msg", leaving out the parts
// that are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// joinErrors returns nil for no errors, the *Error itself for one, and
// errors.Join of all of them otherwise.
func joinErrors(errs []*Error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}
