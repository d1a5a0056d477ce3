package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sigil-pki/sigil/storage"
)

// runLog runs the transparency log contract: LoadLogState, AppendLog's
// compare-and-swap and atomicity, and GetLogTile's widest-tile rule.
func runLog(t *testing.T, run func(t *testing.T, name string, fn func(t *testing.T, s storage.Store))) {
	t.Run("Log", func(t *testing.T) {
		run(t, "ZeroStateBeforeAppend", testLogZeroState)
		run(t, "AppendThenLoad", testLogAppendLoad)
		run(t, "StaleSizeConflicts", testLogConflict)
		run(t, "ConflictWritesNothing", testLogConflictAtomic)
		run(t, "RejectsInvalidBatch", testLogInvalidBatch)
		run(t, "TileGrowsNeverShrinks", testLogTileWidening)
		run(t, "GetMissingTile", testLogTileMissing)
		run(t, "ConcurrentAppendersOneWinnerPerSize", testLogConcurrentCAS)
	})
}

func logTile(path string, width int, fill byte) storage.LogTile {
	return storage.LogTile{Path: path, Width: width, Data: bytes.Repeat([]byte{fill}, 32*width)}
}

func mustAppendLog(t *testing.T, s storage.Store, prev int64, b storage.LogBatch) {
	t.Helper()
	if err := s.AppendLog(t.Context(), prev, b); err != nil {
		t.Fatalf("AppendLog(%d -> %d): %v", prev, b.Size, err)
	}
}

func mustLogTile(t *testing.T, s storage.Store, path string) storage.LogTile {
	t.Helper()
	got, err := s.GetLogTile(t.Context(), path)
	if err != nil {
		t.Fatalf("GetLogTile(%s): %v", path, err)
	}
	return got
}

func testLogZeroState(t *testing.T, s storage.Store) {
	st, err := s.LoadLogState(t.Context())
	if err != nil {
		t.Fatalf("LoadLogState on an empty store: %v", err)
	}
	if st.Size != 0 || len(st.Checkpoint) != 0 {
		t.Errorf("LoadLogState on an empty store = %+v, want the zero state", st)
	}
}

func testLogAppendLoad(t *testing.T, s storage.Store) {
	b := storage.LogBatch{
		Size:       3,
		Checkpoint: []byte("checkpoint 3\n"),
		Tiles: []storage.LogTile{
			logTile("tile/0/000", 3, 0xa1),
			{Path: "tile/entries/000", Width: 3, Data: []byte("\x00\x01a\x00\x01b\x00\x01c")},
		},
	}
	mustAppendLog(t, s, 0, b)
	st, err := s.LoadLogState(t.Context())
	if err != nil {
		t.Fatalf("LoadLogState: %v", err)
	}
	if diff := cmp.Diff(storage.LogState{Size: 3, Checkpoint: b.Checkpoint}, st); diff != "" {
		t.Errorf("LoadLogState after append (-want +got):\n%s", diff)
	}
	for _, want := range b.Tiles {
		if diff := cmp.Diff(want, mustLogTile(t, s, want.Path)); diff != "" {
			t.Errorf("GetLogTile(%s) (-want +got):\n%s", want.Path, diff)
		}
	}
	mustAppendLog(t, s, 3, storage.LogBatch{Size: 4, Checkpoint: []byte("checkpoint 4\n"), Tiles: []storage.LogTile{logTile("tile/0/000", 4, 0xa2)}})
	if st, err := s.LoadLogState(t.Context()); err != nil || st.Size != 4 || string(st.Checkpoint) != "checkpoint 4\n" {
		t.Errorf("LoadLogState after second append = %+v, %v; want size 4 and its checkpoint", st, err)
	}
}

func testLogConflict(t *testing.T, s storage.Store) {
	mustAppendLog(t, s, 0, storage.LogBatch{Size: 2, Checkpoint: []byte("cp2\n")})
	for _, prev := range []int64{0, 1, 3} {
		err := s.AppendLog(t.Context(), prev, storage.LogBatch{Size: prev + 5, Checkpoint: []byte("stale\n")})
		if !errors.Is(err, storage.ErrConflict) {
			t.Errorf("AppendLog from stale size %d at stored size 2: %v, want ErrConflict", prev, err)
		}
	}
}

func testLogConflictAtomic(t *testing.T, s storage.Store) {
	mustAppendLog(t, s, 0, storage.LogBatch{Size: 1, Checkpoint: []byte("cp1\n"), Tiles: []storage.LogTile{logTile("tile/0/000", 1, 1)}})
	err := s.AppendLog(t.Context(), 0, storage.LogBatch{
		Size:       300,
		Checkpoint: []byte("loser\n"),
		Tiles:      []storage.LogTile{logTile("tile/0/000", 256, 9), logTile("tile/0/001", 44, 9), logTile("tile/1/000", 1, 9)},
	})
	if !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("AppendLog from a stale size: %v, want ErrConflict", err)
	}
	if got := mustLogTile(t, s, "tile/0/000"); got.Width != 1 || got.Data[0] != 1 {
		t.Errorf("tile/0/000 after a conflicting append has width %d, first byte %d; want the original width 1", got.Width, got.Data[0])
	}
	for _, p := range []string{"tile/0/001", "tile/1/000"} {
		if _, err := s.GetLogTile(t.Context(), p); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("GetLogTile(%s) after a conflicting append: %v, want ErrNotFound", p, err)
		}
	}
	if st, err := s.LoadLogState(t.Context()); err != nil || st.Size != 1 || string(st.Checkpoint) != "cp1\n" {
		t.Errorf("LoadLogState after a conflicting append = %+v, %v; want size 1 unchanged", st, err)
	}
}

