package kv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sigil-pki/sigil/storage"
)

// Errors callers branch on. Each is wrapped with what was attempted.
var (
	// ErrNotFound: no such secret, or no such version.
	ErrNotFound = errors.New("kv: not found")
	// ErrDeleted: the version is soft-deleted (it can be undeleted).
	ErrDeleted = errors.New("kv: version deleted")
	// ErrDestroyed: the version's value is gone for good.
	ErrDestroyed = errors.New("kv: version destroyed")
	// ErrCASMismatch: the check-and-set version is not the current one.
	ErrCASMismatch = errors.New("kv: check-and-set parameter did not match the current version")
	// ErrCASRequired: the secret or mount requires check-and-set.
	ErrCASRequired = errors.New("kv: check-and-set parameter required for this call")
	// ErrInvalid: a malformed request (bad version number, data that is
	// not a JSON object, an impossible metadata value).
	ErrInvalid = errors.New("kv: invalid request")
	// ErrBusy: the secret kept changing under concurrent writers.
	ErrBusy = errors.New("kv: too many concurrent changes to one secret, retry")
)

// DefaultMaxVersions is how many versions a secret keeps when neither it nor
// its mount says otherwise.
const DefaultMaxVersions = 10

// maxRetries bounds the optimistic retries of one change.
const maxRetries = 16

// Store is the storage the engine needs (storage.DB implements it).
type Store interface {
	GetKVHead(ctx context.Context, mount, path string) (storage.KVHead, error)
	GetKVVersion(ctx context.Context, mount, path string, version int64) ([]byte, error)
	WriteKV(ctx context.Context, mount, path string, c storage.KVChange) error
	DeleteKV(ctx context.Context, mount, path string, expectRevision int64) error
	ListKVPaths(ctx context.Context, mount, prefix, after string, limit int) ([]string, error)
}

// Sealer encrypts with authenticated additional data (the barrier).
type Sealer interface {
	Encrypt(aad string, plaintext []byte) ([]byte, error)
	Decrypt(aad string, ciphertext []byte) ([]byte, error)
}

// Config configures an Engine.
type Config struct {
	Store  Store
	Sealer Sealer
	// MaxVersions is the mounts' default max_versions. Default
	// DefaultMaxVersions.
	MaxVersions int
	// Clock tells the time. Default time.Now.
	Clock func() time.Time
}

// Engine is the KV engine. It is safe for concurrent use.
type Engine struct {
	store       Store
	sealer      Sealer
	maxVersions int
	now         func() time.Time
}

// New returns an Engine.
func New(cfg Config) *Engine {
	e := &Engine{store: cfg.Store, sealer: cfg.Sealer, maxVersions: cfg.MaxVersions, now: cfg.Clock}
	if e.maxVersions <= 0 {
		e.maxVersions = DefaultMaxVersions
	}
	if e.now == nil {
		e.now = time.Now
	}
	return e
}

// VersionMeta describes one version.
type VersionMeta struct {
	Version      int64     `json:"-"`
	CreatedTime  time.Time `json:"created_time"`
	DeletionTime time.Time `json:"deletion_time,omitzero"`
	Destroyed    bool      `json:"destroyed,omitempty"`
}

// Deleted reports whether the version is soft-deleted at now.
func (v VersionMeta) Deleted(now time.Time) bool {
	return !v.DeletionTime.IsZero() && !v.DeletionTime.After(now)
}

// Metadata is a secret's metadata.
type Metadata struct {
	CreatedTime        time.Time              `json:"created_time"`
	UpdatedTime        time.Time              `json:"updated_time"`
	CurrentVersion     int64                  `json:"current_version"`
	OldestVersion      int64                  `json:"oldest_version"`
	MaxVersions        int                    `json:"max_versions,omitempty"`
	CASRequired        bool                   `json:"cas_required,omitempty"`
	DeleteVersionAfter time.Duration          `json:"delete_version_after,omitempty"`
	CustomMetadata     map[string]string      `json:"custom_metadata,omitempty"`
	Versions           map[string]VersionMeta `json:"versions"`
}

