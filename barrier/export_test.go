package barrier

// MasterKeyRef returns the barrier's own master key slice (not a copy), so
// tests can check that Seal overwrites it.
func MasterKeyRef(b *Barrier) []byte {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.master
}

// DataKeyRefs returns the barrier's own data key slices (not copies).
func DataKeyRefs(b *Barrier) [][]byte {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.ring == nil {
		return nil
	}
	var out [][]byte
	for _, k := range b.ring.terms {
		out = append(out, k.key)
	}
	return out
}

// PendingShareRefs returns the barrier's own copies of submitted shares.
func PendingShareRefs(b *Barrier) [][]byte {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return append([][]byte(nil), b.pending...)
}
