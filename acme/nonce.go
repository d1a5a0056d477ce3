package acme

import (
	"sync"
	"time"
)

// maxNonces bounds the nonces one node keeps; past it, expired ones are
// dropped, and if that is not enough, the oldest half.
const maxNonces = 1 << 20

// nonceStore keeps this node's outstanding nonces in memory. A nonce is
// accepted once, by the node that issued it, before it expires; a restart
// forgets every nonce, so none can be replayed across it. A client that
// reaches another node gets badNonce with a fresh nonce and retries, as
// RFC 8555 §6.5 expects of clients.
type nonceStore struct {
	mu sync.Mutex
	m  map[string]time.Time // nonce -> expiry
}

func newNonceStore() *nonceStore { return &nonceStore{m: make(map[string]time.Time)} }

func (n *nonceStore) put(nonce string, expires, now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.m) >= maxNonces {
		for k, exp := range n.m {
			if !now.Before(exp) {
				delete(n.m, k)
			}
		}
		if len(n.m) >= maxNonces {
			cut := now.Add(nonceTTL / 2)
			for k, exp := range n.m {
				if exp.Before(cut) {
					delete(n.m, k)
				}
			}
		}
	}
	n.m[nonce] = expires
}

// consume reports whether nonce was outstanding and unexpired, and forgets
// it.
func (n *nonceStore) consume(nonce string, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	exp, ok := n.m[nonce]
	delete(n.m, nonce)
	return ok && now.Before(exp)
}