// Version returns version n's metadata.
func (m *Metadata) Version(n int64) (VersionMeta, bool) {
	v, ok := m.Versions[strconv.FormatInt(n, 10)]
	v.Version = n
	return v, ok
}

func (m *Metadata) setVersion(v VersionMeta) {
	if m.Versions == nil {
		m.Versions = map[string]VersionMeta{}
	}
	m.Versions[strconv.FormatInt(v.Version, 10)] = v
}

// VersionNumbers returns the numbers of the versions kept, ascending.
func (m *Metadata) VersionNumbers() []int64 {
	out := make([]int64, 0, len(m.Versions))
	for k := range m.Versions {
		n, err := strconv.ParseInt(k, 10, 64)
		if err == nil {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// Secret is one version's data and metadata.
type Secret struct {
	// Data is the JSON object written, exactly as written.
	Data     json.RawMessage
	Version  VersionMeta
	Metadata Metadata
}

// head is a secret's decoded head.
type head struct {
	meta     Metadata
	revision int64
}

func metaAAD(mount, path string) string { return "kv-meta\x00" + mount + "\x00" + path }
func valueAAD(mount, path string, v int64) string {
	return "kv-value\x00" + mount + "\x00" + path + "\x00" + strconv.FormatInt(v, 10)
}

func (e *Engine) load(ctx context.Context, mount, path string) (head, error) {
	h, err := e.store.GetKVHead(ctx, mount, path)
	if errors.Is(err, storage.ErrNotFound) {
		return head{}, ErrNotFound
	}
	if err != nil {
		return head{}, err
	}
	pt, err := e.sealer.Decrypt(metaAAD(mount, path), h.Meta)
	if err != nil {
		return head{}, fmt.Errorf("opening metadata: %w", err)
	}
	defer clear(pt)
	var m Metadata
	if err := json.Unmarshal(pt, &m); err != nil {
		return head{}, fmt.Errorf("decoding metadata: %w", err)
	}
	return head{meta: m, revision: h.Revision}, nil
}

func (e *Engine) sealMeta(mount, path string, m Metadata) ([]byte, error) {
	pt, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding metadata: %w", err)
	}
	defer clear(pt)
	return e.sealer.Encrypt(metaAAD(mount, path), pt)
}

// change runs fn on the current head (a zero head with revision 0 when the
// secret does not exist) and writes what it returns, retrying when another
// writer got there first.
func (e *Engine) change(ctx context.Context, mount, path string, fn func(h *head, exists bool) (storage.KVChange, error)) error {
	for range maxRetries {
		h, err := e.load(ctx, mount, path)
		exists := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		c, err := fn(&h, exists)
		if err != nil {
			return err
		}
		meta, err := e.sealMeta(mount, path, h.meta)
		if err != nil {
			return err
		}
		c.ExpectRevision, c.Meta = h.revision, meta
		err = e.store.WriteKV(ctx, mount, path, c)
		if errors.Is(err, storage.ErrConflict) {
			continue
		}
		return err
	}
	return ErrBusy
}

// PutOptions are a write's options.
type PutOptions struct {
	// CAS, when set, makes the write conditional: 0 means the secret must
	// not exist, N that N is its current version.
	CAS *int64
	// MountCASRequired is the mount's cas_required setting.
	MountCASRequired bool
}

// Put writes data (a JSON object) as the secret's next version and returns
// that version's metadata.
func (e *Engine) Put(ctx context.Context, mount, path string, data json.RawMessage, opts PutOptions) (VersionMeta, error) {
	if err := checkObject(data); err != nil {
		return VersionMeta{}, err
	}
	var written VersionMeta
	err := e.change(ctx, mount, path, func(h *head, exists bool) (storage.KVChange, error) {
		now := e.now().UTC()
		m := &h.meta
		if opts.CAS == nil && (opts.MountCASRequired || m.CASRequired) {
			return storage.KVChange{}, ErrCASRequired
		}
		if opts.CAS != nil && *opts.CAS != m.CurrentVersion {
			return storage.KVChange{}, ErrCASMismatch
		}
		if !exists {
			m.CreatedTime = now
		}
		m.UpdatedTime = now
		m.CurrentVersion++
		v := VersionMeta{Version: m.CurrentVersion, CreatedTime: now}
		if m.DeleteVersionAfter > 0 {
			v.DeletionTime = now.Add(m.DeleteVersionAfter)
		}
		m.setVersion(v)
		if m.OldestVersion == 0 {
			m.OldestVersion = v.Version
		}
		forget := e.trim(m)
		value, err := e.sealer.Encrypt(valueAAD(mount, path, v.Version), data)
		if err != nil {
			return storage.KVChange{}, err
		}
		written = v
		return storage.KVChange{Version: v.Version, Value: value, Forget: forget}, nil
	})
	if err != nil {
		return VersionMeta{}, fmt.Errorf("writing %s/%s: %w", mount, path, err)
	}
	return written, nil
}

// trim drops the oldest versions beyond max_versions from m and returns
// their numbers.
func (e *Engine) trim(m *Metadata) []int64 {
	limit := m.MaxVersions
	if limit <= 0 {
		limit = e.maxVersions
	}
	nums := m.VersionNumbers()
	if len(nums) <= limit {
		return nil
	}
	drop := nums[:len(nums)-limit]
	for _, n := range drop {
		delete(m.Versions, strconv.FormatInt(n, 10))
	}
	m.OldestVersion = nums[len(nums)-limit]
	return drop
}

func checkObject(data json.RawMessage) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
		return fmt.Errorf("%w: data must be a JSON object", ErrInvalid)
	}
	return nil
}

