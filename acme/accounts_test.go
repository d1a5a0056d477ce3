package acme

import (
	"strconv"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/storage"
)

// TestAccountCache: an entry is served until accountCacheTTL has passed
// since it was read, forget drops it at once, and a full cache starts
// over rather than growing.
func TestAccountCache(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var c accountCache
	c.put(cachedAccount{doc: storage.ACMEDoc{ID: "a"}, status: statusValid, read: t0})
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{
		{0, true},
		{accountCacheTTL - time.Nanosecond, true},
		{accountCacheTTL, false},
		{0, false}, // dropped when it was found stale
	} {
		if _, ok := c.get("a", t0.Add(tc.at)); ok != tc.want {
			t.Errorf("get at +%v: %t, want %t", tc.at, ok, tc.want)
		}
	}
	c.put(cachedAccount{doc: storage.ACMEDoc{ID: "b"}, read: t0})
	c.forget("b")
	if _, ok := c.get("b", t0); ok {
		t.Error("a forgotten account is still served")
	}
	for i := range maxCachedAccounts + 1 {
		c.put(cachedAccount{doc: storage.ACMEDoc{ID: strconv.Itoa(i)}, read: t0})
	}
	if n := len(c.m); n > maxCachedAccounts {
		t.Errorf("the cache grew to %d", n)
	}
}
