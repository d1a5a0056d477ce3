package barrier_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/sigil-pki/sigil/storage"
)

// memStore is an in-memory barrier.Store with the storage contract's
// semantics: Generation 1 on init, compare-and-swap on the keyring,
// copies in and out.
type memStore struct {
	mu     sync.Mutex
	state  *storage.BarrierState
	sealed map[string][]byte
}

func newMemStore() *memStore { return &memStore{sealed: map[string][]byte{}} }

func (m *memStore) LoadBarrier(context.Context) (storage.BarrierState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state == nil {
		return storage.BarrierState{}, storage.ErrNotFound
	}
	st := *m.state
	st.SealConfig = slices.Clone(st.SealConfig)
	st.Keyring = slices.Clone(st.Keyring)
	return st, nil
}

func (m *memStore) InitBarrier(_ context.Context, st storage.BarrierState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state != nil {
		return fmt.Errorf("barrier row: %w", storage.ErrConflict)
	}
	m.state = &storage.BarrierState{
		SealType:   st.SealType,
		SealConfig: slices.Clone(st.SealConfig),
		Keyring:    slices.Clone(st.Keyring),
		Generation: 1,
	}
	return nil
}

func (m *memStore) UpdateKeyring(_ context.Context, prev int64, keyring []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state == nil {
		return storage.ErrNotFound
	}
	if m.state.Generation != prev {
		return fmt.Errorf("keyring generation %d, expected %d: %w", m.state.Generation, prev, storage.ErrConflict)
	}
	m.state.Keyring = slices.Clone(keyring)
	m.state.Generation++
	return nil
}

func (m *memStore) GetSealed(_ context.Context, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.sealed[name]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return slices.Clone(v), nil
}

func (m *memStore) PutSealed(_ context.Context, name string, ciphertext []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sealed[name] = slices.Clone(ciphertext)
	return nil
}

// swap exchanges the ciphertexts stored under a and b.
func (m *memStore) swap(a, b string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sealed[a], m.sealed[b] = m.sealed[b], m.sealed[a]
}

// corruptKeyring flips a bit of the stored encrypted keyring.
func (m *memStore) corruptKeyring() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state.Keyring[len(m.state.Keyring)-1] ^= 1
}

// dump returns every byte the store holds, names included.
func (m *memStore) dump() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	var buf bytes.Buffer
	if m.state != nil {
		buf.WriteString(m.state.SealType)
		buf.Write(m.state.SealConfig)
		buf.Write(m.state.Keyring)
	}
	for k, v := range m.sealed {
		buf.WriteString(k)
		buf.Write(v)
	}
	return buf.Bytes()
}
