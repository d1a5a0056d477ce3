package server

import (
	"maps"
	"sync"

	"github.com/sigil-pki/sigil/identity/agentapi"
	"github.com/sigil-pki/sigil/identity/entry"
)

// subQueue bounds the messages waiting for one sync stream; a stream that
// falls this far behind is dropped and its agent reconnects for a full set.
const subQueue = 256

// agentHub keeps every agent's registration entries (those whose ParentID
// is the agent's SPIFFE ID) and the open sync streams, and turns each
// change of the entry snapshot into one delta per affected agent. Only
// agents whose entries changed hear of a change.
type agentHub struct {
	mu       sync.Mutex
	byParent map[string]*parentEntries
	subs     map[string]map[*agentSub]struct{}
}

// parentEntries are one agent's entries and their digest.
type parentEntries struct {
	entries map[string]entry.Entry
	digest  string
}

func newParentEntries(m map[string]entry.Entry) *parentEntries {
	revs := make(map[string]int64, len(m))
	for id, e := range m {
		revs[id] = e.Revision
	}
	return &parentEntries{entries: m, digest: agentapi.Digest(revs)}
}

// emptyDigest is the digest of an agent without entries.
var emptyDigest = agentapi.Digest(nil)

// agentSub is one open sync stream. ch is closed when the hub drops the
// stream: because it fell behind, or (evicted set) because its agent was
// evicted.
type agentSub struct {
	ch      chan *agentapi.SyncMessage
	evicted bool
}

// update replaces the snapshot with all and queues a delta for every
// subscribed agent whose entries changed.
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
	h.byParent = make(map[string]*parentEntries, len(next))
	for parent, m := range next {
		if prev := old[parent]; prev != nil && sameEntries(prev.entries, m) {
			h.byParent[parent] = prev
			continue
		}
		h.byParent[parent] = newParentEntries(m)
	}
	for parent, subs := range h.subs {
		var before, after map[string]entry.Entry
		if p := old[parent]; p != nil {
			before = p.entries
		}
		cur := h.byParent[parent]
		if cur != nil {
			after = cur.entries
		}
		if cur != nil && old[parent] == cur {
			continue
		}
		msg := delta(before, after)
		if msg == nil {
			continue
		}
		msg.Digest = emptyDigest
		if cur != nil {
			msg.Digest = cur.digest
		}
		for sub := range subs {
			h.sendLocked(parent, sub, msg)
		}
	}
}

// apply applies one change (prev nil for a create, next nil for a
// delete) to the agents it concerns, queueing a delta for each of their
// streams; other agents are not touched.
func (h *agentHub) apply(prev, next *entry.Entry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byParent == nil {
		h.byParent = make(map[string]*parentEntries)
	}
	change := func(parent string, edit func(m map[string]entry.Entry)) {
		if parent == "" {
			return
		}
		old := h.byParent[parent]
		m := make(map[string]entry.Entry)
		if old != nil {
			m = maps.Clone(old.entries)
		}
		edit(m)
		cur := newParentEntries(m)
		if len(m) == 0 {
			delete(h.byParent, parent)
		} else {
			h.byParent[parent] = cur
		}
		var before map[string]entry.Entry
		if old != nil {
			before = old.entries
		}
		msg := delta(before, m)
		if msg == nil {
			return
		}
		msg.Digest = cur.digest
		for sub := range h.subs[parent] {
			h.sendLocked(parent, sub, msg)
		}
	}
	if prev != nil && (next == nil || prev.ParentID != next.ParentID) {
		change(prev.ParentID, func(m map[string]entry.Entry) { delete(m, prev.ID) })
	}
	if next != nil {
		change(next.ParentID, func(m map[string]entry.Entry) { m[next.ID] = *next })
	}
}

// sameEntries reports whether two entry sets hold the same IDs at the same
// revisions.
func sameEntries(a, b map[string]entry.Entry) bool {
	if len(a) != len(b) {
		return false
	}
	for id, e := range a {
		if o, ok := b[id]; !ok || o.Revision != e.Revision {
			return false
		}
	}
	return true
}

// delta returns the message that turns before into after, or nil when
// they are the same.
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
func (h *agentHub) sendLocked(parent string, sub *agentSub, msg *agentapi.SyncMessage) {
	select {
	case sub.ch <- msg:
	default:
		h.dropLocked(parent, sub)
	}
}

func (h *agentHub) dropLocked(parent string, sub *agentSub) {
	if _, ok := h.subs[parent][sub]; !ok {
		return
	}
	delete(h.subs[parent], sub)
	if len(h.subs[parent]) == 0 {
		delete(h.subs, parent)
	}
	close(sub.ch)
}

// subscribe opens a stream for the agent and returns it with the full
// message (without trust) that must be sent first.
func (h *agentHub) subscribe(parent string) (*agentSub, *agentapi.SyncMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sub := &agentSub{ch: make(chan *agentapi.SyncMessage, subQueue)}
	if h.subs == nil {
		h.subs = make(map[string]map[*agentSub]struct{})
	}
	if h.subs[parent] == nil {
		h.subs[parent] = make(map[*agentSub]struct{})
	}
	h.subs[parent][sub] = struct{}{}
	full := &agentapi.SyncMessage{Kind: agentapi.KindFull, Digest: emptyDigest}
	if p := h.byParent[parent]; p != nil {
		full.Digest = p.digest
		full.Upserts = make([]agentapi.Entry, 0, len(p.entries))
		for _, e := range p.entries {
			full.Upserts = append(full.Upserts, agentapi.FromEntry(e))
		}
	}
	return sub, full
}

// unsubscribe forgets a stream (a no-op once the hub dropped it).
func (h *agentHub) unsubscribe(parent string, sub *agentSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropLocked(parent, sub)
}

// reconcile queues a digest message for sub behind any queued delta.
func (h *agentHub) reconcile(parent string, sub *agentSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[parent][sub]; !ok {
		return
	}
	d := emptyDigest
	if p := h.byParent[parent]; p != nil {
		d = p.digest
	}
	h.sendLocked(parent, sub, &agentapi.SyncMessage{Kind: agentapi.KindReconcile, Digest: d})
}

// evict ends every stream of the agent with an eviction.
func (h *agentHub) evict(parent string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs[parent] {
		sub.evicted = true
		h.dropLocked(parent, sub)
	}
}

// entry returns the agent's entry with the ID.
func (h *agentHub) entry(parent, id string) (entry.Entry, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.byParent[parent]
	if p == nil {
		return entry.Entry{}, false
	}
	e, ok := p.entries[id]
	return e, ok
}

// closeAll ends every open stream (the server is shutting down); agents
// reconnect, to this node when it is back or to another.
func (h *agentHub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for parent, subs := range h.subs {
		for sub := range subs {
			h.dropLocked(parent, sub)
		}
	}
}
