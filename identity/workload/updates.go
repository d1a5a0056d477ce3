package workload

import "sync"

// Broadcast is an Updates whose Notify wakes every waiter at once: each
// Changed channel is closed by the next Notify and then replaced. Waking
// costs one close however many streams wait. The zero value is ready.
type Broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

// Changed implements Updates.
func (b *Broadcast) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

// Notify wakes everyone waiting on a channel from Changed.
func (b *Broadcast) Notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}
