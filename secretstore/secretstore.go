// Package secretstore answers secret requests for authenticated callers:
// it checks the caller's SPIFFE ID against the access policies, runs the
// KV engine, and records every attempt (allowed or denied, found or not)
// in the audit log before it answers.
//
// It owns the business rules that every way of reaching secrets shares
// (the Vault-shaped HTTP API, the CLI through it, agents later): which
// capability each operation needs, which mounts exist, and the order
// "decide, act, record, answer". It must never return a secret whose read
// could not be recorded, never record or log a secret's value, and never
// allow what no policy grants.
package secretstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/sigil-pki/sigil/secretstore/kv"
	"github.com/sigil-pki/sigil/secretstore/policy"
)

// Errors callers branch on; kv's errors (ErrNotFound, ErrDeleted, ...)
// pass through wrapped.
var (
	// ErrDenied: no policy grants the capability, or a deny rule applies.
	ErrDenied = errors.New("secretstore: permission denied")
	// ErrNoMount: the path names no configured mount.
	ErrNoMount = errors.New("secretstore: no such mount")
	// ErrBadPath: the path is malformed.
	ErrBadPath = errors.New("secretstore: invalid path")
	// ErrAudit: the audit entry could not be made durable; nothing is
	// returned.
	ErrAudit = errors.New("secretstore: audit log unavailable")
)

// Operations, as recorded in the audit log.
const (
	OpRead           = "secret.read"
	OpWrite          = "secret.write"
	OpList           = "secret.list"
	OpDelete         = "secret.delete"
	OpUndelete       = "secret.undelete"
	OpDestroy        = "secret.destroy"
	OpReadMetadata   = "secret.metadata.read"
	OpWriteMetadata  = "secret.metadata.write"
	OpDeleteMetadata = "secret.metadata.delete"
)

// Event is one audited attempt. It never carries a value.
type Event struct {
	Op     string
	Caller string
	// Path is "<mount>/<path>".
	Path    string
	Version int64
	// Denied is set for a policy denial; Outcome says what happened
	// otherwise ("ok", "not found", "deleted", ...).
	Denied  bool
	Outcome string
}

// Auditor records events.
type Auditor interface {
	// Record makes e durable; it MUST return an error when it could not.
	Record(ctx context.Context, e Event) error
}

// Decider is the policy set in force.
type Decider interface {
	Decide(spiffeID, path string, c policy.Capability) policy.Decision
}

// Mount is one KV mount.
type Mount struct {
	Name string
	// CASRequired makes every write to the mount name a cas version.
	CASRequired bool
}

// Config configures a Service.
type Config struct {
	KV *kv.Engine
	// Policies returns the policy set in force; called on every request.
	Policies func() Decider
	Auditor  Auditor
	Mounts   []Mount
}

// Service is the secret store. It is safe for concurrent use.
type Service struct {
	kv       *kv.Engine
	policies func() Decider
	audit    Auditor
	mounts   map[string]Mount
}

// New returns a Service.
func New(cfg Config) *Service {
	s := &Service{kv: cfg.KV, policies: cfg.Policies, audit: cfg.Auditor, mounts: map[string]Mount{}}
	for _, m := range cfg.Mounts {
		s.mounts[m.Name] = m
	}
	return s
}

// HasMount reports whether name is a configured mount.
func (s *Service) HasMount(name string) bool {
	_, ok := s.mounts[name]
	return ok
}

// request is one call's caller and target, checked.
type request struct {
	caller string
	mount  Mount
	path   string // inside the mount, cleaned; "" for a mount's root listing
}

func (r request) full() string {
	if r.path == "" {
		return r.mount.Name
	}
	return r.mount.Name + "/" + r.path
}

