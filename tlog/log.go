package tlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"golang.org/x/mod/sumdb/note"
	sumtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/sigil-pki/sigil/storage"
)

// Sentinel errors that callers branch on with errors.Is.
var (
	// ErrPushback: too many entries are waiting to be sequenced; the
	// caller should fail its request and let the client retry later.
	ErrPushback = errors.New("tlog: too many entries waiting to be logged")
	// ErrClosed: the log has been closed.
	ErrClosed = errors.New("tlog: log closed")
	// ErrNotFound: the tile, entry or tree size is beyond the log.
	ErrNotFound = errors.New("tlog: not found")
)

// Store is the log's persistent state, shared by every Sigil server of a
// deployment. storage.DB implements it.
type Store interface {
	// LoadLogState returns the stored size and checkpoint; the zero state
	// (size 0) before the first append.
	LoadLogState(ctx context.Context) (storage.LogState, error)
	// AppendLog MUST either make all of b durable (tiles and state) and
	// return nil, or make none of it visible. It MUST return an error
	// wrapping storage.ErrConflict, and write nothing, when the stored size
	// is not prevSize. A stored tile MUST only be replaced by a wider one.
	AppendLog(ctx context.Context, prevSize int64, b storage.LogBatch) error
	// GetLogTile returns the widest tile stored at path (without the
	// partial suffix), or an error wrapping storage.ErrNotFound.
	GetLogTile(ctx context.Context, path string) (storage.LogTile, error)
}

// Config configures a Log.
type Config struct {
	// Store persists the tiles and checkpoints. Required.
	Store Store
	// Signer signs checkpoints: an Ed25519 note signer (see GenerateKey and
	// note.NewSigner) whose name is Origin. Required.
	Signer note.Signer
	// Origin is the checkpoint's origin line, e.g. "sigil.test/log".
	// Required; it must equal Signer.Name().
	Origin string
	// BatchSize is the most entries committed together. Default 1024.
	BatchSize int
	// BatchDelay is the longest an entry waits for others to join its
	// batch before the batch is committed. Default 2ms.
	BatchDelay time.Duration
	// MaxPending is how many entries may wait to be sequenced before
	// Append returns ErrPushback. Default 16*BatchSize.
	MaxPending int
	// MaxConflictRetries bounds how often a batch is rebuilt after another
	// server appended first. Default 64: a busy peer can win many races in
	// a row when this server is short of CPU, and each retry costs only a
	// reload and a short random pause.
	MaxConflictRetries int
	// Clock timestamps the entries' arrival for BatchDelay. Default time.Now.
	Clock func() time.Time
	// Logger receives commit failures and conflicts; never an entry's
	// content. Default: discard.
	Logger *slog.Logger
}

// Log sequences entries into the Merkle tree and reads the tree back.
// It is safe for concurrent use. Several Logs, in one process or on
// several servers, may append to one Store: the store's compare-and-swap
// orders them.
type Log struct {
	store      Store
	signer     note.Signer
	origin     string
	batchSize  int
	batchDelay time.Duration
	maxRetries int
	clock      func() time.Time
	log        *slog.Logger
	ctx        context.Context // for commits; never cancelled

	mu     sync.RWMutex
	closed bool
	queue  chan *request
	done   chan struct{}

	// Owned by the sequencing goroutine.
	edge  edge
	stale bool
}

type request struct {
	entry []byte
	at    time.Time
	done  chan result
}

type result struct {
	index int64
	err   error
}

