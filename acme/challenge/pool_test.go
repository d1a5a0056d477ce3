package challenge_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/acme/challenge"
)

// waitFor polls cond until it holds, failing t after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPoolBoundsConcurrency(t *testing.T) {
	const workers, queue = 3, 2
	p := challenge.NewPool(t.Context(), workers, queue)
	release := make(chan struct{})
	var running, peak, done atomic.Int32
	job := func(ctx context.Context) {
		n := running.Add(1)
		for {
			old := peak.Load()
			if n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		<-release
		running.Add(-1)
		done.Add(1)
	}

	for i := range workers {
		if !p.Submit(job) {
			t.Fatalf("Submit %d refused with idle workers", i)
		}
	}
	waitFor(t, "every worker to be busy", func() bool { return running.Load() == workers })
	for i := range queue {
		if !p.Submit(job) {
			t.Fatalf("Submit refused with %d of %d queue slots used", i, queue)
		}
	}
	if p.Submit(job) {
		t.Fatal("Submit accepted a job with every worker busy and the queue full")
	}
	if got := running.Load(); got != workers {
		t.Errorf("%d jobs running, want %d", got, workers)
	}

	close(release)
	p.Close()
	if got := done.Load(); got != workers+queue {
		t.Errorf("%d jobs done after Close, want %d", got, workers+queue)
	}
	if got := peak.Load(); got != workers {
		t.Errorf("peak concurrency %d, want %d", got, workers)
	}
	if p.Submit(job) {
		t.Error("Submit after Close accepted a job")
	}
	p.Close() // a second Close is harmless
}

func TestPoolCloseWaits(t *testing.T) {
	p := challenge.NewPool(t.Context(), 1, 1)
	release := make(chan struct{})
	var finished atomic.Bool
	started := make(chan struct{})
	if !p.Submit(func(ctx context.Context) { close(started); <-release; finished.Store(true) }) {
		t.Fatal("Submit refused")
	}
	<-started
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	// Once Submit is refused, Close has begun; the job is still blocked.
	waitFor(t, "Close to stop intake", func() bool { return !p.Submit(func(context.Context) {}) })
	select {
	case <-closed:
		t.Fatal("Close returned while a job was running")
	default:
	}
	close(release)
	<-closed
	if !finished.Load() {
		t.Error("Close returned before the job finished")
	}
}

func TestPoolCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	p := challenge.NewPool(ctx, 2, 4)
	var cancelled atomic.Int32
	for range 6 {
		if !p.Submit(func(ctx context.Context) {
			<-ctx.Done()
			if errors.Is(ctx.Err(), context.Canceled) {
				cancelled.Add(1)
			}
		}) {
			t.Fatal("Submit refused")
		}
	}
	cancel()
	p.Close()
	if got := cancelled.Load(); got != 6 {
		t.Errorf("%d jobs saw the cancellation, want 6", got)
	}
}

func TestPoolZeroQueue(t *testing.T) {
	p := challenge.NewPool(t.Context(), 1, 0)
	defer p.Close()
	release := make(chan struct{})
	if !p.Submit(func(context.Context) { <-release }) {
		t.Fatal("Submit refused with the only worker idle")
	}
	if p.Submit(func(context.Context) {}) {
		t.Error("Submit with no queue accepted a job while the only worker is busy")
	}
	close(release)
	waitFor(t, "the worker to be free again", func() bool { return p.Submit(func(context.Context) {}) })
}

// TestPoolRunsValidations is the intended use: validations off the request
// path, results reported back.
func TestPoolRunsValidations(t *testing.T) {
	a := newApplicant(t)
	v := newValidator(t, challenge.Config{HTTPPort: a.httpPort, LookupIP: lookupTest, AllowLoopback: true})
	p := challenge.NewPool(t.Context(), 4, 16)
	results := make(chan *challenge.Problem, 16)
	for i := range 16 {
		tok := token
		if i%2 == 1 {
			tok = "wrong"
		}
		if !p.Submit(func(ctx context.Context) {
			results <- v.HTTP01(ctx, challenge.Identifier{Type: "dns", Value: "web.example.test"}, tok, keyAuth)
		}) {
			t.Fatalf("Submit %d refused", i)
		}
	}
	p.Close()
	close(results)
	ok, failed := 0, 0
	for r := range results {
		if r == nil {
			ok++
		} else {
			failed++
		}
	}
	if ok != 8 || failed != 8 {
		t.Errorf("%d succeeded and %d failed, want 8 and 8", ok, failed)
	}
}
