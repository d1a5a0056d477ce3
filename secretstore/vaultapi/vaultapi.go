// Package vaultapi serves the secret store over HTTP with the URLs and JSON
// shapes of Vault's KV version 2 API (/v1/<mount>/data/<path>, metadata/,
// delete/, undelete/, destroy/, LIST), so that Vault's Go client and curl
// scripts written for Vault work against Sigil given a TLS client
// certificate instead of a token.
//
// It only decodes requests, calls secretstore.Service and encodes answers;
// errors map to Vault's {"errors":[...]} bodies in one place (writeError).
// It never writes a secret value to a log, and never answers before the
// Service has recorded the request.
package vaultapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sigil-pki/sigil/secretstore"
	"github.com/sigil-pki/sigil/secretstore/kv"
)

// maxBody bounds a request body.
const maxBody = 1 << 20

// Authenticator returns the SPIFFE ID of the request's verified client
// certificate, or an error saying why there is none.
type Authenticator func(r *http.Request) (string, error)

// Config configures a Handler.
type Config struct {
	Service *secretstore.Service
	// Authenticate identifies the caller. Required.
	Authenticate Authenticator
	// Unavailable, when it returns an error, answers every request with
	// 503 and that error's text (a sealed server).
	Unavailable func() error
	Logger      *slog.Logger
}

// Handler serves /v1/<mount>/... for the configured mounts.
type Handler struct {
	svc         *secretstore.Service
	auth        Authenticator
	unavailable func() error
	log         *slog.Logger
}

// New returns a Handler.
func New(cfg Config) *Handler {
	h := &Handler{svc: cfg.Service, auth: cfg.Authenticate, unavailable: cfg.Unavailable, log: cfg.Logger}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	return h
}

// Owns reports whether the request path is for a secret mount, so that the
// caller's mux can route /v1/<mount>/ here.
func (h *Handler) Owns(path string) bool {
	mount, _, _ := splitPath(path)
	return mount != "" && h.svc.HasMount(mount)
}

