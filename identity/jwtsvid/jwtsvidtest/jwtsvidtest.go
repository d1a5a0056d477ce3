// Package jwtsvidtest provides an in-memory key store for tests of
// jwtsvid.Issuer and of packages that mint JWT-SVIDs through one.
package jwtsvidtest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/sigil-pki/sigil/identity/jwtsvid"
)

// ErrAbsent is what MemSealer.Get returns for a name never Put.
var ErrAbsent = errors.New("jwtsvidtest: absent")

// IsNotFound reports whether err is ErrAbsent; it is the IsNotFound of a
// jwtsvid.Config over a MemSealer.
func IsNotFound(err error) bool { return errors.Is(err, ErrAbsent) }

// MemSealer keeps sealed values in a map (in the clear: tests only).
type MemSealer struct {
	mu   sync.Mutex
	vals map[string][]byte
}

// Get implements jwtsvid.Sealer.
func (m *MemSealer) Get(_ context.Context, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.vals[name]
	if !ok {
		return nil, ErrAbsent
	}
	return bytes.Clone(v), nil
}

// Put implements jwtsvid.Sealer.
func (m *MemSealer) Put(_ context.Context, name string, v []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.vals == nil {
		m.vals = map[string][]byte{}
	}
	m.vals[name] = bytes.Clone(v)
	return nil
}

// NopRecorder records nothing and never fails.
type NopRecorder struct{}

// RecordJWT implements jwtsvid.Recorder.
func (NopRecorder) RecordJWT(context.Context, jwtsvid.Minted) error { return nil }

// NewIssuer opens an Issuer for trustDomain over a fresh MemSealer, with
// default key lifetimes and a recorder that records nothing.
func NewIssuer(tb testing.TB, trustDomain string) *jwtsvid.Issuer {
	tb.Helper()
	i, err := jwtsvid.Open(tb.Context(), jwtsvid.Config{
		Sealer:      &MemSealer{},
		IsNotFound:  IsNotFound,
		Recorder:    NopRecorder{},
		TrustDomain: trustDomain,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return i
}