// New loads the log's state and right edge from the store and starts
// sequencing. ctx bounds the load only.
func New(ctx context.Context, cfg Config) (*Log, error) {
	if cfg.Store == nil || cfg.Signer == nil || cfg.Origin == "" {
		return nil, errors.New("creating log: Store, Signer and Origin are required")
	}
	if cfg.Signer.Name() != cfg.Origin {
		return nil, fmt.Errorf("creating log: signer name %q is not the origin %q", cfg.Signer.Name(), cfg.Origin)
	}
	l := &Log{
		store:      cfg.Store,
		signer:     cfg.Signer,
		origin:     cfg.Origin,
		batchSize:  cfg.BatchSize,
		batchDelay: cfg.BatchDelay,
		maxRetries: cfg.MaxConflictRetries,
		clock:      cfg.Clock,
		log:        cfg.Logger,
		ctx:        context.WithoutCancel(ctx),
		done:       make(chan struct{}),
	}
	if l.batchSize <= 0 {
		l.batchSize = 1024
	}
	if l.batchDelay <= 0 {
		l.batchDelay = 2 * time.Millisecond
	}
	if l.maxRetries <= 0 {
		l.maxRetries = 64
	}
	if l.clock == nil {
		l.clock = time.Now
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	maxPending := cfg.MaxPending
	if maxPending <= 0 {
		maxPending = 16 * l.batchSize
	}
	if err := l.reload(ctx); err != nil {
		return nil, fmt.Errorf("creating log: %w", err)
	}
	l.queue = make(chan *request, maxPending)
	go l.run()
	return l, nil
}

// Append logs e and returns its index once the batch holding it is
// durable: its entry, the tiles covering it and a signed checkpoint that
// commits to it, written in one store transaction. An error means the
// caller must not act on what e records: when the batch fails, every
// entry in it gets the error. If ctx ends first Append returns ctx's
// error; the entry may still be logged.
func (l *Log) Append(ctx context.Context, e Entry) (int64, error) {
	b, err := e.MarshalBinary()
	if err != nil {
		return 0, fmt.Errorf("appending %s entry: %w", e.Kind, err)
	}
	req := &request{entry: b, at: l.clock(), done: make(chan result, 1)}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return 0, fmt.Errorf("appending %s entry: %w", e.Kind, ErrClosed)
	}
	select {
	case l.queue <- req:
		l.mu.RUnlock()
	default:
		l.mu.RUnlock()
		return 0, fmt.Errorf("appending %s entry: %w", e.Kind, ErrPushback)
	}
	select {
	case r := <-req.done:
		if r.err != nil {
			return 0, fmt.Errorf("appending %s entry: %w", e.Kind, r.err)
		}
		return r.index, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("appending %s entry: %w", e.Kind, ctx.Err())
	}
}

// Close stops accepting entries, commits those already accepted, and
// returns when every one has been answered. It is safe to call more
// than once.
func (l *Log) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.queue)
	}
	l.mu.Unlock()
	<-l.done
	return nil
}