// splitPath splits /v1/<mount>/<op>/<rest>.
func splitPath(p string) (mount, op, rest string) {
	p, ok := strings.CutPrefix(p, "/v1/")
	if !ok {
		return "", "", ""
	}
	mount, p, _ = strings.Cut(p, "/")
	op, rest, _ = strings.Cut(p, "/")
	return mount, op, rest
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.unavailable != nil {
		if err := h.unavailable(); err != nil {
			writeErrors(w, http.StatusServiceUnavailable, err.Error())
			return
		}
	}
	caller, err := h.auth(r)
	if err != nil {
		writeErrors(w, http.StatusUnauthorized, err.Error())
		return
	}
	mount, op, path := splitPath(r.URL.Path)
	method := r.Method
	if method == http.MethodGet && r.URL.Query().Get("list") == "true" {
		method = "LIST"
	}
	ctx := r.Context()
	switch op + " " + method {
	case "data GET":
		version, err := queryVersion(r)
		if err != nil {
			writeErrors(w, http.StatusBadRequest, err.Error())
			return
		}
		sec, err := h.svc.Read(ctx, caller, mount, path, version)
		if err != nil {
			if sec.Version.Version != 0 && (errors.Is(err, kv.ErrDeleted) || errors.Is(err, kv.ErrDestroyed)) {
				// Vault's answer for a deleted version: 404 with its
				// metadata and null data.
				writeJSON(w, http.StatusNotFound, envelope(map[string]any{"data": nil, "metadata": versionJSON(sec.Version, sec.Metadata)}))
				return
			}
			h.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, envelope(map[string]any{"data": sec.Data, "metadata": versionJSON(sec.Version, sec.Metadata)}))
	case "data POST", "data PUT":
		var body struct {
			Data    json.RawMessage `json:"data"`
			Options struct {
				CAS *int64 `json:"cas"`
			} `json:"options"`
		}
		if !decode(w, r, &body) {
			return
		}
		v, err := h.svc.Write(ctx, caller, mount, path, body.Data, body.Options.CAS)
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, envelope(versionJSON(v, kv.Metadata{})))
	case "data PATCH":
		h.patch(w, r, caller, mount, path)
	case "data DELETE":
		h.done(w, r, h.svc.Delete(ctx, caller, mount, path, nil))
	case "delete POST", "delete PUT", "undelete POST", "undelete PUT", "destroy POST", "destroy PUT":
		var body struct {
			Versions []int64 `json:"versions"`
		}
		if !decode(w, r, &body) {
			return
		}
		fn := map[string]func(ctx context.Context, caller, mount, path string, versions []int64) error{
			"delete": h.svc.Delete, "undelete": h.svc.Undelete, "destroy": h.svc.Destroy,
		}[op]
		h.done(w, r, fn(ctx, caller, mount, path, body.Versions))
	case "metadata GET":
		m, err := h.svc.Metadata(ctx, caller, mount, path)
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, envelope(metadataJSON(m)))
	case "metadata LIST":
		keys, err := h.svc.List(ctx, caller, mount, path)
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, envelope(map[string]any{"keys": keys}))
	case "metadata POST", "metadata PUT":
		var body struct {
			MaxVersions        *int              `json:"max_versions"`
			CASRequired        *bool             `json:"cas_required"`
			DeleteVersionAfter *string           `json:"delete_version_after"`
			CustomMetadata     map[string]string `json:"custom_metadata"`
		}
		if !decode(w, r, &body) {
			return
		}
		u := kv.MetadataUpdate{MaxVersions: body.MaxVersions, CASRequired: body.CASRequired, CustomMetadata: body.CustomMetadata}
		if body.DeleteVersionAfter != nil {
			d, err := time.ParseDuration(*body.DeleteVersionAfter)
			if err != nil {
				writeErrors(w, http.StatusBadRequest, "delete_version_after: "+err.Error())
				return
			}
			u.DeleteVersionAfter = &d
		}
		h.done(w, r, h.svc.WriteMetadata(ctx, caller, mount, path, u))
	case "metadata DELETE":
		h.done(w, r, h.svc.DeleteAll(ctx, caller, mount, path))
	default:
		writeErrors(w, http.StatusMethodNotAllowed, fmt.Sprintf("unsupported operation %s on %s", method, r.URL.Path))
	}
}

// patch applies a JSON merge patch (RFC 7396) to the current version and
// writes the result as a new version, guarded by check-and-set.
func (h *Handler) patch(w http.ResponseWriter, r *http.Request, caller, mount, path string) {
	var body struct {
		Data    map[string]any `json:"data"`
		Options struct {
			CAS *int64 `json:"cas"`
		} `json:"options"`
	}
	if !decode(w, r, &body) {
		return
	}
	cur, err := h.svc.Read(r.Context(), caller, mount, path, 0)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	var doc map[string]any
	if err := json.Unmarshal(cur.Data, &doc); err != nil {
		h.writeError(w, r, err)
		return
	}
	merged, err := json.Marshal(mergePatch(doc, body.Data))
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	cas := body.Options.CAS
	if cas == nil {
		cas = &cur.Version.Version
	}
	v, err := h.svc.Write(r.Context(), caller, mount, path, merged, cas)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, envelope(versionJSON(v, kv.Metadata{})))
}

// mergePatch applies patch to doc as RFC 7396 describes: null removes a
// key, an object merges recursively, anything else replaces.
func mergePatch(doc, patch map[string]any) map[string]any {
	if doc == nil {
		doc = map[string]any{}
	}
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(doc, k)
		case map[string]any:
			sub, _ := doc[k].(map[string]any)
			doc[k] = mergePatch(sub, pv)
		default:
			doc[k] = v
		}
	}
	return doc
}

