package agent

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sigil-pki/sigil/identity/agentapi"
)

func testState() *cacheState {
	return &cacheState{
		NodeID: "node-a", AgentID: "spiffe://example.org/sigil/agent/node-a",
		AgentChain: [][]byte{[]byte("agent-cert")}, AgentKey: []byte("agent-private-key-bytes"),
		Entries: []agentapi.Entry{{ID: "e1", SPIFFEID: "spiffe://example.org/web", Revision: 3}},
		SVIDs:   map[string]keptSVID{"e1": {Revision: 3, Chain: []byte("chain"), Key: []byte("workload-private-key")}},
		Spares:  map[string]keptSVID{},
		Files:   map[string]keptFile{"/etc/app/db.env": {Content: []byte("PASSWORD=hunter2-secret")}},
	}
}

func TestCacheRoundTripAndEncryption(t *testing.T) {
	dir := t.TempDir()
	seal := filepath.Join(t.TempDir(), "seal.key")
	c, err := OpenCache(dir, seal)
	if err != nil {
		t.Fatal(err)
	}
	want := testState()
	if err := c.save(want); err != nil {
		t.Fatal(err)
	}
	// Reopened with the same seal key: the same state.
	c2, err := OpenCache(dir, seal)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c2.load()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("state after reopening (-want +got):\n%s", diff)
	}
	// Nothing readable on disk, and every file is private.
	for _, name := range []string{keyFile, stateFile} {
		p := filepath.Join(dir, name)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{"agent-private-key-bytes", "workload-private-key", "hunter2-secret", "spiffe://"} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds %q in the clear", name, secret)
			}
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", name, fi.Mode().Perm())
		}
	}
	if fi, _ := os.Stat(seal); fi.Mode().Perm() != 0o600 {
		t.Errorf("seal key has mode %v", fi.Mode().Perm())
	}
}

func TestCacheRefusesWrongKeyAndTampering(t *testing.T) {
	dir := t.TempDir()
	seal := filepath.Join(t.TempDir(), "seal.key")
	c, err := OpenCache(dir, seal)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.save(testState()); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenCache(dir, filepath.Join(t.TempDir(), "other.key")); err == nil {
		t.Error("the cache key unsealed under another seal key")
	}
	short := filepath.Join(t.TempDir(), "short.key")
	os.WriteFile(short, []byte("short"), 0o600)
	if _, err := OpenCache(t.TempDir(), short); err == nil {
		t.Error("a 5-byte seal key was accepted")
	}
	p := filepath.Join(dir, stateFile)
	b, _ := os.ReadFile(p)
	b[len(b)-1] ^= 1
	os.WriteFile(p, b, 0o600)
	if _, err := c.load(); err == nil {
		t.Error("a tampered state decrypted")
	}
	// The sealed key cannot stand in for the state (AAD binds each).
	k, _ := os.ReadFile(filepath.Join(dir, keyFile))
	os.WriteFile(p, k, 0o600)
	if _, err := c.load(); err == nil {
		t.Error("the sealed key file decrypted as the state")
	}
	if err := c.Erase(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{keyFile, stateFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Erase: %v", name, err)
		}
	}
	if st, err := c.load(); st != nil || err != nil {
		t.Errorf("load after Erase = %v, %v; want nothing", st, err)
	}
}