// run is the sequencer: it gathers requests into batches, by size and by
// time, and commits them one after another.
func (l *Log) run() {
	defer close(l.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	batch := make([]*request, 0, l.batchSize)
	for {
		first, ok := <-l.queue
		if !ok {
			return
		}
		batch = append(batch[:0], first)
		deadline := first.at.Add(l.batchDelay)
	fill:
		for len(batch) < l.batchSize {
			select {
			case r, ok := <-l.queue:
				if !ok {
					break fill
				}
				batch = append(batch, r)
				continue
			default:
			}
			wait := deadline.Sub(l.clock())
			if wait <= 0 {
				break
			}
			timer.Reset(wait)
			select {
			case r, ok := <-l.queue:
				timer.Stop()
				if !ok {
					break fill
				}
				batch = append(batch, r)
			case <-timer.C:
				break fill
			}
		}
		l.commit(batch)
		clear(batch)
	}
}

// commit makes batch durable and answers its callers. On a conflict with
// another appender it reloads the right edge and rebuilds the batch on
// top, a bounded number of times.
func (l *Log) commit(batch []*request) {
	entries := make([][]byte, len(batch))
	for i, r := range batch {
		entries[i] = r.entry
	}
	err := l.commitEntries(entries)
	for i, r := range batch {
		if err != nil {
			r.done <- result{err: err}
		} else {
			r.done <- result{index: l.edge.size - int64(len(batch)) + int64(i)}
		}
	}
}

func (l *Log) commitEntries(entries [][]byte) error {
	var err error
	for attempt := 0; attempt <= l.maxRetries; attempt++ {
		if l.stale {
			if err = l.reload(l.ctx); err != nil {
				break
			}
		}
		var (
			next  edge
			tiles []storage.LogTile
			cp    []byte
		)
		next, tiles, err = l.edge.extend(entries)
		if err != nil {
			break
		}
		cp, err = signCheckpoint(Checkpoint{Origin: l.origin, Size: next.size, Root: next.root()}, l.signer)
		if err != nil {
			break
		}
		err = l.store.AppendLog(l.ctx, l.edge.size, storage.LogBatch{Size: next.size, Checkpoint: cp, Tiles: tiles})
		if err == nil {
			l.edge = next
			return nil
		}
		// Whatever happened, the stored state may differ from ours now (a
		// failed commit may still have landed): read it again first.
		l.stale = true
		if !errors.Is(err, storage.ErrConflict) {
			break
		}
		l.log.Debug("log append lost a race; rebuilding on the new size", "size", l.edge.size, "attempt", attempt+1)
		// A random pause, growing with the attempts up to 20 ms, so that
		// writers that keep colliding fall out of step instead of one
		// starving.
		time.Sleep(time.Duration(mrand.Int64N(int64(min(attempt+1, 10) * int(2*time.Millisecond)))))
	}
	l.log.Error("committing log batch failed", "entries", len(entries), "size", l.edge.size, "err", err)
	return fmt.Errorf("committing a batch of %d entries: %w", len(entries), err)
}

// reload reads the size and right edge from the store and checks them
// against the stored checkpoint.
func (l *Log) reload(ctx context.Context) error {
	st, err := l.store.LoadLogState(ctx)
	if err != nil {
		return fmt.Errorf("reloading log state: %w", err)
	}
	e := edge{size: st.Size}
	for level := 0; level <= maxLevel/tileHeight && st.Size>>(tileHeight*level) > 0; level++ {
		count := st.Size >> (tileHeight * level)
		w := int(count % tileWidth)
		var data []byte
		if w > 0 {
			t, err := l.store.GetLogTile(ctx, TilePath{Level: level, Index: count / tileWidth}.base())
			if err != nil {
				return fmt.Errorf("reloading right edge at level %d: %w", level, err)
			}
			if t.Width < w || len(t.Data) < w*hashSize {
				return fmt.Errorf("reloading right edge: tile %s holds %d hashes, want at least %d", t.Path, t.Width, w)
			}
			data = bytes.Clone(t.Data[:w*hashSize])
		}
		e.hashes = append(e.hashes, data)
	}
	if w := int(st.Size % tileWidth); w > 0 {
		t, err := l.store.GetLogTile(ctx, TilePath{Entries: true, Index: st.Size / tileWidth}.base())
		if err != nil {
			return fmt.Errorf("reloading the partial entry bundle: %w", err)
		}
		b, err := bundlePrefix(t.Data, w)
		if err != nil {
			return fmt.Errorf("reloading the partial entry bundle %s: %w", t.Path, err)
		}
		e.bundle = bytes.Clone(b)
	}
	if st.Size > 0 {
		cp, err := checkpointBody(st.Checkpoint)
		if err != nil {
			return fmt.Errorf("reloading log state: %w", err)
		}
		if cp.Origin != l.origin || cp.Size != st.Size || cp.Root != e.root() {
			return fmt.Errorf("reloading log state: stored checkpoint (origin %q, size %d) does not match the stored tiles of %q at size %d",
				cp.Origin, cp.Size, l.origin, st.Size)
		}
	}
	l.edge = e
	l.stale = false
	return nil
}

// checkpointBody parses the body of a signed note without checking its
// signatures: for state this log wrote itself.
func checkpointBody(signed []byte) (Checkpoint, error) {
	i := bytes.Index(signed, []byte("\n\n"))
	if i < 0 {
		return Checkpoint{}, fmt.Errorf("checkpoint note has no signature block: %w", ErrMalformedCheckpoint)
	}
	return ParseCheckpoint(signed[:i+1])
}

// edge is the right edge of the tree: all that an append needs besides
// the new entries.
type edge struct {
	size int64
	// hashes[L] is the partial hash tile at the right edge of level L:
	// the last (size >> 8L) % 256 hashes of tree level 8L.
	hashes [][]byte
	// bundle is the partial entry bundle: the last size % 256 entries.
	bundle []byte
}

// extend returns the edge after appending entries, and every tile and
// entry bundle the append changed, each complete up to the new size.
func (e edge) extend(entries [][]byte) (edge, []storage.LogTile, error) {
	next := edge{size: e.size + int64(len(entries))}
	if next.size < e.size {
		return edge{}, nil, errors.New("log size overflows")
	}
	var tiles []storage.LogTile
	add := func(p TilePath, width int, data []byte) {
		tiles = append(tiles, storage.LogTile{Path: p.base(), Width: width, Data: data})
	}

	bundle := bytes.Clone(e.bundle)
	n := e.size
	leaves := make([][]byte, len(entries))
	for i, ent := range entries {
		if len(ent) > MaxEntrySize {
			return edge{}, nil, fmt.Errorf("entry of %d bytes is over the limit of %d", len(ent), MaxEntrySize)
		}
		leaves[i] = hasher.HashLeaf(ent)
		bundle = appendBundleEntry(bundle, ent)
		n++
		if n%tileWidth == 0 {
			add(TilePath{Entries: true, Index: n/tileWidth - 1}, tileWidth, bundle)
			bundle = nil
		}
	}
	if w := int(n % tileWidth); w > 0 {
		add(TilePath{Entries: true, Index: n / tileWidth}, w, bundle)
	}
	next.bundle = bundle

	nodes := leaves
	count := e.size // nodes at this level before the append
	for level := 0; count > 0 || len(nodes) > 0; level++ {
		var cur []byte
		if level < len(e.hashes) {
			cur = bytes.Clone(e.hashes[level])
		}
		if len(nodes) == 0 {
			next.hashes = append(next.hashes, cur)
			count >>= tileHeight
			continue
		}
		var up [][]byte
		k := count
		for _, h := range nodes {
			cur = append(cur, h...)
			k++
			if k%tileWidth == 0 {
				add(TilePath{Level: level, Index: k/tileWidth - 1}, tileWidth, cur)
				up = append(up, subtreeRoot(splitHashes(cur)))
				cur = nil
			}
		}
		if w := int(k % tileWidth); w > 0 {
			add(TilePath{Level: level, Index: k / tileWidth}, w, cur)
		}
		next.hashes = append(next.hashes, cur)
		nodes = up
		count >>= tileHeight
	}
	return next, tiles, nil
}

// root returns the tree's root hash: the compact range of [0, size) is
// made of the perfect subtrees within the partial tiles of the edge,
// highest level first.
func (e edge) root() [32]byte {
	var out [32]byte
	if e.size == 0 {
		copy(out[:], hasher.EmptyRoot())
		return out
	}
	var hashes [][]byte
	for level := len(e.hashes) - 1; level >= 0; level-- {
		tile := splitHashes(e.hashes[level])
		for w := len(tile); w > 0; {
			chunk := 1 << (bits.Len(uint(w)) - 1)
			hashes = append(hashes, subtreeRoot(tile[:chunk]))
			tile, w = tile[chunk:], w-chunk
		}
	}
	rf := compact.RangeFactory{Hash: hasher.HashChildren}
	r, err := rf.NewRange(0, uint64(e.size), hashes)
	if err != nil {
		// The edge is built so that its subtrees are exactly the range's.
		panic(fmt.Sprintf("tlog: right edge at size %d is inconsistent: %v", e.size, err))
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		panic(fmt.Sprintf("tlog: right edge at size %d has no root: %v", e.size, err))
	}
	copy(out[:], root)
	return out
}

// Checkpoint returns the latest signed checkpoint in the store, which may
// have been written by another server. Before the first append it is a
// freshly signed checkpoint of the empty tree.
func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) {
	st, err := l.store.LoadLogState(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading checkpoint: %w", err)
	}
	if st.Size == 0 {
		return signCheckpoint(Checkpoint{Origin: l.origin, Size: 0, Root: edge{}.root()}, l.signer)
	}
	return st.Checkpoint, nil
}

