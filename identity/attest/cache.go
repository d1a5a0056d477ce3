//go:build linux

package attest

import (
	"container/list"
	"sync"
)

// hashCache is a bounded least-recently-used map from file version to hex
// SHA-256. A nil *hashCache caches nothing.
type hashCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // front is most recently used; values are *cacheEntry
	byKey map[fileKey]*list.Element
}

type cacheEntry struct {
	key fileKey
	sum string
}

func newHashCache(max int) *hashCache {
	if max <= 0 {
		return nil
	}
	return &hashCache{max: max, order: list.New(), byKey: make(map[fileKey]*list.Element)}
}

func (c *hashCache) get(k fileKey) (string, bool) {
	if c == nil {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[k]
	if !ok {
		return "", false
	}
	c.order.MoveToFront(e)
	return e.Value.(*cacheEntry).sum, true
}

func (c *hashCache) put(k fileKey, sum string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[k]; ok {
		e.Value.(*cacheEntry).sum = sum
		c.order.MoveToFront(e)
		return
	}
	c.byKey[k] = c.order.PushFront(&cacheEntry{key: k, sum: sum})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byKey, last.Value.(*cacheEntry).key)
	}
}

func (c *hashCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
