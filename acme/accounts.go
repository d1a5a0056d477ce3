package acme

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/sigil-pki/sigil/storage"
)

// accountCacheTTL is how long a node trusts an account it read: every
// request is signed with the account's key, and reading and parsing it
// each time costs more than verifying the signature. A change made on
// this node (update, deactivation, key change) drops the entry at once;
// one made on another node sharing the database is seen here within the
// TTL.
const accountCacheTTL = time.Second

// maxCachedAccounts bounds the cache; past it the cache starts over.
const maxCachedAccounts = 1 << 16

// cachedAccount is an account as read, with its parsed key.
type cachedAccount struct {
	doc    storage.ACMEDoc
	key    *jose.JSONWebKey
	status string
	read   time.Time
}

// accountCache holds recently read accounts by ID.
type accountCache struct {
	mu sync.Mutex
	m  map[string]cachedAccount
}

func (c *accountCache) get(id string, now time.Time) (cachedAccount, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.m[id]
	if ok && now.Sub(a.read) >= accountCacheTTL {
		delete(c.m, id)
		ok = false
	}
	return a, ok
}

func (c *accountCache) put(a cachedAccount) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedAccounts {
		c.m = make(map[string]cachedAccount)
	}
	c.m[a.doc.ID] = a
}

func (c *accountCache) forget(id string) {
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}

// account returns the account with the ID, from the cache when it was
// read less than accountCacheTTL ago.
func (s *Server) account(ctx context.Context, id string) (cachedAccount, error) {
	now := s.now()
	if a, ok := s.accounts.get(id, now); ok {
		return a, nil
	}
	d, err := s.cfg.Store.GetACMEAccount(ctx, id)
	if err != nil {
		return cachedAccount{}, err
	}
	var acct account
	if err := json.Unmarshal([]byte(d.Data), &acct); err != nil {
		return cachedAccount{}, err
	}
	var key jose.JSONWebKey
	if err := key.UnmarshalJSON(acct.Key); err != nil {
		return cachedAccount{}, err
	}
	a := cachedAccount{doc: d, key: &key, status: acct.Status, read: now}
	s.accounts.put(a)
	return a, nil
}

// accountFromKID returns the valid account a kid names.
func (s *Server) accountFromKID(ctx context.Context, kid string) (cachedAccount, error) {
	id, ok := strings.CutPrefix(kid, s.url("account/"))
	if !ok || id == "" || strings.Contains(id, "/") {
		return cachedAccount{}, accountDoesNotExist("no account at %q", kid)
	}
	a, err := s.account(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return cachedAccount{}, accountDoesNotExist("no account at %q", kid)
	}
	if err != nil {
		return cachedAccount{}, err
	}
	if a.status != statusValid {
		return cachedAccount{}, unauthorized("account is %s", a.status)
	}
	return a, nil
}
