package tlog_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	sumtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/sigil-pki/sigil/storage"
	"github.com/sigil-pki/sigil/tlog"
)

// bigBenchEnv enables the 10,000,000-entry proof benchmark, whose log
// takes minutes to build.
const bigBenchEnv = "SIGIL_BENCH_BIG"

const (
	proofBenchAppenders = 8192 // concurrent Append callers while building
	proofBenchSamples   = 10   // heap samples taken while building
	proofBenchVerified  = 64   // proofs of each kind verified before timing
)

// proofFixture is a log built once per process and shared by every run
// of BenchmarkProofs at its size.
type proofFixture struct {
	once sync.Once
	err  error

	dir  string
	db   *storage.DB
	log  *tlog.Log
	cp   tlog.Checkpoint
	took time.Duration
	// entryLen is the encoded size of the entries, which vary by a byte
	// or two with their sequence number.
	entryLen int
	heap     []heapSample
}

// heapSample is the heap after a garbage collection once entries had been
// appended.
type heapSample struct {
	entries   int64
	elapsed   time.Duration
	heapInuse uint64
	heapAlloc uint64
	sys       uint64
}

var (
	proofFixturesMu sync.Mutex
	proofFixtures   = map[int64]*proofFixture{}
)

func TestMain(m *testing.M) {
	code := m.Run()
	proofFixturesMu.Lock()
	for _, f := range proofFixtures {
		if f.log != nil {
			_ = f.log.Close()
		}
		if f.db != nil {
			_ = f.db.Close()
		}
		if f.dir != "" {
			_ = os.RemoveAll(f.dir)
		}
	}
	proofFixturesMu.Unlock()
	os.Exit(code)
}

// sharedProofLog returns the log of n entries, building it on first use.
func sharedProofLog(b *testing.B, n int64) *proofFixture {
	b.Helper()
	proofFixturesMu.Lock()
	f, ok := proofFixtures[n]
	if !ok {
		f = &proofFixture{}
		proofFixtures[n] = f
	}
	proofFixturesMu.Unlock()
	f.once.Do(func() { f.err = f.build(b, n) })
	if f.err != nil {
		b.Fatalf("building a log of %d entries: %v", n, f.err)
	}
	return f
}

// benchEntry is the i-th small entry appended by the build.
func benchEntry(i int64) tlog.Entry {
	return tlog.Entry{
		Kind:    tlog.KindSecretRead,
		Time:    baseTime.Add(time.Duration(i)),
		Actor:   "a",
		Subject: tlog.Subject{Detail: "n" + strconv.FormatInt(i, 10)},
	}
}

// build appends n entries through the sequencer on SQLite with many
// concurrent appenders, sampling the heap every n/proofBenchSamples
// entries, then checks the signed checkpoint.
func (f *proofFixture) build(b *testing.B, n int64) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "sigil-tlog-bench-")
	if err != nil {
		return err
	}
	f.dir = dir
	f.db, err = storage.Open(ctx, storage.Options{Backend: "sqlite", Path: filepath.Join(dir, "sigil.db")})
	if err != nil {
		return err
	}
	signer, err := noteSigner(testSKey)
	if err != nil {
		return err
	}
	f.log, err = tlog.New(ctx, tlog.Config{
		Store:      f.db,
		Signer:     signer,
		Origin:     testOrigin,
		BatchSize:  65536,
		BatchDelay: time.Millisecond,
	})
	if err != nil {
		return err
	}
	enc, err := benchEntry(n - 1).MarshalBinary()
	if err != nil {
		return err
	}
	f.entryLen = len(enc)

	step := max(n/proofBenchSamples, 1)
	milestones := make(chan int64, proofBenchSamples+1)
	sampled := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(sampled)
		for done := range milestones {
			elapsed := time.Since(start)
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			f.heap = append(f.heap, heapSample{entries: done, elapsed: elapsed, heapInuse: ms.HeapInuse, heapAlloc: ms.HeapAlloc, sys: ms.Sys})
		}
	}()

	var next, completed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range proofBenchAppenders {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				if _, err := f.log.Append(ctx, benchEntry(i)); err != nil {
					errOnce.Do(func() { firstErr = err })
					next.Store(n)
					return
				}
				if done := completed.Add(1); done%step == 0 {
					milestones <- done
				}
			}
		})
	}
	wg.Wait()
	f.took = time.Since(start)
	close(milestones)
	<-sampled
	if firstErr != nil {
		return firstErr
	}

	text, err := f.log.Checkpoint(ctx)
	if err != nil {
		return err
	}
	f.cp, err = tlog.VerifyCheckpoint(text, testVerifier(b))
	if err != nil {
		return err
	}
	if f.cp.Size != n {
		return fmt.Errorf("checkpoint size %d after appending %d", f.cp.Size, n)
	}
	return nil
}

func (f *proofFixture) report(b *testing.B) {
	b.Helper()
	n := f.cp.Size
	b.Logf("built %d entries of ~%d bytes in %v: %.0f entries/s (%d appenders, BatchSize 65536, BatchDelay 1ms, sqlite)",
		n, f.entryLen, f.took.Round(time.Millisecond), float64(n)/f.took.Seconds(), proofBenchAppenders)
	b.Logf("%12s %10s %14s %14s %10s", "entries", "elapsed", "HeapInuse MiB", "HeapAlloc MiB", "Sys MiB")
	for _, s := range f.heap {
		b.Logf("%12d %10v %14.1f %14.1f %10.1f", s.entries, s.elapsed.Round(time.Millisecond),
			mib(s.heapInuse), mib(s.heapAlloc), mib(s.sys))
	}
}

