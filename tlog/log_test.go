package tlog_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/sigil-pki/sigil/storage"
	"github.com/sigil-pki/sigil/tlog"
)

// appendAll appends entries with the given concurrency, checks that every
// index is new, and records the entries in m in index order.
func appendAll(t *testing.T, l *tlog.Log, m *model, tag string, from, n, workers int) {
	t.Helper()
	got := make([][]byte, n)
	idx := make([]int64, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				e := testEntry(tag, from+i)
				x, err := l.Append(t.Context(), e)
				if err != nil {
					errs <- err
					return
				}
				idx[i], got[i] = x, mustMarshal(t, e)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Append: %v", err)
	}
	base := int64(len(m.leaves))
	byIndex := make([][]byte, n)
	for i, x := range idx {
		if x < base || x >= base+int64(n) || byIndex[x-base] != nil {
			t.Fatalf("Append returned index %d: outside [%d,%d) or twice", x, base, base+int64(n))
		}
		byIndex[x-base] = got[i]
	}
	for _, b := range byIndex {
		m.add(b)
	}
}

func TestTreeThroughTiles(t *testing.T) {
	l := newLog(t, newSQLiteStore(t), func(c *tlog.Config) { c.BatchSize = 4096 })
	m := newModel()
	checkTree(t, l, 0)
	for _, size := range []int{1, 255, 256, 257, 65536 + 3} {
		appendAll(t, l, m, "tiles", len(m.leaves), size-len(m.leaves), 256)
		cp := checkTree(t, l, int64(size))
		if !bytes.Equal(cp.Root[:], m.roots[size]) {
			t.Fatalf("size %d: checkpoint root %x, independent root %x", size, cp.Root, m.roots[size])
		}
	}
	// Entries read back from their bundles are the ones logged.
	for _, i := range []int64{0, 1, 254, 255, 256, 257, 65535, 65536, 65538} {
		e, raw, err := l.Entry(t.Context(), i)
		if err != nil {
			t.Fatalf("Entry(%d): %v", i, err)
		}
		if !bytes.Equal(rfc6962.DefaultHasher.HashLeaf(raw), m.leaves[i]) {
			t.Errorf("Entry(%d) bytes do not hash to leaf %d", i, i)
		}
		if b := mustMarshal(t, e); !bytes.Equal(b, raw) {
			t.Errorf("Entry(%d) parsed entry re-encodes differently", i)
		}
	}
	if _, _, err := l.Entry(t.Context(), 65539); !errors.Is(err, tlog.ErrNotFound) {
		t.Errorf("Entry beyond the tree: %v, want ErrNotFound", err)
	}
	// A few proofs at the large size.
	size := int64(65539)
	for _, i := range []int64{0, 256, 65535, 65538} {
		checkInclusion(t, l, m, i, size)
	}
	for _, from := range []int64{1, 255, 256, 257, 65536} {
		checkConsistency(t, l, m, from, size)
	}
}

