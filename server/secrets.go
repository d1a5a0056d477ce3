package server

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigil-pki/sigil/ca"
	"github.com/sigil-pki/sigil/identity/workload"
	"github.com/sigil-pki/sigil/secretstore"
	"github.com/sigil-pki/sigil/secretstore/kv"
	"github.com/sigil-pki/sigil/secretstore/policy"
	"github.com/sigil-pki/sigil/secretstore/vaultapi"
	"github.com/sigil-pki/sigil/storage"
	"github.com/sigil-pki/sigil/tlog"
)

// secretsState is the secret store's part of a server: the service and its
// HTTP face, the policy set in force, and the client certificate checks.
type secretsState struct {
	svc *secretstore.Service
	api *vaultapi.Handler

	policies atomic.Pointer[policySnapshot]
	reloadMu sync.Mutex

	certs   sync.Map // [32]byte (SHA-256 of the leaf) -> *verifiedCert
	nCerts  atomic.Int64
	revoked atomic.Pointer[map[string]struct{}]
}

// policySnapshot is a compiled policy set and the storage revision it was
// built from.
type policySnapshot struct {
	set      *policy.Set
	revision int64
}

// verifiedCert is a client certificate whose chain was verified against
// one trust snapshot.
type verifiedCert struct {
	id       string
	serial   string
	notAfter time.Time
	trust    *workload.Trust
}

// maxVerifiedCerts bounds the verified-certificate cache; past it, expired
// certificates are dropped, and if that is not enough, everything.
const maxVerifiedCerts = 65536

// newSecrets builds the secret store over s's storage and barrier,
// recording with aud (the transparency log, but in benchmarks that price
// the log entry).
func (s *Server) newSecrets(aud secretstore.Auditor) {
	engine := kv.New(kv.Config{Store: s.store, Sealer: s.barrier, MaxVersions: s.cfg.Secrets.MaxVersions, Clock: s.clock})
	var mounts []secretstore.Mount
	for _, m := range s.cfg.Secrets.Mounts {
		mounts = append(mounts, secretstore.Mount{Name: m, CASRequired: containsString(s.cfg.Secrets.CASRequired, m)})
	}
	st := &s.secrets
	st.policies.Store(&policySnapshot{set: policy.NewSet(), revision: -1})
	empty := map[string]struct{}{}
	st.revoked.Store(&empty)
	st.svc = secretstore.New(secretstore.Config{
		KV:       engine,
		Policies: func() secretstore.Decider { return st.policies.Load().set },
		Auditor:  aud,
		Mounts:   mounts,
	})
	st.api = vaultapi.New(vaultapi.Config{
		Service:      st.svc,
		Authenticate: s.authenticateSVID,
		Unavailable: func() error {
			if s.barrier.Sealed() {
				return ErrSealed
			}
			return nil
		},
		Logger: s.log,
	})
}

func containsString(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// secretsHandler serves the secret mounts and answers 404 for any other
// path under /v1/.
func (s *Server) secretsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.secrets.api.Owns(r.URL.Path) {
			writeErrors(w, http.StatusNotFound, "no handler for "+r.Method+" "+r.URL.Path)
			return
		}
		s.secrets.api.ServeHTTP(w, r)
	})
}

// secretAuditor appends secret store events to the transparency log.
type secretAuditor struct{ s *Server }

func (a secretAuditor) Record(ctx context.Context, e secretstore.Event) error {
	l, err := a.s.transparencyLog()
	if err != nil {
		return err
	}
	entry := tlog.Entry{
		Kind:    e.Op,
		Time:    a.s.clock(),
		Actor:   e.Caller,
		Subject: tlog.Subject{Path: e.Path, Version: e.Version},
	}
	if e.Denied {
		entry.Outcome = tlog.Outcome{Denied: true, Reason: e.Outcome}
	} else {
		entry.Subject.Detail = e.Outcome
	}
	_, err = l.Append(ctx, entry)
	return err
}

// refreshPolicies rebuilds the policy set when the stored policies changed.
// A stored policy that no longer parses keeps the previous set in force
// (dropping it could drop a deny) and is reported.
func (s *Server) refreshPolicies(ctx context.Context) error {
	st := &s.secrets
	st.reloadMu.Lock()
	defer st.reloadMu.Unlock()
	rev, err := s.store.PoliciesRevision(ctx)
	if err != nil {
		return err
	}
	if cur := st.policies.Load(); cur.revision == rev {
		return nil
	}
	stored, err := s.store.ListPolicies(ctx)
	if err != nil {
		return err
	}
	parsed := make([]*policy.Policy, 0, len(stored))
	for _, p := range stored {
		pp, err := policy.Parse(p.Name, []byte(p.Document))
		if err != nil {
			return fmt.Errorf("stored policy %s does not parse; the previous policy set stays in force: %w", p.Name, err)
		}
		parsed = append(parsed, pp)
	}
	st.policies.Store(&policySnapshot{set: policy.NewSet(parsed...), revision: rev})
	return nil
}