// ReadTile returns a hash tile or an entry bundle. A partial request of
// width W gets the first W hashes or entries of the stored tile, however
// wide; a tile the tree has not reached is ErrNotFound.
func (l *Log) ReadTile(ctx context.Context, p TilePath) ([]byte, error) {
	t, err := l.store.GetLogTile(ctx, p.base())
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("reading tile %s: %w", p, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading tile %s: %w", p, err)
	}
	want := p.Width
	if want <= 0 || want > tileWidth {
		want = tileWidth
	}
	if t.Width < want {
		return nil, fmt.Errorf("reading tile %s: only %d stored: %w", p, t.Width, ErrNotFound)
	}
	if p.Entries {
		data, err := bundlePrefix(t.Data, want)
		if err != nil {
			return nil, fmt.Errorf("reading tile %s: %w", p, err)
		}
		return data, nil
	}
	if len(t.Data) < want*hashSize {
		return nil, fmt.Errorf("reading tile %s: stored tile is %d bytes for width %d", p, len(t.Data), t.Width)
	}
	return t.Data[:want*hashSize], nil
}

// hashReader reads stored hashes, in golang.org/x/mod/sumdb/tlog's
// numbering, through the tiles; each tile is read once per call.
func (l *Log) hashReader(ctx context.Context) sumtlog.HashReaderFunc {
	return func(indexes []int64) ([]sumtlog.Hash, error) {
		type key struct {
			level int
			index int64
		}
		tiles := make(map[key]storage.LogTile)
		out := make([]sumtlog.Hash, len(indexes))
		for i, idx := range indexes {
			t := sumtlog.TileForIndex(tileHeight, idx)
			k := key{t.L, t.N}
			stored, ok := tiles[k]
			if !ok {
				var err error
				stored, err = l.store.GetLogTile(ctx, TilePath{Level: t.L, Index: t.N}.base())
				if errors.Is(err, storage.ErrNotFound) {
					return nil, fmt.Errorf("reading hash %d: %w", idx, ErrNotFound)
				}
				if err != nil {
					return nil, fmt.Errorf("reading hash %d: %w", idx, err)
				}
				tiles[k] = stored
			}
			if stored.Width < t.W || len(stored.Data) < t.W*hashSize {
				return nil, fmt.Errorf("reading hash %d: tile %s holds %d hashes: %w", idx, stored.Path, stored.Width, ErrNotFound)
			}
			h, err := sumtlog.HashFromTile(t, stored.Data, idx)
			if err != nil {
				return nil, fmt.Errorf("reading hash %d: %w", idx, err)
			}
			out[i] = h
		}
		return out, nil
	}
}

