package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/sigil-pki/sigil/identity/entry"
	"github.com/sigil-pki/sigil/storage"
	"github.com/sigil-pki/sigil/tlog"
)

// defaultJWTSVIDTTL is the JWT-SVID lifetime of an entry that names none.
const defaultJWTSVIDTTL = 5 * time.Minute

// EntryJSON is a registration entry in the admin API.
type EntryJSON struct {
	ID        string   `json:"id,omitempty"`
	SPIFFEID  string   `json:"spiffe_id"`
	ParentID  string   `json:"parent_id,omitempty"`
	Selectors []string `json:"selectors"`
	// X509SVIDTTL and JWTSVIDTTL are Go durations; empty means the default.
	X509SVIDTTL string   `json:"x509_svid_ttl,omitempty"`
	JWTSVIDTTL  string   `json:"jwt_svid_ttl,omitempty"`
	DNSNames    []string `json:"dns_names,omitempty"`
	Hint        string   `json:"hint,omitempty"`
	CreatedAt   string   `json:"created_at,omitempty"`
	UpdatedAt   string   `json:"updated_at,omitempty"`
	// Revision must be sent back unchanged on update (compare-and-swap).
	Revision int64 `json:"revision,omitempty"`
}

func entryToJSON(e entry.Entry) EntryJSON {
	return EntryJSON{
		ID: e.ID, SPIFFEID: e.SPIFFEID, ParentID: e.ParentID, Selectors: e.Selectors,
		X509SVIDTTL: e.X509SVIDTTL.String(), JWTSVIDTTL: e.JWTSVIDTTL.String(),
		DNSNames: e.DNSNames, Hint: e.Hint,
		CreatedAt: e.CreatedAt.UTC().Format(time.RFC3339), UpdatedAt: e.UpdatedAt.UTC().Format(time.RFC3339),
		Revision: e.Revision,
	}
}

// entryFromJSON decodes the fields an operator sets.
func entryFromJSON(j EntryJSON) (entry.Entry, error) {
	e := entry.Entry{SPIFFEID: j.SPIFFEID, ParentID: j.ParentID, Selectors: j.Selectors, DNSNames: j.DNSNames, Hint: j.Hint}
	for _, f := range []struct {
		name string
		in   string
		out  *time.Duration
	}{{"x509_svid_ttl", j.X509SVIDTTL, &e.X509SVIDTTL}, {"jwt_svid_ttl", j.JWTSVIDTTL, &e.JWTSVIDTTL}} {
		if f.in == "" {
			continue
		}
		d, err := time.ParseDuration(f.in)
		if err != nil {
			return e, fmt.Errorf("%s: %q is not a duration such as 1h", f.name, f.in)
		}
		*f.out = d
	}
	return e, nil
}

// checkEntry fills defaults, normalises and validates an entry against
// this server's trust domain and leaf TTL limit.
func (s *Server) checkEntry(e entry.Entry) (entry.Entry, error) {
	e = e.Defaults(s.cfg.CA.Leaf.DefaultTTL.D(), defaultJWTSVIDTTL).Normalize()
	if err := errors.Join(e.Validate(s.cfg.TrustDomain, s.cfg.CA.Leaf.MaxTTL.D()), s.checkParent(e)); err != nil {
		return e, err
	}
	return e, nil
}

func (s *Server) handleEntryCreate(w http.ResponseWriter, r *http.Request) {
	var req EntryJSON
	if !decodeBody(w, r, &req) {
		return
	}
	e, err := entryFromJSON(req)
	if err == nil {
		e, err = entry.New(nil, s.clock(), e)
	}
	if err == nil {
		e, err = s.checkEntry(e)
	}
	if err != nil {
		writeErrors(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.auditEntry(r.Context(), tlog.KindEntryCreate, e); err != nil {
		s.writeAdminError(w, err)
		return
	}
	if err := s.store.CreateEntry(r.Context(), storage.RegistrationEntry(e)); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			writeErrors(w, http.StatusConflict, "an entry with this SPIFFE ID, parent and selectors exists already")
			return
		}
		s.writeAdminError(w, err)
		return
	}
	s.entryChanged(r.Context(), nil, &e)
	writeJSON(w, http.StatusOK, entryToJSON(e))
}

func (s *Server) handleEntryList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := storage.EntryFilter{SPIFFEID: q.Get("spiffe_id"), Selector: q.Get("selector"), AfterID: q.Get("after")}
	var ok bool
	if f.Limit, ok = queryLimit(w, r); !ok {
		return
	}
	list, err := s.store.ListEntries(r.Context(), f)
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	writeList(w, "entries", list, func(e storage.RegistrationEntry) EntryJSON { return entryToJSON(entry.Entry(e)) })
}

func (s *Server) handleEntryGet(w http.ResponseWriter, r *http.Request) {
	e, err := s.store.GetEntry(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, entryToJSON(entry.Entry(e)))
}

// handleEntryUpdate replaces an entry's settable fields; the body's
// revision must match the stored one.
func (s *Server) handleEntryUpdate(w http.ResponseWriter, r *http.Request) {
	var req EntryJSON
	if !decodeBody(w, r, &req) {
		return
	}
	old, err := s.store.GetEntry(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	if req.Revision == 0 {
		writeErrors(w, http.StatusBadRequest, "revision is required: send back the revision you read")
		return
	}
	e, err := entryFromJSON(req)
	if err == nil {
		e.ID, e.CreatedAt, e.UpdatedAt, e.Revision = old.ID, old.CreatedAt, s.clock(), req.Revision+1
		e, err = s.checkEntry(e)
	}
	if err != nil {
		writeErrors(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.auditEntry(r.Context(), tlog.KindEntryUpdate, e); err != nil {
		s.writeAdminError(w, err)
		return
	}
	if err := s.store.UpdateEntry(r.Context(), storage.RegistrationEntry(e), req.Revision); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			writeErrors(w, http.StatusConflict, "the entry changed since revision "+strconv.FormatInt(req.Revision, 10)+", or another entry has this identity: read it again")
			return
		}
		s.writeAdminError(w, err)
		return
	}
	prev := entry.Entry(old)
	s.entryChanged(r.Context(), &prev, &e)
	writeJSON(w, http.StatusOK, entryToJSON(e))
}

func (s *Server) handleEntryDelete(w http.ResponseWriter, r *http.Request) {
	e, err := s.store.GetEntry(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	if err := s.auditEntry(r.Context(), tlog.KindEntryDelete, entry.Entry(e)); err != nil {
		s.writeAdminError(w, err)
		return
	}
	if err := s.store.DeleteEntry(r.Context(), e.ID); err != nil {
		s.writeAdminError(w, err)
		return
	}
	prev := entry.Entry(e)
	s.entryChanged(r.Context(), &prev, nil)
	w.WriteHeader(http.StatusNoContent)
}

// auditEntry logs a registration change before it is stored.
func (s *Server) auditEntry(ctx context.Context, kind string, e entry.Entry) error {
	return s.audit(ctx, tlog.Entry{Kind: kind, Subject: tlog.Subject{
		Path: "entry/" + e.ID, Version: e.Revision, Detail: e.SPIFFEID,
	}})
}
