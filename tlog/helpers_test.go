package tlog_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	sumtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/sigil-pki/sigil/storage"
	"github.com/sigil-pki/sigil/storage/storagetest"
	"github.com/sigil-pki/sigil/tlog"
)

const testOrigin = "sigil.test/log"

// testKeys is one fixed key pair, so that checkpoints are comparable
// across Logs.
var testSKey, testVKey = func() (string, string) {
	s, v, err := tlog.GenerateKey(testOrigin)
	if err != nil {
		panic(err)
	}
	return s, v
}()

func testSigner(t testing.TB) note.Signer {
	t.Helper()
	s, err := note.NewSigner(testSKey)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	return s
}

func testVerifier(t testing.TB) note.Verifier {
	t.Helper()
	v, err := note.NewVerifier(testVKey)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

type tlogger struct{ t testing.TB }

func (w tlogger) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogger{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func openSQLite(t testing.TB, path string) *storage.DB {
	t.Helper()
	db, err := storage.Open(context.Background(), storage.Options{Path: path})
	if err != nil {
		t.Fatalf("opening sqlite %s: %v", path, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func newSQLiteStore(t testing.TB) *storage.DB {
	return openSQLite(t, filepath.Join(t.TempDir(), "sigil.db"))
}

func openPostgres(t testing.TB, dsn string) *storage.DB {
	t.Helper()
	db, err := storage.Open(context.Background(), storage.Options{Backend: "postgres", DSN: dsn, MaxConns: 8})
	if err != nil {
		t.Fatalf("opening postgres: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func newPostgresStore(t testing.TB) *storage.DB {
	return openPostgres(t, storagetest.PostgresDSN(t))
}

func newLog(t testing.TB, s tlog.Store, mod func(*tlog.Config)) *tlog.Log {
	t.Helper()
	cfg := tlog.Config{Store: s, Signer: testSigner(t), Origin: testOrigin, Logger: testLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	l, err := tlog.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("tlog.New: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

var baseTime = time.Date(2025, time.June, 1, 12, 0, 0, 123456789, time.UTC)

// testEntry is entry number i of a test, distinguishable by its actor.
func testEntry(tag string, i int) tlog.Entry {
	return tlog.Entry{
		Kind:    tlog.KindSecretRead,
		Time:    baseTime.Add(time.Duration(i) * time.Millisecond),
		Actor:   fmt.Sprintf("spiffe://example.org/%s/%d", tag, i),
		Subject: tlog.Subject{Path: "kv/data/app/db", Version: int64(i % 7)},
	}
}

func mustMarshal(t testing.TB, e tlog.Entry) []byte {
	t.Helper()
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	return b
}

// model computes roots independently of the package: a compact range over
// the leaf hashes, in the order the entries were logged.
type model struct {
	leaves [][]byte
	rng    *compact.Range
	roots  [][]byte // roots[n] is the root of the tree of size n
}

func newModel() *model {
	rf := &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	return &model{rng: rf.NewEmptyRange(0), roots: [][]byte{rfc6962.DefaultHasher.EmptyRoot()}}
}

func (m *model) add(entry []byte) {
	h := rfc6962.DefaultHasher.HashLeaf(entry)
	m.leaves = append(m.leaves, h)
	if err := m.rng.Append(h, nil); err != nil {
		panic(err)
	}
	root, err := m.rng.GetRootHash(nil)
	if err != nil {
		panic(err)
	}
	m.roots = append(m.roots, root)
}

// tileReader reads hash tiles through Log.ReadTile for sumdb's tlog.
type tileReader struct {
	ctx context.Context
	l   *tlog.Log
}

func (r tileReader) Height() int { return 8 }

func (r tileReader) ReadTiles(tiles []sumtlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		w := t.W
		if w == 256 {
			w = 0
		}
		data, err := r.l.ReadTile(r.ctx, tlog.TilePath{Level: t.L, Index: t.N, Width: w})
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (r tileReader) SaveTiles([]sumtlog.Tile, [][]byte) {}

// checkTree verifies the latest checkpoint's signature, that its size is
// want, and that the tree read back through the tiles by sumdb's tlog
// hashes to its root. It returns the checkpoint.
func checkTree(t testing.TB, l *tlog.Log, want int64) tlog.Checkpoint {
	t.Helper()
	ctx := context.Background()
	text, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	cp, err := tlog.VerifyCheckpoint(text, testVerifier(t))
	if err != nil {
		t.Fatalf("VerifyCheckpoint: %v", err)
	}
	if cp.Size != want {
		t.Fatalf("checkpoint size %d, want %d", cp.Size, want)
	}
	if want == 0 {
		return cp
	}
	hr := sumtlog.TileHashReader(sumtlog.Tree{N: cp.Size, Hash: cp.Root}, tileReader{ctx, l})
	th, err := sumtlog.TreeHash(cp.Size, hr)
	if err != nil {
		t.Fatalf("reading the tree of size %d through its tiles: %v", cp.Size, err)
	}
	if th != cp.Root {
		t.Fatalf("tree hash through tiles %x, checkpoint root %x", th, cp.Root)
	}
	return cp
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func noteSigner(skey string) (note.Signer, error) { return note.NewSigner(skey) }

func storagetestDSN(t *testing.T) string { return storagetest.PostgresDSN(t) }