// size returns the stored size, which may include other servers' appends.
func (l *Log) size(ctx context.Context) (int64, error) {
	st, err := l.store.LoadLogState(ctx)
	if err != nil {
		return 0, err
	}
	return st.Size, nil
}

// InclusionProof returns the RFC 6962 inclusion proof of entry index in
// the tree of the given size, which must not exceed the stored size.
func (l *Log) InclusionProof(ctx context.Context, index, size int64) ([][32]byte, error) {
	cur, err := l.size(ctx)
	if err != nil {
		return nil, fmt.Errorf("proving inclusion of %d in %d: %w", index, size, err)
	}
	if index < 0 || index >= size || size > cur {
		return nil, fmt.Errorf("proving inclusion of %d in %d: log size is %d: %w", index, size, cur, ErrNotFound)
	}
	p, err := sumtlog.ProveRecord(size, index, l.hashReader(ctx))
	if err != nil {
		return nil, fmt.Errorf("proving inclusion of %d in %d: %w", index, size, err)
	}
	return hashesOut(p), nil
}

// ConsistencyProof returns the RFC 6962 proof that the tree of size from
// is a prefix of the tree of size to. It is empty when from is 0 or equals
// to.
func (l *Log) ConsistencyProof(ctx context.Context, from, to int64) ([][32]byte, error) {
	cur, err := l.size(ctx)
	if err != nil {
		return nil, fmt.Errorf("proving consistency of %d with %d: %w", from, to, err)
	}
	if from < 0 || from > to || to > cur {
		return nil, fmt.Errorf("proving consistency of %d with %d: log size is %d: %w", from, to, cur, ErrNotFound)
	}
	if from == 0 || from == to {
		return [][32]byte{}, nil
	}
	p, err := sumtlog.ProveTree(to, from, l.hashReader(ctx))
	if err != nil {
		return nil, fmt.Errorf("proving consistency of %d with %d: %w", from, to, err)
	}
	return hashesOut(p), nil
}

func hashesOut(p []sumtlog.Hash) [][32]byte {
	out := make([][32]byte, len(p))
	for i, h := range p {
		out[i] = h
	}
	return out
}

// Entry returns the entry at index, parsed and as stored.
func (l *Log) Entry(ctx context.Context, index int64) (Entry, []byte, error) {
	cur, err := l.size(ctx)
	if err != nil {
		return Entry{}, nil, fmt.Errorf("reading entry %d: %w", index, err)
	}
	if index < 0 || index >= cur {
		return Entry{}, nil, fmt.Errorf("reading entry %d: log size is %d: %w", index, cur, ErrNotFound)
	}
	t, err := l.store.GetLogTile(ctx, TilePath{Entries: true, Index: index / tileWidth}.base())
	if err != nil {
		return Entry{}, nil, fmt.Errorf("reading entry %d: %w", index, err)
	}
	entries, err := splitBundle(t.Data)
	if err != nil {
		return Entry{}, nil, fmt.Errorf("reading entry %d: %w", index, err)
	}
	i := int(index % tileWidth)
	if i >= len(entries) {
		return Entry{}, nil, fmt.Errorf("reading entry %d: bundle holds %d: %w", index, len(entries), ErrNotFound)
	}
	raw := bytes.Clone(entries[i])
	e, err := ParseEntry(raw)
	if err != nil {
		return Entry{}, nil, fmt.Errorf("reading entry %d: %w", index, err)
	}
	return e, raw, nil
}