// Get returns version (0: the current one) of the secret. A deleted or
// destroyed version returns ErrDeleted or ErrDestroyed together with a
// Secret that carries its metadata and no data.
func (e *Engine) Get(ctx context.Context, mount, path string, version int64) (Secret, error) {
	if version < 0 {
		return Secret{}, fmt.Errorf("reading %s/%s: %w: version %d", mount, path, ErrInvalid, version)
	}
	h, err := e.load(ctx, mount, path)
	if err != nil {
		return Secret{}, fmt.Errorf("reading %s/%s: %w", mount, path, err)
	}
	if version == 0 {
		version = h.meta.CurrentVersion
	}
	v, ok := h.meta.Version(version)
	if !ok {
		return Secret{Metadata: h.meta}, fmt.Errorf("reading %s/%s version %d: %w", mount, path, version, ErrNotFound)
	}
	s := Secret{Version: v, Metadata: h.meta}
	switch {
	case v.Destroyed:
		return s, fmt.Errorf("reading %s/%s version %d: %w", mount, path, version, ErrDestroyed)
	case v.Deleted(e.now()):
		return s, fmt.Errorf("reading %s/%s version %d: %w", mount, path, version, ErrDeleted)
	}
	ct, err := e.store.GetKVVersion(ctx, mount, path, version)
	if err != nil {
		return Secret{}, fmt.Errorf("reading %s/%s version %d: %w", mount, path, version, err)
	}
	data, err := e.sealer.Decrypt(valueAAD(mount, path, version), ct)
	if err != nil {
		return Secret{}, fmt.Errorf("opening %s/%s version %d: %w", mount, path, version, err)
	}
	s.Data = data
	return s, nil
}

// Metadata returns the secret's metadata.
func (e *Engine) Metadata(ctx context.Context, mount, path string) (Metadata, error) {
	h, err := e.load(ctx, mount, path)
	if err != nil {
		return Metadata{}, fmt.Errorf("reading metadata of %s/%s: %w", mount, path, err)
	}
	return h.meta, nil
}

