package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sigil-pki/sigil/secretstore/database"
	"github.com/sigil-pki/sigil/secretstore/policy"
	"github.com/sigil-pki/sigil/storage"
	"github.com/sigil-pki/sigil/tlog"
)

// leaseInterval is how often the lease manager looks for due leases and
// static rotations; a lease is revoked within about this long of its
// expiry.
const leaseInterval = time.Second

// dbRecorder appends the database engine's events to the log.
type dbRecorder struct{ s *Server }

func (r dbRecorder) Record(ctx context.Context, e database.Event) error {
	l, err := r.s.transparencyLog()
	if err != nil {
		return err
	}
	_, err = l.Append(ctx, tlog.Entry{Kind: e.Kind, Time: r.s.clock(), Actor: e.Actor, Subject: tlog.Subject{Path: e.Path, Detail: e.Detail}})
	return err
}

func (s *Server) newDatabase() {
	s.db = database.New(database.Config{Store: s.store, Sealer: s.barrier, Recorder: dbRecorder{s}, Clock: s.clock, Logger: s.log})
}

// runLeases revokes expired leases and rotates static roles, on the one
// node that holds the "lease-manager" lock, until ctx is done.
func (s *Server) runLeases(ctx context.Context) {
	tick := time.NewTicker(leaseInterval)
	defer tick.Stop()
	var lock storage.Lock
	defer func() {
		if lock != nil {
			lock.Release()
		}
	}()
	for {
		if lock == nil {
			l, err := s.store.TryLock(ctx, "lease-manager")
			switch {
			case err == nil:
				lock = l
				s.log.Info("this node runs the lease manager")
			case !errors.Is(err, storage.ErrLocked) && ctx.Err() == nil:
				s.log.Error("taking the lease manager lock", "err", err)
			}
		}
		if lock != nil {
			for {
				n, err := s.db.ExpireDue(ctx, 256)
				if err != nil && ctx.Err() == nil {
					s.log.Error("revoking expired leases", "err", err)
				}
				if n < 256 || ctx.Err() != nil {
					break
				}
			}
			if _, err := s.db.RotateDue(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("rotating static database roles", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// dbAdmin wraps an operator-only database handler with the sealed check.
func (s *Server) dbAdmin(h func(w http.ResponseWriter, r *http.Request)) http.Handler {
	return s.operator(func(w http.ResponseWriter, r *http.Request) {
		if s.barrier.Sealed() {
			writeErrors(w, http.StatusServiceUnavailable, ErrSealed.Error())
			return
		}
		h(w, r)
	})
}

// dbCaller authenticates an SVID caller for the database paths; it
// answers and returns "" when the caller is refused.
func (s *Server) dbCaller(w http.ResponseWriter, r *http.Request) string {
	if s.barrier.Sealed() {
		writeErrors(w, http.StatusServiceUnavailable, ErrSealed.Error())
		return ""
	}
	id, err := s.authenticateSVID(r)
	if err != nil {
		writeErrors(w, http.StatusUnauthorized, err.Error())
		return ""
	}
	return id
}

// allowPath decides caller's capability on path with the secret store's
// policies; a denial is logged and answered.
func (s *Server) allowPath(w http.ResponseWriter, r *http.Request, kind, caller, path string, c policy.Capability) bool {
	if caller == s.OperatorID() {
		return true
	}
	d := s.secrets.policies.Load().set.Decide(caller, path, c)
	if d.Allowed {
		return true
	}
	if err := s.audit(r.Context(), tlog.Entry{Kind: kind, Actor: caller, Subject: tlog.Subject{Path: path},
		Outcome: tlog.Outcome{Denied: true, Reason: d.String()}}); err != nil {
		s.writeDBError(w, err)
		return false
	}
	writeErrors(w, http.StatusForbidden, "permission denied", d.String())
	return false
}

func (s *Server) writeDBError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, database.ErrNotFound):
		writeErrors(w, http.StatusNotFound, err.Error())
	case errors.Is(err, database.ErrInvalid), errors.Is(err, database.ErrNotAllowed):
		writeErrors(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, database.ErrNotOwner):
		writeErrors(w, http.StatusForbidden, "permission denied", err.Error())
	case errors.Is(err, database.ErrDatabase):
		// The managed database's own reason, passwords redacted by the
		// plugin: the operator needs it to fix the connection or role.
		s.log.Warn("managed database refused", "err", err)
		writeErrors(w, http.StatusBadGateway, err.Error())
	default:
		s.writeAdminError(w, err)
	}
}

// decodeLoose decodes a JSON body, ignoring fields it does not know (Vault
// clients send extra ones).
func decodeLoose(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody))
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		writeErrors(w, http.StatusBadRequest, "malformed JSON body: "+err.Error())
		return false
	}
	return true
}

