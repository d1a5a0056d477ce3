package server

import (
	"maps"
	"slices"
	"sync"

	"github.com/sigil-pki/sigil/identity/agentapi"
	"github.com/sigil-pki/sigil/identity/entry"
)

// subQueue bounds the messages waiting for one sync stream; a stream that
// falls this far behind is dropped and its agent reconnects for a full set.
const subQueue = 256

// agentHub keeps the registration entries by ParentID (an agent's SPIFFE
// ID, or a node selector parent) and the open sync streams, each of which
// receives the entries of its agent's parents. Each change of the entry
// snapshot becomes one delta for each stream it concerns; other streams
// hear nothing.
type agentHub struct {
	mu       sync.Mutex
	byParent map[string]map[string]entry.Entry
	subs     map[string]map[*agentSub]struct{}
}

// agentSub is one open sync stream. ch is closed when the hub drops the
// stream: because it fell behind, the server is stopping, or (evicted
// set) its agent was evicted.
type agentSub struct {
	parents []string
	ch      chan *agentapi.SyncMessage
	evicted bool
	closed  bool
}

// update replaces the snapshot with all and queues a delta for every
// stream whose entries changed.
func (h *agentHub) update(all []entry.Entry) {
	next := make(map[string]map[string]entry.Entry)
	for _, e := range all {
		if e.ParentID == "" {
			continue
		}
		m := next[e.ParentID]
		if m == nil {
			m = make(map[string]entry.Entry)
			next[e.ParentID] = m
		}
		m[e.ID] = e
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.byParent
	h.byParent = next
	changed := map[string]*agentapi.SyncMessage{}
	for parent := range h.subs {
		if msg := delta(old[parent], next[parent]); msg != nil {
			changed[parent] = msg
		}
	}
	h.fanOutLocked(changed)
}

// apply applies one change (prev nil for a create, next nil for a
// delete) to the one or two parents it concerns and queues their deltas.
func (h *agentHub) apply(prev, next *entry.Entry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byParent == nil {
		h.byParent = make(map[string]map[string]entry.Entry)
	}
	changed := map[string]*agentapi.SyncMessage{}
	edit := func(parent string, f func(m map[string]entry.Entry)) {
		if parent == "" {
			return
		}
		before := h.byParent[parent]
		m := maps.Clone(before)
		if m == nil {
			m = make(map[string]entry.Entry)
		}
		f(m)
		if len(m) == 0 {
			delete(h.byParent, parent)
		} else {
			h.byParent[parent] = m
		}
		if msg := delta(before, m); msg != nil {
			changed[parent] = msg
		}
	}
	if prev != nil && (next == nil || prev.ParentID != next.ParentID) {
		edit(prev.ParentID, func(m map[string]entry.Entry) { delete(m, prev.ID) })
	}
	if next != nil {
		edit(next.ParentID, func(m map[string]entry.Entry) { m[next.ID] = *next })
	}
	h.fanOutLocked(changed)
}

// fanOutLocked sends each stream one delta merging the changes of its
// parents, with the digest of all its entries.
func (h *agentHub) fanOutLocked(changed map[string]*agentapi.SyncMessage) {
	merged := map[*agentSub]*agentapi.SyncMessage{}
	for parent, msg := range changed {
		for sub := range h.subs[parent] {
			m := merged[sub]
			if m == nil {
				m = &agentapi.SyncMessage{Kind: agentapi.KindDelta}
				merged[sub] = m
			}
			m.Upserts = append(m.Upserts, msg.Upserts...)
			m.Deleted = append(m.Deleted, msg.Deleted...)
		}
	}
	for sub, m := range merged {
		m.Digest = h.digestLocked(sub.parents)
		h.sendLocked(sub, m)
	}
}

// digestLocked is the digest of the entries of all the parents.
func (h *agentHub) digestLocked(parents []string) string {
	revs := map[string]int64{}
	for _, p := range parents {
		for id, e := range h.byParent[p] {
			revs[id] = e.Revision
		}
	}
	return agentapi.Digest(revs)
}

// delta returns the message that turns before into after, or nil when
// they hold the same entries at the same revisions.
func delta(before, after map[string]entry.Entry) *agentapi.SyncMessage {
	m := &agentapi.SyncMessage{Kind: agentapi.KindDelta}
	for id, e := range after {
		if o, ok := before[id]; !ok || o.Revision != e.Revision {
			m.Upserts = append(m.Upserts, agentapi.FromEntry(e))
		}
	}
	for id := range before {
		if _, ok := after[id]; !ok {
			m.Deleted = append(m.Deleted, id)
		}
	}
	if len(m.Upserts) == 0 && len(m.Deleted) == 0 {
		return nil
	}
	return m
}

// sendLocked queues msg for sub, or drops sub when its queue is full.
func (h *agentHub) sendLocked(sub *agentSub, msg *agentapi.SyncMessage) {
	select {
	case sub.ch <- msg:
	default:
		h.dropLocked(sub)
	}
}

func (h *agentHub) dropLocked(sub *agentSub) {
	if sub.closed {
		return
	}
	sub.closed = true
	for _, p := range sub.parents {
		delete(h.subs[p], sub)
		if len(h.subs[p]) == 0 {
			delete(h.subs, p)
		}
	}
	close(sub.ch)
}

// subscribe opens a stream receiving the entries of parents (the agent's
// SPIFFE ID first) and returns it with the full message (without trust)
// that must be sent first.
func (h *agentHub) subscribe(parents []string) (*agentSub, *agentapi.SyncMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sub := &agentSub{parents: slices.Clone(parents), ch: make(chan *agentapi.SyncMessage, subQueue)}
	if h.subs == nil {
		h.subs = make(map[string]map[*agentSub]struct{})
	}
	full := &agentapi.SyncMessage{Kind: agentapi.KindFull, Parents: sub.parents, Digest: h.digestLocked(parents)}
	for _, p := range parents {
		if h.subs[p] == nil {
			h.subs[p] = make(map[*agentSub]struct{})
		}
		h.subs[p][sub] = struct{}{}
		for _, e := range h.byParent[p] {
			full.Upserts = append(full.Upserts, agentapi.FromEntry(e))
		}
	}
	return sub, full
}

// unsubscribe forgets a stream (a no-op once the hub dropped it).
func (h *agentHub) unsubscribe(sub *agentSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropLocked(sub)
}

// reconcile queues a digest message for sub behind any queued delta.
func (h *agentHub) reconcile(sub *agentSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sub.closed {
		return
	}
	h.sendLocked(sub, &agentapi.SyncMessage{Kind: agentapi.KindReconcile, Digest: h.digestLocked(sub.parents)})
}

// evict ends every stream of the agent with an eviction.
func (h *agentHub) evict(agentID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs[agentID] {
		if sub.parents[0] == agentID {
			sub.evicted = true
			h.dropLocked(sub)
		}
	}
}

// reopen ends the agent's streams without an eviction, so that the agent
// reconnects and subscribes to its current parents (after it attested
// again, possibly with other node selectors).
func (h *agentHub) reopen(agentID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs[agentID] {
		if sub.parents[0] == agentID {
			h.dropLocked(sub)
		}
	}
}

// closeAll ends every open stream (the server is shutting down); agents
// reconnect, to this node when it is back or to another.
func (h *agentHub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, subs := range h.subs {
		for sub := range subs {
			h.dropLocked(sub)
		}
	}
}

// entry returns the entry with the ID if one of parents has it.
func (h *agentHub) entry(parents []string, id string) (entry.Entry, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range parents {
		if e, ok := h.byParent[p][id]; ok {
			return e, true
		}
	}
	return entry.Entry{}, false
}