// versionsOrCurrent returns versions, or the current version when empty.
func versionsOrCurrent(m *Metadata, versions []int64) []int64 {
	if len(versions) == 0 && m.CurrentVersion > 0 {
		return []int64{m.CurrentVersion}
	}
	return versions
}

// Delete soft-deletes versions (none: the current one). Unknown and
// destroyed versions are skipped, as Vault does.
func (e *Engine) Delete(ctx context.Context, mount, path string, versions []int64) error {
	return e.versionsChange(ctx, "deleting", mount, path, versions, func(m *Metadata, v VersionMeta, now time.Time) (VersionMeta, bool) {
		if v.Destroyed || v.Deleted(now) {
			return v, false
		}
		v.DeletionTime = now
		return v, true
	})
}

// Undelete restores soft-deleted versions.
func (e *Engine) Undelete(ctx context.Context, mount, path string, versions []int64) error {
	if len(versions) == 0 {
		return fmt.Errorf("undeleting %s/%s: %w: no versions given", mount, path, ErrInvalid)
	}
	return e.versionsChange(ctx, "undeleting", mount, path, versions, func(m *Metadata, v VersionMeta, now time.Time) (VersionMeta, bool) {
		if v.Destroyed || v.DeletionTime.IsZero() {
			return v, false
		}
		v.DeletionTime = time.Time{}
		return v, true
	})
}

// Destroy removes versions' values for good.
func (e *Engine) Destroy(ctx context.Context, mount, path string, versions []int64) error {
	if len(versions) == 0 {
		return fmt.Errorf("destroying %s/%s: %w: no versions given", mount, path, ErrInvalid)
	}
	return e.versionsChange(ctx, "destroying", mount, path, versions, func(m *Metadata, v VersionMeta, now time.Time) (VersionMeta, bool) {
		if v.Destroyed {
			return v, false
		}
		v.Destroyed = true
		return v, true
	})
}

// versionsChange applies edit to each listed version that exists; a
// version whose edit reports true is changed; destroyed ones lose their
// value in the same write.
func (e *Engine) versionsChange(ctx context.Context, what, mount, path string, versions []int64, edit func(*Metadata, VersionMeta, time.Time) (VersionMeta, bool)) error {
	for _, v := range versions {
		if v <= 0 {
			return fmt.Errorf("%s %s/%s: %w: version %d", what, mount, path, ErrInvalid, v)
		}
	}
	err := e.change(ctx, mount, path, func(h *head, exists bool) (storage.KVChange, error) {
		if !exists {
			return storage.KVChange{}, ErrNotFound
		}
		now := e.now().UTC()
		var c storage.KVChange
		for _, n := range versionsOrCurrent(&h.meta, versions) {
			v, ok := h.meta.Version(n)
			if !ok {
				continue
			}
			wasDestroyed := v.Destroyed
			if nv, changed := edit(&h.meta, v, now); changed {
				h.meta.setVersion(nv)
				if nv.Destroyed && !wasDestroyed {
					c.Destroy = append(c.Destroy, n)
				}
			}
		}
		h.meta.UpdatedTime = now
		return c, nil
	})
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", what, mount, path, err)
	}
	return nil
}

// MetadataUpdate changes a secret's settings; nil fields stay as they are.
type MetadataUpdate struct {
	MaxVersions        *int
	CASRequired        *bool
	DeleteVersionAfter *time.Duration
	CustomMetadata     map[string]string
}

// Limits on custom metadata, as Vault's.
const (
	maxCustomKeys     = 64
	maxCustomKeyLen   = 128
	maxCustomValueLen = 512
)

