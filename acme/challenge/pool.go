package challenge

import (
	"context"
	"sync"
)

// Pool runs jobs (validations, typically) on a fixed number of goroutines,
// so that a request handler can hand one off and answer at once, and a flood
// of challenge requests cannot open unbounded connections.
type Pool struct {
	ctx  context.Context
	jobs chan func(context.Context) // buffered to workers+queue: sends never block
	wg   sync.WaitGroup

	mu      sync.Mutex
	pending int // jobs accepted and not yet finished
	closed  bool
}

// NewPool starts workers goroutines (at least one) that run submitted jobs,
// each with ctx: cancel ctx to make running and queued jobs give up (a
// validation then returns a serverInternal Problem and its challenge should
// be retried later). Up to queue jobs (at least zero) may wait for a busy
// worker, so at most workers+queue are accepted and unfinished at once.
func NewPool(ctx context.Context, workers, queue int) *Pool {
	workers = max(workers, 1)
	queue = max(queue, 0)
	p := &Pool{ctx: ctx, jobs: make(chan func(context.Context), workers+queue)}
	for range workers {
		p.wg.Go(func() {
			for job := range p.jobs {
				job(p.ctx)
				p.mu.Lock()
				p.pending--
				p.mu.Unlock()
			}
		})
	}
	return p
}

// Submit hands job to the pool without blocking. It returns false, and job
// will not run, when workers+queue jobs are already unfinished or the pool
// is closed; the caller should then leave the challenge pending (or answer
// 503) rather than wait. job must not be nil.
func (p *Pool) Submit(job func(ctx context.Context)) bool {
	if job == nil {
		panic("challenge: Pool.Submit of a nil job")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.pending == cap(p.jobs) {
		return false
	}
	p.pending++
	p.jobs <- job
	return true
}

// Close stops accepting jobs, lets the queued and running ones finish, and
// returns when all have. It is safe to call more than once and from several
// goroutines; each call waits.
func (p *Pool) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.jobs)
	}
	p.mu.Unlock()
	p.wg.Wait()
}