func TestReadTile(t *testing.T) {
	l := newLog(t, newSQLiteStore(t), nil)
	m := newModel()
	appendAll(t, l, m, "read", 0, 300, 16)
	ctx := t.Context()
	full, err := l.ReadTile(ctx, tlog.TilePath{Level: 0, Index: 0})
	if err != nil {
		t.Fatalf("ReadTile(full level 0): %v", err)
	}
	if want := bytes.Join(m.leaves[:256], nil); !bytes.Equal(full, want) {
		t.Errorf("full level-0 tile is not the first 256 leaf hashes")
	}
	cases := []struct {
		name    string
		p       tlog.TilePath
		want    []byte
		wantErr error
	}{
		{"prefix of a full tile", tlog.TilePath{Width: 7}, bytes.Join(m.leaves[:7], nil), nil},
		{"partial at the edge", tlog.TilePath{Index: 1, Width: 44}, bytes.Join(m.leaves[256:300], nil), nil},
		{"prefix of the partial", tlog.TilePath{Index: 1, Width: 3}, bytes.Join(m.leaves[256:259], nil), nil},
		{"wider than the tree", tlog.TilePath{Index: 1, Width: 45}, nil, tlog.ErrNotFound},
		{"full beyond the tree", tlog.TilePath{Index: 1}, nil, tlog.ErrNotFound},
		{"level 1 not yet", tlog.TilePath{Level: 1, Index: 0, Width: 2}, nil, tlog.ErrNotFound},
		{"level 1 first hash", tlog.TilePath{Level: 1, Index: 0, Width: 1}, nil, nil},
		{"no such level", tlog.TilePath{Level: 2, Width: 1}, nil, tlog.ErrNotFound},
		{"entries beyond", tlog.TilePath{Entries: true, Index: 2, Width: 1}, nil, tlog.ErrNotFound},
	}
	for _, c := range cases {
		got, err := l.ReadTile(ctx, c.p)
		if c.wantErr != nil {
			if !errors.Is(err, c.wantErr) {
				t.Errorf("%s: ReadTile(%s) error %v, want %v", c.name, c.p, err, c.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: ReadTile(%s): %v", c.name, c.p, err)
			continue
		}
		if c.want != nil && !bytes.Equal(got, c.want) {
			t.Errorf("%s: ReadTile(%s) returned other hashes", c.name, c.p)
		}
	}
	// Entry bundles: a prefix holds exactly the first W entries.
	bundle, err := l.ReadTile(ctx, tlog.TilePath{Entries: true, Index: 1, Width: 2})
	if err != nil {
		t.Fatalf("ReadTile(entries .p/2): %v", err)
	}
	var want []byte
	for i := 256; i < 258; i++ {
		_, raw, err := l.Entry(ctx, int64(i))
		if err != nil {
			t.Fatalf("Entry(%d): %v", i, err)
		}
		want = append(want, byte(len(raw)>>8), byte(len(raw)))
		want = append(want, raw...)
	}
	if !bytes.Equal(bundle, want) {
		t.Errorf("entry bundle prefix of width 2 is not entries 256 and 257 with 2-byte lengths")
	}
}

func checkInclusion(t *testing.T, l *tlog.Log, m *model, index, size int64) {
	t.Helper()
	p, err := l.InclusionProof(t.Context(), index, size)
	if err != nil {
		t.Fatalf("InclusionProof(%d, %d): %v", index, size, err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(index), uint64(size), m.leaves[index], toSlices(p), m.roots[size]); err != nil {
		t.Errorf("inclusion proof of %d in %d does not verify: %v", index, size, err)
	}
}

func checkConsistency(t *testing.T, l *tlog.Log, m *model, from, to int64) {
	t.Helper()
	p, err := l.ConsistencyProof(t.Context(), from, to)
	if err != nil {
		t.Fatalf("ConsistencyProof(%d, %d): %v", from, to, err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(from), uint64(to), toSlices(p), m.roots[from], m.roots[to]); err != nil {
		t.Errorf("consistency proof %d -> %d does not verify: %v", from, to, err)
	}
}

func toSlices(p [][32]byte) [][]byte {
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = p[i][:]
	}
	return out
}

func TestProofs(t *testing.T) {
	l := newLog(t, newSQLiteStore(t), nil)
	m := newModel()
	// Grow in uneven batches so that tiles are rewritten at many widths.
	for _, n := range []int{1, 2, 5, 120, 128, 1, 300, 500, 3} {
		appendAll(t, l, m, "proofs", len(m.leaves), n, 8)
	}
	size := int64(len(m.leaves))
	checkTree(t, l, size)
	for s := int64(1); s <= size; s += 1 + s/9 {
		for i := int64(0); i < s; i += 1 + s/13 {
			checkInclusion(t, l, m, i, s)
		}
		checkInclusion(t, l, m, s-1, s)
		for from := int64(0); from <= s; from += 1 + s/11 {
			checkConsistency(t, l, m, from, s)
		}
	}
	// A proof against the wrong root fails: the verification is real.
	p, err := l.InclusionProof(t.Context(), 3, size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, 3, uint64(size), m.leaves[4], toSlices(p), m.roots[size]); err == nil {
		t.Error("inclusion proof of entry 3 verified for entry 4's leaf")
	}
	for _, c := range []struct{ a, b int64 }{{-1, 5}, {5, 5}, {0, size + 1}} {
		if _, err := l.InclusionProof(t.Context(), c.a, c.b); !errors.Is(err, tlog.ErrNotFound) {
			t.Errorf("InclusionProof(%d, %d): %v, want ErrNotFound", c.a, c.b, err)
		}
	}
	for _, c := range []struct{ a, b int64 }{{-1, 5}, {6, 5}, {1, size + 1}} {
		if _, err := l.ConsistencyProof(t.Context(), c.a, c.b); !errors.Is(err, tlog.ErrNotFound) {
			t.Errorf("ConsistencyProof(%d, %d): %v, want ErrNotFound", c.a, c.b, err)
		}
	}
}

// faultyStore fails AppendLog on demand: before writing, or after the
// write landed (an acknowledgement lost on the way back).
type faultyStore struct {
	tlog.Store
	mode  atomic.Int32 // 0 healthy, 1 fail before, 2 fail after
	calls atomic.Int64
}

var errInjected = errors.New("injected storage failure")

func (s *faultyStore) AppendLog(ctx context.Context, prev int64, b storage.LogBatch) error {
	s.calls.Add(1)
	switch s.mode.Load() {
	case 1:
		return errInjected
	case 2:
		if err := s.Store.AppendLog(ctx, prev, b); err != nil {
			return err
		}
		return errInjected
	}
	return s.Store.AppendLog(ctx, prev, b)
}

func TestFailClosed(t *testing.T) {
	fs := &faultyStore{Store: newSQLiteStore(t)}
	l := newLog(t, fs, nil)
	m := newModel()
	appendAll(t, l, m, "ok", 0, 10, 4)

	for _, mode := range []int32{1, 2} {
		fs.mode.Store(mode)
		var wg sync.WaitGroup
		var failed atomic.Int64
		for i := range 32 {
			wg.Go(func() {
				_, err := l.Append(t.Context(), testEntry(fmt.Sprintf("fail%d", mode), i))
				if errors.Is(err, errInjected) {
					failed.Add(1)
				} else {
					t.Errorf("Append with a failing store (mode %d) = %v, want the injected error", mode, err)
				}
			})
		}
		wg.Wait()
		if failed.Load() != 32 {
			t.Fatalf("mode %d: %d of 32 appends failed, want all", mode, failed.Load())
		}
		fs.mode.Store(0)
		if mode == 1 {
			// Nothing of the failed batches is visible.
			checkTree(t, l, int64(len(m.leaves)))
			appendAll(t, l, m, "after1", 0, 20, 4)
			checkTree(t, l, int64(len(m.leaves)))
			continue
		}
		// The failed batches landed despite the error: the log must pick
		// up from the stored state, and the tree stays consistent.
		st, err := fs.LoadLogState(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for i := int64(len(m.leaves)); i < st.Size; i++ {
			_, raw, err := l.Entry(t.Context(), i)
			if err != nil {
				t.Fatalf("Entry(%d): %v", i, err)
			}
			m.add(raw)
		}
		appendAll(t, l, m, "after2", 0, 20, 4)
		cp := checkTree(t, l, int64(len(m.leaves)))
		if !bytes.Equal(cp.Root[:], m.roots[len(m.leaves)]) {
			t.Fatalf("root after recovery %x, independent root %x", cp.Root, m.roots[len(m.leaves)])
		}
	}
}

func TestConcurrentAppenders(t *testing.T) {
	l := newLog(t, newSQLiteStore(t), func(c *tlog.Config) { c.BatchSize = 16 })
	m := newModel()
	appendAll(t, l, m, "conc", 0, 64*40, 64)
	cp := checkTree(t, l, 64*40)
	if !bytes.Equal(cp.Root[:], m.roots[64*40]) {
		t.Fatalf("root %x, independent root %x", cp.Root, m.roots[64*40])
	}
	for i := int64(0); i < 64*40; i += 97 {
		checkInclusion(t, l, m, i, 64*40)
	}
}

func TestTwoWriters(t *testing.T) {
	backends := []struct {
		name string
		open func(t *testing.T) (tlog.Store, tlog.Store)
	}{
		{"sqlite", func(t *testing.T) (tlog.Store, tlog.Store) {
			path := filepath.Join(t.TempDir(), "shared.db")
			return openSQLite(t, path), openSQLite(t, path)
		}},
		{"postgres", func(t *testing.T) (tlog.Store, tlog.Store) {
			dsn := storagetestDSN(t)
			return openPostgres(t, dsn), openPostgres(t, dsn)
		}},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s1, s2 := b.open(t)
			logs := []*tlog.Log{newLog(t, s1, nil), newLog(t, s2, nil)}
			const perLog, workers = 300, 8
			type logged struct {
				index int64
				entry []byte
			}
			var (
				mu  sync.Mutex
				all []logged
				wg  sync.WaitGroup
			)
			for li, l := range logs {
				for w := range workers {
					wg.Go(func() {
						for i := w; i < perLog; i += workers {
							e := testEntry(fmt.Sprintf("writer%d", li), i)
							idx, err := l.Append(t.Context(), e)
							if err != nil {
								t.Errorf("log %d Append: %v", li, err)
								return
							}
							mu.Lock()
							all = append(all, logged{idx, mustMarshal(t, e)})
							mu.Unlock()
						}
					})
				}
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			const total = 2 * perLog
			byIndex := make([][]byte, total)
			for _, x := range all {
				if x.index < 0 || x.index >= total || byIndex[x.index] != nil {
					t.Fatalf("index %d returned twice or out of range", x.index)
				}
				byIndex[x.index] = x.entry
			}
			m := newModel()
			for i, want := range byIndex {
				_, raw, err := logs[i%2].Entry(t.Context(), int64(i))
				if err != nil {
					t.Fatalf("Entry(%d): %v", i, err)
				}
				if !bytes.Equal(raw, want) {
					t.Fatalf("entry %d is not the one Append put there", i)
				}
				m.add(raw)
			}
			for _, l := range logs {
				cp := checkTree(t, l, total)
				if !bytes.Equal(cp.Root[:], m.roots[total]) {
					t.Fatalf("root %x, independent root %x", cp.Root, m.roots[total])
				}
			}
			for i := int64(0); i < total; i += 37 {
				checkInclusion(t, logs[1], m, i, total)
				checkConsistency(t, logs[0], m, i+1, total)
			}
		})
	}
}

func TestCloseAndPushback(t *testing.T) {
	gate := make(chan struct{})
	bs := &blockingStore{Store: newSQLiteStore(t), gate: gate}
	l := newLog(t, bs, func(c *tlog.Config) { c.BatchSize = 1; c.MaxPending = 2 })
	first := make(chan error, 1)
	go func() { _, err := l.Append(t.Context(), testEntry("p", 0)); first <- err }()
	waitFor(t, "the first commit to start", func() bool { return bs.started.Load() == 1 })

	// With the first batch held in the store, two entries fit in the queue
	// and the third is pushed back. A cancelled context makes Append
	// return as soon as its entry is queued.
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	for i := 1; i <= 2; i++ {
		if _, err := l.Append(gone, testEntry("p", i)); !errors.Is(err, context.Canceled) {
			t.Fatalf("Append %d with room in the queue = %v, want it queued (context.Canceled)", i, err)
		}
	}
	if _, err := l.Append(gone, testEntry("p", 3)); !errors.Is(err, tlog.ErrPushback) {
		t.Fatalf("Append with a full queue = %v, want ErrPushback", err)
	}

	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	waitFor(t, "Close to refuse new entries", func() bool {
		_, err := l.Append(gone, testEntry("p", 100))
		return errors.Is(err, tlog.ErrClosed)
	})
	close(gate)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-first; err != nil {
		t.Errorf("the first entry failed: %v", err)
	}
	// Close drained the queue: the two queued entries were committed.
	st, err := bs.LoadLogState(t.Context())
	if err != nil || st.Size != 3 {
		t.Errorf("after Close the log holds %d entries (%v), want the 3 accepted", st.Size, err)
	}
}

// blockingStore holds every AppendLog until gate is closed.
type blockingStore struct {
	tlog.Store
	gate    chan struct{}
	started atomic.Int64
}

func (s *blockingStore) AppendLog(ctx context.Context, prev int64, b storage.LogBatch) error {
	s.started.Add(1)
	<-s.gate
	return s.Store.AppendLog(ctx, prev, b)
}

func TestNewRejectsBadConfig(t *testing.T) {
	s := newSQLiteStore(t)
	otherS, _, err := tlog.GenerateKey("other.test/log")
	if err != nil {
		t.Fatal(err)
	}
	other, err := noteSigner(otherS)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cfg  tlog.Config
	}{
		{"no store", tlog.Config{Signer: testSigner(t), Origin: testOrigin}},
		{"no signer", tlog.Config{Store: s, Origin: testOrigin}},
		{"no origin", tlog.Config{Store: s, Signer: testSigner(t)}},
		{"signer for another origin", tlog.Config{Store: s, Signer: other, Origin: testOrigin}},
	}
	for _, c := range cases {
		if _, err := tlog.New(t.Context(), c.cfg); err == nil {
			t.Errorf("New(%s) succeeded", c.name)
		}
	}
}

func TestReloadChecksCheckpoint(t *testing.T) {
	s := newSQLiteStore(t)
	l := newLog(t, s, nil)
	appendAll(t, l, newModel(), "reload", 0, 5, 1)
	// A second Log on the same store loads the same edge and continues it.
	l2 := newLog(t, s, nil)
	if idx, err := l2.Append(t.Context(), testEntry("reload", 5)); err != nil || idx != 5 {
		t.Fatalf("Append on a reloaded log = %d, %v; want index 5", idx, err)
	}
	// A log of another origin refuses the stored state.
	otherS, _, err := tlog.GenerateKey("other.test/log")
	if err != nil {
		t.Fatal(err)
	}
	other, err := noteSigner(otherS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tlog.New(t.Context(), tlog.Config{Store: s, Signer: other, Origin: "other.test/log"}); err == nil {
		t.Error("New with another origin accepted the stored checkpoint")
	}
	cp1, _ := l.Checkpoint(t.Context())
	cp2, _ := l2.Checkpoint(t.Context())
	if diff := cmp.Diff(string(cp1), string(cp2)); diff != "" {
		t.Errorf("two logs on one store see different checkpoints:\n%s", diff)
	}
}