// refreshRevoked reloads the serials of revoked, unexpired certificates.
func (s *Server) refreshRevoked(ctx context.Context) error {
	set := map[string]struct{}{}
	f := storage.CertificateFilter{RevokedOnly: true, ValidAt: s.clock(), Limit: storage.MaxListLimit}
	for {
		page, err := s.store.ListCertificates(ctx, f)
		if err != nil {
			return err
		}
		for _, c := range page {
			set[c.Serial] = struct{}{}
		}
		if len(page) < f.Limit {
			break
		}
		f.AfterSeq = page[len(page)-1].Seq
	}
	s.secrets.revoked.Store(&set)
	return nil
}

// markRevoked adds a serial revoked on this node at once.
func (s *Server) markRevoked(serial string) {
	for {
		cur := s.secrets.revoked.Load()
		next := make(map[string]struct{}, len(*cur)+1)
		for k := range *cur {
			next[k] = struct{}{}
		}
		next[serial] = struct{}{}
		if s.secrets.revoked.CompareAndSwap(cur, &next) {
			return
		}
	}
}

// errRevokedSVID is authenticateSVID's error for a certificate whose chain
// verified but which is revoked; the SPIFFE ID is returned with it, for
// telling an evicted agent why, and must not be trusted for anything else.
var errRevokedSVID = errors.New("client certificate is revoked")

// authenticateSVID returns the SPIFFE ID of the request's client
// certificate: an X.509-SVID of this trust domain that chains to the
// current roots, is within its validity and not revoked. A certificate's
// chain is verified once per trust snapshot; validity and revocation are
// checked on every request.
func (s *Server) authenticateSVID(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", errors.New("a client certificate (an X.509-SVID) is required")
	}
	leaf := r.TLS.PeerCertificates[0]
	trust := workloadAuthority{s}.Trust()
	key := sha256.Sum256(leaf.Raw)
	now := s.clock()
	var vc *verifiedCert
	if v, ok := s.secrets.certs.Load(key); ok && v.(*verifiedCert).trust == trust {
		vc = v.(*verifiedCert)
	} else {
		var err error
		if vc, err = s.verifySVID(r, leaf, trust); err != nil {
			return "", err
		}
		s.cacheVerified(key, vc, now)
	}
	if !now.Before(vc.notAfter) {
		return "", errors.New("client certificate has expired")
	}
	if _, revoked := (*s.secrets.revoked.Load())[vc.serial]; revoked {
		return vc.id, errRevokedSVID
	}
	return vc.id, nil
}

