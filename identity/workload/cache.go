package workload

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// cachedSVID is one X.509-SVID with its key, shared by every workload that
// matches the same entry while it is fresh.
type cachedSVID struct {
	chainDER  []byte // leaf then intermediates, concatenated DER
	keyDER    []byte // PKCS#8
	serial    string
	notAfter  time.Time
	refreshAt time.Time // half its lifetime; never after notAfter
}

// svidCache holds at most one SVID per cache key (an entry's content and
// the signing intermediate). A cached SVID is handed out until it passes
// half its lifetime; concurrent misses for one key cost one signature.
type svidCache struct {
	now   func() time.Time
	group singleflight.Group

	mu      sync.Mutex
	m       map[string]*cachedSVID
	sweepAt int
}

// minSweep is the size below which the cache does not look for expired
// SVIDs to drop.
const minSweep = 256

func newSVIDCache(now func() time.Time) *svidCache {
	return &svidCache{now: now, m: make(map[string]*cachedSVID), sweepAt: minSweep}
}

// get returns the fresh SVID cached under key, or mints one with mint,
// caches it and returns it. mint runs without ctx's cancellation, since
// other callers may wait for its result.
func (c *svidCache) get(ctx context.Context, key string, mint func(context.Context) (*cachedSVID, error)) (*cachedSVID, error) {
	if sv := c.fresh(key); sv != nil {
		return sv, nil
	}
	ch := c.group.DoChan(key, func() (any, error) {
		if sv := c.fresh(key); sv != nil {
			return sv, nil
		}
		sv, err := mint(context.WithoutCancel(ctx))
		if err != nil {
			return nil, err
		}
		c.put(key, sv)
		return sv, nil
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*cachedSVID), nil
	}
}

func (c *svidCache) fresh(key string) *cachedSVID {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	sv, ok := c.m[key]
	if !ok || !now.Before(sv.refreshAt) || !now.Before(sv.notAfter) {
		return nil
	}
	return sv
}

// put caches sv under key; when the cache has grown past sweepAt it drops
// every expired SVID first, so SVIDs of deleted entries do not pile up.
func (c *svidCache) put(key string, sv *cachedSVID) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.sweepAt {
		for k, old := range c.m {
			if !now.Before(old.notAfter) {
				delete(c.m, k)
			}
		}
		c.sweepAt = max(minSweep, 2*len(c.m))
	}
	c.m[key] = sv
}

// len returns the number of cached SVIDs, expired ones included.
func (c *svidCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