func queryVersion(r *http.Request) (int64, error) {
	s := r.URL.Query().Get("version")
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("version %q is not a version number", s)
	}
	return v, nil
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		writeErrors(w, http.StatusBadRequest, "reading the request body: "+err.Error())
		return false
	}
	if len(body) > maxBody {
		writeErrors(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", maxBody))
		return false
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return true
	}
	if err := json.Unmarshal(body, v); err != nil {
		writeErrors(w, http.StatusBadRequest, "failed to parse JSON input: "+err.Error())
		return false
	}
	return true
}

// done answers an operation without a body: 204, or the error.
func (h *Handler) done(w http.ResponseWriter, r *http.Request, err error) {
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeError maps the Service's errors to Vault's statuses.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, secretstore.ErrDenied):
		writeErrors(w, http.StatusForbidden, "permission denied", strings.TrimPrefix(err.Error(), secretstore.ErrDenied.Error()+": "))
	case errors.Is(err, kv.ErrNotFound), errors.Is(err, kv.ErrDeleted), errors.Is(err, kv.ErrDestroyed), errors.Is(err, secretstore.ErrNoMount):
		writeJSON(w, http.StatusNotFound, map[string]any{"errors": []string{}})
	case errors.Is(err, kv.ErrCASMismatch):
		writeErrors(w, http.StatusBadRequest, "check-and-set parameter did not match the current version")
	case errors.Is(err, kv.ErrCASRequired):
		writeErrors(w, http.StatusBadRequest, "check-and-set parameter required for this call")
	case errors.Is(err, kv.ErrInvalid), errors.Is(err, secretstore.ErrBadPath):
		writeErrors(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, kv.ErrBusy):
		writeErrors(w, http.StatusTooManyRequests, "too many concurrent changes to this secret; retry")
	case errors.Is(err, secretstore.ErrAudit):
		h.log.Error("secret request not answered: audit entry failed", "path", r.URL.Path, "err", err)
		writeErrors(w, http.StatusServiceUnavailable, "audit log unavailable; nothing was returned")
	default:
		h.log.Error("secret request failed", "path", r.URL.Path, "err", err)
		writeErrors(w, http.StatusInternalServerError, "internal error")
	}
}

func writeErrors(w http.ResponseWriter, code int, msgs ...string) {
	writeJSON(w, code, map[string]any{"errors": msgs})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// envelope wraps data in Vault's response envelope.
func envelope(data any) map[string]any {
	var id [16]byte
	rand.Read(id[:])
	return map[string]any{
		"request_id": hex.EncodeToString(id[:]), "lease_id": "", "renewable": false, "lease_duration": 0,
		"data": data, "wrap_info": nil, "warnings": nil, "auth": nil,
	}
}

func timeJSON(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func versionJSON(v kv.VersionMeta, m kv.Metadata) map[string]any {
	return map[string]any{
		"created_time":    timeJSON(v.CreatedTime),
		"deletion_time":   timeJSON(v.DeletionTime),
		"destroyed":       v.Destroyed,
		"version":         v.Version,
		"custom_metadata": customJSON(m.CustomMetadata),
	}
}

func customJSON(c map[string]string) any {
	if len(c) == 0 {
		return nil
	}
	return c
}

func metadataJSON(m kv.Metadata) map[string]any {
	versions := map[string]any{}
	for _, n := range m.VersionNumbers() {
		v, _ := m.Version(n)
		versions[strconv.FormatInt(n, 10)] = map[string]any{
			"created_time":  timeJSON(v.CreatedTime),
			"deletion_time": timeJSON(v.DeletionTime),
			"destroyed":     v.Destroyed,
		}
	}
	return map[string]any{
		"cas_required":         m.CASRequired,
		"created_time":         timeJSON(m.CreatedTime),
		"current_version":      m.CurrentVersion,
		"custom_metadata":      customJSON(m.CustomMetadata),
		"delete_version_after": m.DeleteVersionAfter.String(),
		"max_versions":         m.MaxVersions,
		"oldest_version":       m.OldestVersion,
		"updated_time":         timeJSON(m.UpdatedTime),
		"versions":             versions,
	}
}