func (s *Service) request(caller, mount, path string, allowRoot bool) (request, error) {
	m, ok := s.mounts[mount]
	if !ok {
		return request{}, fmt.Errorf("%w: %q", ErrNoMount, mount)
	}
	if allowRoot {
		// A directory to list may be named with a trailing slash, as
		// Vault's clients do; any other path must already be clean.
		path = strings.TrimSuffix(path, "/")
		if path == "" {
			return request{caller: caller, mount: m}, nil
		}
	}
	clean, err := policy.CleanPath(path)
	if err != nil {
		return request{}, fmt.Errorf("%w: %v", ErrBadPath, err)
	}
	return request{caller: caller, mount: m, path: clean}, nil
}

// authorize decides c for r; a denial is recorded and returned as
// ErrDenied with the decision's explanation.
func (s *Service) authorize(ctx context.Context, op string, r request, c policy.Capability) error {
	d := s.policies().Decide(r.caller, r.full(), c)
	if d.Allowed {
		return nil
	}
	if err := s.record(ctx, Event{Op: op, Caller: r.caller, Path: r.full(), Denied: true, Outcome: d.String()}); err != nil {
		return err
	}
	return fmt.Errorf("%w: %s", ErrDenied, d.String())
}

func (s *Service) record(ctx context.Context, e Event) error {
	if err := s.audit.Record(ctx, e); err != nil {
		return fmt.Errorf("%w: %v", ErrAudit, err)
	}
	return nil
}

// outcome names what err means for the audit log.
func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, kv.ErrNotFound):
		return "not found"
	case errors.Is(err, kv.ErrDeleted):
		return "deleted"
	case errors.Is(err, kv.ErrDestroyed):
		return "destroyed"
	case errors.Is(err, kv.ErrCASMismatch), errors.Is(err, kv.ErrCASRequired):
		return "check-and-set failed"
	case errors.Is(err, kv.ErrInvalid):
		return "invalid"
	}
	return "error"
}

// finish records the outcome of an allowed operation. When the record
// fails, the operation's result must not be returned.
func (s *Service) finish(ctx context.Context, op string, r request, version int64, opErr error) error {
	if err := s.record(ctx, Event{Op: op, Caller: r.caller, Path: r.full(), Version: version, Outcome: outcome(opErr)}); err != nil {
		return err
	}
	return opErr
}

// Read returns version (0: current) of a secret; needs read.
func (s *Service) Read(ctx context.Context, caller, mount, path string, version int64) (kv.Secret, error) {
	r, err := s.request(caller, mount, path, false)
	if err != nil {
		return kv.Secret{}, err
	}
	if err := s.authorize(ctx, OpRead, r, policy.Read); err != nil {
		return kv.Secret{}, err
	}
	sec, err := s.kv.Get(ctx, r.mount.Name, r.path, version)
	v := sec.Version.Version
	if v == 0 {
		v = version
	}
	if err := s.finish(ctx, OpRead, r, v, err); err != nil {
		if errors.Is(err, ErrAudit) {
			return kv.Secret{}, err
		}
		sec.Data = nil
		return sec, err
	}
	return sec, nil
}

// Write stores data as the next version; needs create for a new secret,
// update for an existing one.
func (s *Service) Write(ctx context.Context, caller, mount, path string, data json.RawMessage, cas *int64) (kv.VersionMeta, error) {
	r, err := s.request(caller, mount, path, false)
	if err != nil {
		return kv.VersionMeta{}, err
	}
	c := policy.Update
	if _, err := s.kv.Metadata(ctx, r.mount.Name, r.path); errors.Is(err, kv.ErrNotFound) {
		c = policy.Create
	}
	if err := s.authorize(ctx, OpWrite, r, c); err != nil {
		return kv.VersionMeta{}, err
	}
	v, err := s.kv.Put(ctx, r.mount.Name, r.path, data, kv.PutOptions{CAS: cas, MountCASRequired: r.mount.CASRequired})
	return v, s.finish(ctx, OpWrite, r, v.Version, err)
}