func mib(v uint64) float64 { return float64(v) / (1 << 20) }

func byteSlices(p [][32]byte) [][]byte {
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = p[i][:]
	}
	return out
}

// verifySample checks proofs for random indexes and sizes with an
// independent verifier, so that the timings below are of correct proofs.
func (f *proofFixture) verifySample(b *testing.B, rng *rand.Rand) {
	b.Helper()
	ctx := context.Background()
	size := f.cp.Size
	hasher := rfc6962.DefaultHasher
	hr := sumtlog.TileHashReader(sumtlog.Tree{N: size, Hash: f.cp.Root}, tileReader{ctx, f.log})
	for range proofBenchVerified {
		idx := rng.Int64N(size)
		_, raw, err := f.log.Entry(ctx, idx)
		if err != nil {
			b.Fatalf("Entry(%d): %v", idx, err)
		}
		p, err := f.log.InclusionProof(ctx, idx, size)
		if err != nil {
			b.Fatalf("InclusionProof(%d, %d): %v", idx, size, err)
		}
		if err := proof.VerifyInclusion(hasher, uint64(idx), uint64(size), hasher.HashLeaf(raw), byteSlices(p), f.cp.Root[:]); err != nil {
			b.Fatalf("inclusion proof of %d in %d does not verify: %v", idx, size, err)
		}

		from := 1 + rng.Int64N(size-1)
		p, err = f.log.ConsistencyProof(ctx, from, size)
		if err != nil {
			b.Fatalf("ConsistencyProof(%d, %d): %v", from, size, err)
		}
		old, err := sumtlog.TreeHash(from, hr)
		if err != nil {
			b.Fatalf("root of the tree of size %d: %v", from, err)
		}
		if err := proof.VerifyConsistency(hasher, uint64(from), uint64(size), byteSlices(p), old[:], f.cp.Root[:]); err != nil {
			b.Fatalf("consistency proof of %d with %d does not verify: %v", from, size, err)
		}
	}
	// A proof for another leaf must not verify: the check above has teeth.
	p, err := f.log.InclusionProof(ctx, 0, size)
	if err != nil {
		b.Fatalf("InclusionProof(0, %d): %v", size, err)
	}
	var pe proof.RootMismatchError
	if err := proof.VerifyInclusion(hasher, 0, uint64(size), hasher.HashLeaf([]byte("not logged")), byteSlices(p), f.cp.Root[:]); !errors.As(err, &pe) {
		b.Fatalf("inclusion proof of a leaf never logged: got %v, want a root mismatch", err)
	}
}

// BenchmarkProofs measures inclusion and consistency proofs against the
// whole tree of a log built through the sequencer on SQLite. The
// 10,000,000-entry log is built only when SIGIL_BENCH_BIG=1. The build
// sub-benchmark reports the build's rate and the heap in use (after a
// collection) at the first and last of ten samples taken as the log
// grew, which stays flat: the sequencer keeps only the right edge.
func BenchmarkProofs(b *testing.B) {
	for _, size := range []int64{1_000_000, 10_000_000} {
		b.Run(fmt.Sprintf("entries=%d", size), func(b *testing.B) {
			if size > 1_000_000 && os.Getenv(bigBenchEnv) != "1" {
				b.Skipf("set %s=1 to build a log of %d entries", bigBenchEnv, size)
			}
			f := sharedProofLog(b, size)
			f.report(b)
			rng := rand.New(rand.NewPCG(uint64(size), 1))
			f.verifySample(b, rng)
			ctx := context.Background()
			n := f.cp.Size

			// The build's figures, as metrics; ns/op is the build time per
			// entry. -v prints the heap table as well.
			b.Run("build", func(b *testing.B) {
				for b.Loop() {
				}
				var maxInuse uint64
				for _, s := range f.heap {
					maxInuse = max(maxInuse, s.heapInuse)
				}
				b.ReportMetric(float64(f.took.Nanoseconds())/float64(n), "ns/op")
				b.ReportMetric(float64(n)/f.took.Seconds(), "entries/s")
				b.ReportMetric(mib(f.heap[0].heapInuse), "heap-first-MiB")
				b.ReportMetric(mib(f.heap[len(f.heap)-1].heapInuse), "heap-last-MiB")
				b.ReportMetric(mib(maxInuse), "heap-max-MiB")
			})

			const draws = 1 << 12
			b.Run("inclusion", func(b *testing.B) {
				idx := make([]int64, draws)
				for i := range idx {
					idx[i] = rng.Int64N(n)
				}
				i := 0
				for b.Loop() {
					if _, err := f.log.InclusionProof(ctx, idx[i%draws], n); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			b.Run("consistency", func(b *testing.B) {
				from := make([]int64, draws)
				for i := range from {
					from[i] = 1 + rng.Int64N(n-1)
				}
				i := 0
				for b.Loop() {
					if _, err := f.log.ConsistencyProof(ctx, from[i%draws], n); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		})
	}
}