func vaultData(data any) map[string]any {
	return map[string]any{"request_id": "", "lease_id": "", "renewable": false, "lease_duration": 0, "data": data, "warnings": nil, "auth": nil, "wrap_info": nil}
}

func (s *Server) databaseRoutes(mux *http.ServeMux) {
	mux.Handle("POST /v1/database/config/{name}", s.dbAdmin(s.handleDBConfigWrite))
	mux.Handle("PUT /v1/database/config/{name}", s.dbAdmin(s.handleDBConfigWrite))
	mux.Handle("GET /v1/database/config/{name}", s.dbAdmin(dbRead(s, s.db.Connection, func(c database.Connection) any { return c.Redacted() })))
	mux.Handle("DELETE /v1/database/config/{name}", s.dbAdmin(dbAct(s, s.db.DeleteConnection)))
	mux.Handle("GET /v1/database/config", s.dbAdmin(dbKeys(s, s.db.Connections)))
	mux.Handle("POST /v1/database/rotate-root/{name}", s.dbAdmin(dbAct(s, func(ctx context.Context, name string) error { return s.db.RotateRoot(ctx, Caller(ctx), name) })))
	writeRole := dbWrite(s, func(ctx context.Context, name string, role database.Role) error {
		return s.db.WriteRole(ctx, name, role)
	})
	mux.Handle("POST /v1/database/roles/{name}", s.dbAdmin(writeRole))
	mux.Handle("PUT /v1/database/roles/{name}", s.dbAdmin(writeRole))
	mux.Handle("GET /v1/database/roles/{name}", s.dbAdmin(dbRead(s, s.db.Role, func(r database.Role) any { return r })))
	mux.Handle("DELETE /v1/database/roles/{name}", s.dbAdmin(dbAct(s, func(ctx context.Context, name string) error { return s.db.DeleteRole(ctx, name, "dynamic") })))
	mux.Handle("GET /v1/database/roles", s.dbAdmin(dbKeys(s, func(ctx context.Context) ([]string, error) { return s.db.Roles(ctx, "dynamic") })))
	writeStatic := dbWrite(s, func(ctx context.Context, name string, role database.StaticRole) error {
		return s.db.WriteStaticRole(ctx, Caller(ctx), name, role)
	})
	mux.Handle("POST /v1/database/static-roles/{name}", s.dbAdmin(writeStatic))
	mux.Handle("PUT /v1/database/static-roles/{name}", s.dbAdmin(writeStatic))
	mux.Handle("GET /v1/database/static-roles/{name}", s.dbAdmin(dbRead(s, s.db.StaticRole, func(r database.StaticRole) any { return r })))
	mux.Handle("DELETE /v1/database/static-roles/{name}", s.dbAdmin(dbAct(s, func(ctx context.Context, name string) error { return s.db.DeleteRole(ctx, name, "static") })))
	mux.Handle("GET /v1/database/static-roles", s.dbAdmin(dbKeys(s, func(ctx context.Context) ([]string, error) { return s.db.Roles(ctx, "static") })))
	mux.Handle("POST /v1/database/rotate-role/{name}", s.dbAdmin(dbAct(s, func(ctx context.Context, name string) error { return s.db.RotateStatic(ctx, Caller(ctx), name) })))
	mux.Handle("PUT /v1/sys/leases/revoke-prefix/{prefix...}", s.dbAdmin(s.handleRevokePrefix))
	mux.Handle("GET /v1/sys/leases/lookup/{prefix...}", s.dbAdmin(s.handleLeaseList))
	mux.Handle("GET /v1/sys/leases/lookup", s.dbAdmin(s.handleLeaseList))
	mux.HandleFunc("GET /v1/database/creds/{role}", s.handleDBCreds)
	mux.HandleFunc("GET /v1/database/static-creds/{role}", s.handleDBStaticCreds)
	mux.HandleFunc("PUT /v1/sys/leases/renew", s.handleLeaseRenew)
	mux.HandleFunc("PUT /v1/sys/leases/revoke", s.handleLeaseRevoke)
}