// PutMetadata applies u, creating the secret's metadata (with no version)
// when it does not exist.
func (e *Engine) PutMetadata(ctx context.Context, mount, path string, u MetadataUpdate) error {
	if u.MaxVersions != nil && *u.MaxVersions < 0 {
		return fmt.Errorf("%w: max_versions %d is negative", ErrInvalid, *u.MaxVersions)
	}
	if u.DeleteVersionAfter != nil && *u.DeleteVersionAfter < 0 {
		return fmt.Errorf("%w: delete_version_after %v is negative", ErrInvalid, *u.DeleteVersionAfter)
	}
	if len(u.CustomMetadata) > maxCustomKeys {
		return fmt.Errorf("%w: custom_metadata has %d keys, at most %d", ErrInvalid, len(u.CustomMetadata), maxCustomKeys)
	}
	for k, v := range u.CustomMetadata {
		if k == "" || len(k) > maxCustomKeyLen || len(v) > maxCustomValueLen {
			return fmt.Errorf("%w: custom_metadata keys must be 1 to %d bytes and values at most %d", ErrInvalid, maxCustomKeyLen, maxCustomValueLen)
		}
	}
	err := e.change(ctx, mount, path, func(h *head, exists bool) (storage.KVChange, error) {
		now := e.now().UTC()
		m := &h.meta
		if !exists {
			m.CreatedTime = now
		}
		m.UpdatedTime = now
		if u.MaxVersions != nil {
			m.MaxVersions = *u.MaxVersions
		}
		if u.CASRequired != nil {
			m.CASRequired = *u.CASRequired
		}
		if u.DeleteVersionAfter != nil {
			m.DeleteVersionAfter = *u.DeleteVersionAfter
		}
		if u.CustomMetadata != nil {
			m.CustomMetadata = u.CustomMetadata
		}
		return storage.KVChange{Forget: e.trim(m)}, nil
	})
	if err != nil {
		return fmt.Errorf("writing metadata of %s/%s: %w", mount, path, err)
	}
	return nil
}

// DeleteAll removes the secret with every version and its metadata.
func (e *Engine) DeleteAll(ctx context.Context, mount, path string) error {
	for range maxRetries {
		h, err := e.store.GetKVHead(ctx, mount, path)
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("deleting %s/%s: %w", mount, path, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("deleting %s/%s: %w", mount, path, err)
		}
		err = e.store.DeleteKV(ctx, mount, path, h.Revision)
		switch {
		case errors.Is(err, storage.ErrConflict):
			continue
		case errors.Is(err, storage.ErrNotFound):
			return fmt.Errorf("deleting %s/%s: %w", mount, path, ErrNotFound)
		case err != nil:
			return fmt.Errorf("deleting %s/%s: %w", mount, path, err)
		}
		return nil
	}
	return fmt.Errorf("deleting %s/%s: %w", mount, path, ErrBusy)
}

// maxList bounds one List result.
const maxList = 10000

// List returns the names directly under dir ("" for the mount's root):
// secrets by name, sub-directories with a trailing "/", sorted, at most
// 10,000. An empty directory is ErrNotFound, as in Vault.
func (e *Engine) List(ctx context.Context, mount, dir string) ([]string, error) {
	prefix := ""
	if dir = strings.Trim(dir, "/"); dir != "" {
		prefix = dir + "/"
	}
	var out []string
	after := ""
	for len(out) < maxList {
		page, err := e.store.ListKVPaths(ctx, mount, prefix, after, storage.MaxListLimit)
		if err != nil {
			return nil, fmt.Errorf("listing %s/%s: %w", mount, dir, err)
		}
		for _, p := range page {
			rest := strings.TrimPrefix(p, prefix)
			name, _, isDir := strings.Cut(rest, "/")
			if isDir {
				name += "/"
			}
			if len(out) == 0 || out[len(out)-1] != name {
				out = append(out, name)
			}
		}
		if len(page) < storage.MaxListLimit {
			break
		}
		after = page[len(page)-1]
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("listing %s/%s: %w", mount, dir, ErrNotFound)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