// Metadata returns a secret's metadata; needs read.
func (s *Service) Metadata(ctx context.Context, caller, mount, path string) (kv.Metadata, error) {
	r, err := s.request(caller, mount, path, false)
	if err != nil {
		return kv.Metadata{}, err
	}
	if err := s.authorize(ctx, OpReadMetadata, r, policy.Read); err != nil {
		return kv.Metadata{}, err
	}
	m, err := s.kv.Metadata(ctx, r.mount.Name, r.path)
	return m, s.finish(ctx, OpReadMetadata, r, m.CurrentVersion, err)
}

// WriteMetadata changes a secret's settings; needs update (create when
// the secret does not exist).
func (s *Service) WriteMetadata(ctx context.Context, caller, mount, path string, u kv.MetadataUpdate) error {
	r, err := s.request(caller, mount, path, false)
	if err != nil {
		return err
	}
	c := policy.Update
	if _, err := s.kv.Metadata(ctx, r.mount.Name, r.path); errors.Is(err, kv.ErrNotFound) {
		c = policy.Create
	}
	if err := s.authorize(ctx, OpWriteMetadata, r, c); err != nil {
		return err
	}
	return s.finish(ctx, OpWriteMetadata, r, 0, s.kv.PutMetadata(ctx, r.mount.Name, r.path, u))
}

// Delete soft-deletes versions (none: the current one); needs delete.
func (s *Service) Delete(ctx context.Context, caller, mount, path string, versions []int64) error {
	return s.versionsOp(ctx, OpDelete, caller, mount, path, versions, s.kv.Delete)
}

// Undelete restores soft-deleted versions; needs update.
func (s *Service) Undelete(ctx context.Context, caller, mount, path string, versions []int64) error {
	return s.versionsOp(ctx, OpUndelete, caller, mount, path, versions, s.kv.Undelete)
}

// Destroy removes versions' values for good; needs delete.
func (s *Service) Destroy(ctx context.Context, caller, mount, path string, versions []int64) error {
	return s.versionsOp(ctx, OpDestroy, caller, mount, path, versions, s.kv.Destroy)
}

func (s *Service) versionsOp(ctx context.Context, op, caller, mount, path string, versions []int64,
	fn func(ctx context.Context, mount, path string, versions []int64) error) error {
	r, err := s.request(caller, mount, path, false)
	if err != nil {
		return err
	}
	c := policy.Delete
	if op == OpUndelete {
		c = policy.Update
	}
	if err := s.authorize(ctx, op, r, c); err != nil {
		return err
	}
	var v int64
	if len(versions) == 1 {
		v = versions[0]
	}
	return s.finish(ctx, op, r, v, fn(ctx, r.mount.Name, r.path, versions))
}

// DeleteAll removes a secret, its versions and metadata; needs delete.
func (s *Service) DeleteAll(ctx context.Context, caller, mount, path string) error {
	r, err := s.request(caller, mount, path, false)
	if err != nil {
		return err
	}
	if err := s.authorize(ctx, OpDeleteMetadata, r, policy.Delete); err != nil {
		return err
	}
	return s.finish(ctx, OpDeleteMetadata, r, 0, s.kv.DeleteAll(ctx, r.mount.Name, r.path))
}

// List returns the names under dir ("" for the mount's root); needs list
// on the directory.
func (s *Service) List(ctx context.Context, caller, mount, dir string) ([]string, error) {
	r, err := s.request(caller, mount, dir, true)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(ctx, OpList, r, policy.List); err != nil {
		return nil, err
	}
	keys, err := s.kv.List(ctx, r.mount.Name, r.path)
	if err := s.finish(ctx, OpList, r, 0, err); err != nil {
		return nil, err
	}
	return keys, nil
}

// Check explains the decision for caller, path and capability without
// doing anything; for operators (sigil policy check).
func (s *Service) Check(spiffeID, path string, c policy.Capability) policy.Decision {
	return s.policies().Decide(spiffeID, path, c)
}