// DBConfigRequest is the body of POST /v1/database/config/{name}, in
// Vault's field names.
type DBConfigRequest struct {
	Plugin       string   `json:"plugin_name"`
	URL          string   `json:"connection_url"`
	Username     string   `json:"username"`
	Password     string   `json:"password"`
	AllowedRoles []string `json:"allowed_roles"`
	MaxOpenConns int      `json:"max_open_connections"`
}

func (s *Server) handleDBConfigWrite(w http.ResponseWriter, r *http.Request) {
	var req DBConfigRequest
	if !decodeLoose(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	if err := s.db.WriteConnection(r.Context(), name, database.Connection{Plugin: req.Plugin, URL: req.URL, Username: req.Username,
		Password: req.Password, AllowedRoles: req.AllowedRoles, MaxOpenConns: req.MaxOpenConns}); err != nil {
		if errors.Is(err, database.ErrDatabase) {
			// The connection given does not work: the request is wrong.
			writeErrors(w, http.StatusBadRequest, err.Error())
			return
		}
		s.writeDBError(w, err)
		return
	}
	if err := s.audit(r.Context(), tlog.Entry{Kind: tlog.KindPolicyChange, Subject: tlog.Subject{Path: "database/config/" + name, Detail: "write"}}); err != nil {
		s.writeAdminError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// dbRead makes a handler that answers GET .../{name} with what get
// returns, shown through show, in Vault's envelope.
func dbRead[T any](s *Server, get func(context.Context, string) (T, error), show func(T) any) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := get(r.Context(), r.PathValue("name"))
		if err != nil {
			s.writeDBError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, vaultData(show(v)))
	}
}

// dbAct makes a handler that applies act to {name} and answers 204.
func dbAct(s *Server, act func(context.Context, string) error) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := act(r.Context(), r.PathValue("name")); err != nil {
			s.writeDBError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// dbKeys makes a handler that lists names in Vault's {"keys": [...]}.
func dbKeys(s *Server, list func(context.Context) ([]string, error)) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		names, err := list(r.Context())
		if err != nil {
			s.writeDBError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, vaultData(map[string]any{"keys": names}))
	}
}

// dbWrite makes a handler that decodes a T from the body and stores it
// under {name} with put.
func dbWrite[T any](s *Server, put func(context.Context, string, T) error) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		var v T
		if !decodeLoose(w, r, &v) {
			return
		}
		if err := put(r.Context(), r.PathValue("name"), v); err != nil {
			s.writeDBError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) handleDBCreds(w http.ResponseWriter, r *http.Request) {
	caller := s.dbCaller(w, r)
	if caller == "" {
		return
	}
	role := r.PathValue("role")
	if !s.allowPath(w, r, database.KindLeaseCreate, caller, "database/creds/"+role, policy.Read) {
		return
	}
	c, err := s.db.Creds(r.Context(), caller, role)
	if err != nil {
		s.writeDBError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"request_id": "", "lease_id": c.LeaseID, "renewable": true, "lease_duration": int64(c.LeaseDuration / time.Second),
		"data": map[string]any{"username": c.Username, "password": c.Password}, "warnings": nil, "auth": nil, "wrap_info": nil,
	})
}