func testLogInvalidBatch(t *testing.T, s storage.Store) {
	cases := []struct {
		name string
		prev int64
		b    storage.LogBatch
	}{
		{"no growth", 0, storage.LogBatch{Size: 0, Checkpoint: []byte("cp\n")}},
		{"no checkpoint", 0, storage.LogBatch{Size: 1}},
		{"width zero", 0, storage.LogBatch{Size: 1, Checkpoint: []byte("cp\n"), Tiles: []storage.LogTile{{Path: "tile/0/000", Width: 0}}}},
		{"width 257", 0, storage.LogBatch{Size: 1, Checkpoint: []byte("cp\n"), Tiles: []storage.LogTile{logTile("tile/0/000", 257, 1)}}},
	}
	for _, c := range cases {
		if err := s.AppendLog(t.Context(), c.prev, c.b); err == nil || errors.Is(err, storage.ErrConflict) {
			t.Errorf("AppendLog(%s) = %v, want a non-conflict error", c.name, err)
		}
	}
	if st, err := s.LoadLogState(t.Context()); err != nil || st.Size != 0 {
		t.Errorf("LoadLogState after refused appends = %+v, %v; want size 0", st, err)
	}
}

func testLogTileWidening(t *testing.T, s storage.Store) {
	const p = "tile/0/x001/234"
	steps := []struct {
		width     int
		fill      byte
		wantWidth int
		wantFill  byte
	}{
		{width: 5, fill: 1, wantWidth: 5, wantFill: 1},
		{width: 9, fill: 2, wantWidth: 9, wantFill: 2},     // wider partial replaces
		{width: 3, fill: 3, wantWidth: 9, wantFill: 2},     // narrower is ignored
		{width: 256, fill: 4, wantWidth: 256, wantFill: 4}, // full replaces partial
		{width: 200, fill: 5, wantWidth: 256, wantFill: 4}, // a partial never replaces a full one
	}
	for i, st := range steps {
		prev := int64(i)
		mustAppendLog(t, s, prev, storage.LogBatch{Size: prev + 1, Checkpoint: fmt.Appendf(nil, "cp%d\n", i), Tiles: []storage.LogTile{logTile(p, st.width, st.fill)}})
		got := mustLogTile(t, s, p)
		if got.Width != st.wantWidth || len(got.Data) != 32*st.wantWidth || got.Data[0] != st.wantFill {
			t.Errorf("step %d (write width %d): stored width %d, %d bytes, fill %d; want width %d, fill %d",
				i, st.width, got.Width, len(got.Data), got.Data[0], st.wantWidth, st.wantFill)
		}
	}
}

func testLogTileMissing(t *testing.T, s storage.Store) {
	if _, err := s.GetLogTile(t.Context(), "tile/entries/000"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetLogTile on an empty log: %v, want ErrNotFound", err)
	}
}

// testLogConcurrentCAS races appenders that each read the state and try to
// grow it by one: for every size exactly one wins, and the stored tiles
// are the winners'.
func testLogConcurrentCAS(t *testing.T, s storage.Store) {
	const (
		workers = 8
		target  = 40
	)
	var (
		mu   sync.Mutex
		wins = make(map[int64]int) // new size -> worker
		wg   sync.WaitGroup
		errs = make(chan error, workers)
	)
	for w := range workers {
		wg.Go(func() {
			for {
				st, err := s.LoadLogState(t.Context())
				if err != nil {
					errs <- err
					return
				}
				if st.Size >= target {
					return
				}
				next := st.Size + 1
				err = s.AppendLog(t.Context(), st.Size, storage.LogBatch{
					Size:       next,
					Checkpoint: fmt.Appendf(nil, "cp %d by %d\n", next, w),
					Tiles:      []storage.LogTile{{Path: fmt.Sprintf("tile/entries/%03d", next), Width: 1, Data: []byte{byte(w)}}},
				})
				switch {
				case err == nil:
					mu.Lock()
					if prev, dup := wins[next]; dup {
						errs <- fmt.Errorf("size %d won by workers %d and %d", next, prev, w)
					}
					wins[next] = w
					mu.Unlock()
				case !errors.Is(err, storage.ErrConflict):
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(wins) != target {
		t.Fatalf("%d sizes won, want %d", len(wins), target)
	}
	for size, w := range wins {
		tile := mustLogTile(t, s, fmt.Sprintf("tile/entries/%03d", size))
		if !bytes.Equal(tile.Data, []byte{byte(w)}) {
			t.Errorf("tile for size %d holds %x, want the winner %d's", size, tile.Data, w)
		}
	}
	st, err := s.LoadLogState(t.Context())
	if err != nil || st.Size != target || string(st.Checkpoint) != fmt.Sprintf("cp %d by %d\n", target, wins[target]) {
		t.Errorf("final state %+v, %v; want size %d with the last winner's checkpoint", st, err, target)
	}
}