func (s *Server) verifySVID(r *http.Request, leaf *x509.Certificate, trust *workload.Trust) (*verifiedCert, error) {
	if len(trust.X509Authorities) == 0 {
		return nil, ErrSealed
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range trust.X509Authorities {
		roots.AddCert(c)
	}
	for _, c := range r.TLS.PeerCertificates[1:] {
		inters.AddCert(c)
	}
	// A client that sends only its leaf is verified through the CA's own
	// unexpired, unrevoked intermediates.
	if auth, err := s.Authority(); err == nil {
		for _, c := range auth.Intermediates() {
			inters.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inters, CurrentTime: s.clock(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("client certificate not trusted: %v", err)
	}
	if len(leaf.URIs) != 1 {
		return nil, errors.New("client certificate is not an X.509-SVID: it must carry exactly one URI SAN")
	}
	id, err := spiffeid.FromURI(leaf.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("client certificate is not an X.509-SVID: %v", err)
	}
	if id.TrustDomain().Name() != s.cfg.TrustDomain {
		return nil, fmt.Errorf("client certificate is from trust domain %s, not %s", id.TrustDomain().Name(), s.cfg.TrustDomain)
	}
	serial := ca.Serial(leaf.SerialNumber)
	if _, err := s.store.GetCertificate(r.Context(), serial); err != nil {
		return nil, errors.New("client certificate is not on record")
	}
	return &verifiedCert{id: id.String(), serial: serial, notAfter: leaf.NotAfter, trust: trust}, nil
}

func (s *Server) cacheVerified(key [32]byte, vc *verifiedCert, now time.Time) {
	if _, loaded := s.secrets.certs.Swap(key, vc); loaded {
		return
	}
	if s.secrets.nCerts.Add(1) <= maxVerifiedCerts {
		return
	}
	s.secrets.certs.Range(func(k, v any) bool {
		if !now.Before(v.(*verifiedCert).notAfter) {
			s.secrets.certs.Delete(k)
			s.secrets.nCerts.Add(-1)
		}
		return true
	})
	if s.secrets.nCerts.Load() > maxVerifiedCerts {
		s.secrets.certs.Clear()
		s.secrets.nCerts.Store(0)
	}
}

// PolicyJSON is a policy as the admin API shows it.
type PolicyJSON struct {
	Name      string `json:"name,omitempty"`
	Policy    string `json:"policy"`
	Revision  int64  `json:"revision,omitempty"`
	UpdatedAt string `json:"updated_at,omitempty"`
}

// PolicyCheckRequest is the body of POST /v1/policies/check.
type PolicyCheckRequest struct {
	SPIFFEID   string `json:"spiffe_id"`
	Path       string `json:"path"`
	Capability string `json:"capability"`
}

// PolicyCheckResponse explains a decision.
type PolicyCheckResponse struct {
	Allowed     bool   `json:"allowed"`
	Explanation string `json:"explanation"`
}

func (s *Server) handlePolicyPut(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := policy.ValidName(name); err != nil {
		writeErrors(w, http.StatusBadRequest, err.Error())
		return
	}
	var req PolicyJSON
	if !decodeBody(w, r, &req) {
		return
	}
	if _, err := policy.Parse(name, []byte(req.Policy)); err != nil {
		writeErrors(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.audit(r.Context(), tlog.Entry{Kind: tlog.KindPolicyChange, Subject: tlog.Subject{
		Path: "policy/" + name, Detail: "write, document sha256 " + fmt.Sprintf("%x", sha256.Sum256([]byte(req.Policy)))}}); err != nil {
		s.writeAdminError(w, err)
		return
	}
	if err := s.store.PutPolicy(r.Context(), storage.Policy{Name: name, Document: req.Policy, UpdatedAt: s.clock()}); err != nil {
		s.writeAdminError(w, err)
		return
	}
	if err := s.refreshPolicies(r.Context()); err != nil {
		s.writeAdminError(w, err)
		return
	}
	s.handlePolicyGet(w, r)
}

func (s *Server) handlePolicyGet(w http.ResponseWriter, r *http.Request) {
	p, err := s.store.GetPolicy(r.Context(), r.PathValue("name"))
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, PolicyJSON{Name: p.Name, Policy: p.Document, Revision: p.Revision, UpdatedAt: p.UpdatedAt.Format(time.RFC3339)})
}

func (s *Server) handlePolicyList(w http.ResponseWriter, r *http.Request) {
	all, err := s.store.ListPolicies(r.Context())
	if err != nil {
		s.writeAdminError(w, err)
		return
	}
	names := make([]string, 0, len(all))
	for _, p := range all {
		names = append(names, p.Name)
	}
	writeJSON(w, http.StatusOK, map[string]any{"policies": names})
}

func (s *Server) handlePolicyDelete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, err := s.store.GetPolicy(r.Context(), name); err != nil {
		s.writeAdminError(w, err)
		return
	}
	if err := s.audit(r.Context(), tlog.Entry{Kind: tlog.KindPolicyChange, Subject: tlog.Subject{Path: "policy/" + name, Detail: "delete"}}); err != nil {
		s.writeAdminError(w, err)
		return
	}
	if err := s.store.DeletePolicy(r.Context(), name); err != nil {
		s.writeAdminError(w, err)
		return
	}
	if err := s.refreshPolicies(r.Context()); err != nil {
		s.writeAdminError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handlePolicyCheck(w http.ResponseWriter, r *http.Request) {
	var req PolicyCheckRequest
	if !decodeBody(w, r, &req) {
		return
	}
	c, err := policy.ParseCapability(req.Capability)
	if err != nil {
		writeErrors(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.refreshPolicies(r.Context()); err != nil {
		s.writeAdminError(w, err)
		return
	}
	d := s.secrets.svc.Check(req.SPIFFEID, strings.Trim(req.Path, "/"), c)
	writeJSON(w, http.StatusOK, PolicyCheckResponse{Allowed: d.Allowed, Explanation: d.String()})
}