func (s *Server) handleDBStaticCreds(w http.ResponseWriter, r *http.Request) {
	caller := s.dbCaller(w, r)
	if caller == "" {
		return
	}
	role := r.PathValue("role")
	if !s.allowPath(w, r, tlog.KindSecretRead, caller, "database/static-creds/"+role, policy.Read) {
		return
	}
	c, err := s.db.StaticCreds(r.Context(), role)
	if err != nil {
		s.writeDBError(w, err)
		return
	}
	if err := s.audit(r.Context(), tlog.Entry{Kind: tlog.KindSecretRead, Actor: caller, Subject: tlog.Subject{Path: "database/static-creds/" + role,
		Detail: "last rotated " + c.LastRotated.Format(time.RFC3339)}}); err != nil {
		s.writeAdminError(w, err)
		return
	}
	ttl := max(c.NextRotation.Sub(s.clock()), 0)
	writeJSON(w, http.StatusOK, vaultData(map[string]any{
		"username": c.Username, "password": c.Password, "last_vault_rotation": c.LastRotated.Format(time.RFC3339),
		"rotation_period": int64(c.RotationPeriod / time.Second), "ttl": int64(ttl / time.Second),
	}))
}

// LeaseRequest is the body of PUT /v1/sys/leases/renew and revoke.
type LeaseRequest struct {
	LeaseID   string `json:"lease_id"`
	Increment int64  `json:"increment"`
}

func (s *Server) handleLeaseRenew(w http.ResponseWriter, r *http.Request) {
	caller := s.dbCaller(w, r)
	if caller == "" {
		return
	}
	var req LeaseRequest
	if !decodeLoose(w, r, &req) {
		return
	}
	l, err := s.db.Renew(r.Context(), caller, req.LeaseID, time.Duration(req.Increment)*time.Second, caller == s.OperatorID())
	if err != nil {
		s.writeDBError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"lease_id": l.ID, "renewable": true,
		"lease_duration": int64(max(l.ExpiresAt.Sub(s.clock()), 0) / time.Second), "data": nil})
}

func (s *Server) handleLeaseRevoke(w http.ResponseWriter, r *http.Request) {
	caller := s.dbCaller(w, r)
	if caller == "" {
		return
	}
	var req LeaseRequest
	if !decodeLoose(w, r, &req) {
		return
	}
	if err := s.db.Revoke(r.Context(), caller, req.LeaseID, caller == s.OperatorID()); err != nil {
		s.writeDBError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleRevokePrefix(w http.ResponseWriter, r *http.Request) {
	n, err := s.db.RevokePrefix(r.Context(), Caller(r.Context()), r.PathValue("prefix"))
	if err != nil {
		code := http.StatusInternalServerError
		msg := "internal error"
		if errors.Is(err, database.ErrDatabase) {
			code, msg = http.StatusBadGateway, err.Error()
		} else if errors.Is(err, database.ErrInvalid) {
			code, msg = http.StatusBadRequest, err.Error()
		}
		s.log.Warn("revoking leases by prefix", "revoked", n, "err", err)
		writeJSON(w, code, map[string]any{"errors": []string{msg}, "revoked": n})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"revoked": n})
}

// LeaseJSON is a lease as the admin API lists it.
type LeaseJSON struct {
	ID        string `json:"lease_id"`
	Owner     string `json:"owner"`
	IssuedAt  string `json:"issue_time"`
	ExpiresAt string `json:"expire_time"`
	MaxExpiry string `json:"max_expire_time"`
	Attempts  int64  `json:"revoke_attempts,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

func (s *Server) handleLeaseList(w http.ResponseWriter, r *http.Request) {
	ls, err := s.db.Leases(r.Context(), r.PathValue("prefix"))
	if err != nil {
		s.writeDBError(w, err)
		return
	}
	out := make([]LeaseJSON, 0, len(ls))
	for _, l := range ls {
		out = append(out, LeaseJSON{ID: l.ID, Owner: l.Owner, IssuedAt: l.IssuedAt.Format(time.RFC3339), ExpiresAt: l.ExpiresAt.Format(time.RFC3339),
			MaxExpiry: l.MaxExpiresAt.Format(time.RFC3339), Attempts: l.Attempts, LastError: l.LastError})
	}
	writeJSON(w, http.StatusOK, vaultData(map[string]any{"leases": out}))
}
