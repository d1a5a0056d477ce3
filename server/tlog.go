package server

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/sigil-pki/sigil/storage"
	"github.com/sigil-pki/sigil/tlog"
)

// logKeyName is where the checkpoint signing key lives under the barrier.
const logKeyName = "tlog/signing-key"

// logKey is the stored form of the checkpoint key pair (note key strings).
type logKey struct {
	Signer   string `json:"skey"`
	Verifier string `json:"vkey"`
}

// loadLogKey returns the checkpoint key, creating it on first use.
func (s *Server) loadLogKey(ctx context.Context) (logKey, error) {
	var k logKey
	b, err := s.barrier.Get(ctx, logKeyName)
	switch {
	case err == nil:
		defer clear(b)
		if err := json.Unmarshal(b, &k); err != nil {
			return k, fmt.Errorf("decoding the log signing key: %w", err)
		}
		return k, nil
	case !errors.Is(err, storage.ErrNotFound):
		return k, fmt.Errorf("unsealing the log signing key: %w", err)
	}
	k.Signer, k.Verifier, err = tlog.GenerateKey(s.cfg.LogOrigin())
	if err != nil {
		return k, fmt.Errorf("generating the log signing key: %w", err)
	}
	b, err = json.Marshal(k)
	if err != nil {
		return k, err
	}
	defer clear(b)
	if err := s.barrier.Put(ctx, logKeyName, b); err != nil {
		return k, fmt.Errorf("sealing the log signing key: %w", err)
	}
	return k, nil
}

// openLog starts the transparency log's sequencer.
func (s *Server) openLog(ctx context.Context) (*tlog.Log, string, error) {
	k, err := s.loadLogKey(ctx)
	if err != nil {
		return nil, "", err
	}
	signer, err := note.NewSigner(k.Signer)
	if err != nil {
		return nil, "", fmt.Errorf("loading the log signing key: %w", err)
	}
	if signer.Name() != s.cfg.LogOrigin() {
		return nil, "", fmt.Errorf("the log was created with origin %q, but transparency_log.origin gives %q", signer.Name(), s.cfg.LogOrigin())
	}
	l, err := tlog.New(ctx, tlog.Config{
		Store:      s.store,
		Signer:     signer,
		Origin:     s.cfg.LogOrigin(),
		BatchSize:  s.cfg.TransparencyLog.BatchSize,
		BatchDelay: s.cfg.TransparencyLog.BatchDelay.D(),
		Logger:     s.log,
	})
	if err != nil {
		return nil, "", err
	}
	return l, k.Verifier, nil
}

// recorder appends every issuance to the log before the certificate is
// handed out (ca.Recorder).
type recorder struct{ s *Server }

func (r recorder) RecordIssuance(ctx context.Context, cert storage.Certificate) error {
	l, err := r.s.transparencyLog()
	if err != nil {
		return err
	}
	_, err = l.Append(ctx, tlog.NewIssuance(tlog.KindX509Issue, r.s.clock(), actor(ctx), cert.DER, cert.Serial))
	return err
}

func (r recorder) RecordCRL(ctx context.Context, crl storage.CRL) error {
	l, err := r.s.transparencyLog()
	if err != nil {
		return err
	}
	sum := sha256.Sum256(crl.DER)
	_, err = l.Append(ctx, tlog.Entry{
		Kind:  tlog.KindCRLPublish,
		Time:  r.s.clock(),
		Actor: actor(ctx),
		Subject: tlog.Subject{
			Path:    "crl/" + crl.IssuerID,
			Version: crl.Number,
			Detail:  "sha256=" + hex.EncodeToString(sum[:]),
		},
	})
	return err
}

// actor names who asked: the caller's SPIFFE ID, or Sigil itself.
func actor(ctx context.Context) string {
	if id := Caller(ctx); id != "" {
		return id
	}
	return "sigil"
}

// transparencyLog returns the running log, or ErrSealed.
func (s *Server) transparencyLog() (*tlog.Log, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tlog == nil {
		return nil, ErrSealed
	}
	return s.tlog, nil
}

// audit appends an operator or revocation entry and waits for it to be
// committed.
func (s *Server) audit(ctx context.Context, e tlog.Entry) error {
	l, err := s.transparencyLog()
	if err != nil {
		return err
	}
	if e.Time.IsZero() {
		e.Time = s.clock()
	}
	if e.Actor == "" {
		e.Actor = actor(ctx)
	}
	if _, err := l.Append(ctx, e); err != nil {
		return fmt.Errorf("appending %s to the transparency log: %w", e.Kind, err)
	}
	return nil
}

// LogVerifierKey returns the note verifier key of the log's checkpoints.
func (s *Server) LogVerifierKey() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logVerifier == "" {
		return "", ErrSealed
	}
	return s.logVerifier, nil
}

// logHandler serves the log's read API: checkpoint, tiles and entry
// bundles as in C2SP tlog-tiles, proofs, and the verifier key. Everything is
// read from storage, so any node of a cluster serves the same tree.
func (s *Server) logHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /log/checkpoint", s.handleCheckpoint)
	mux.HandleFunc("GET /log/key", s.handleLogKey)
	mux.HandleFunc("GET /log/tile/", s.handleTile)
	mux.HandleFunc("GET /log/proof/inclusion", s.handleInclusion)
	mux.HandleFunc("GET /log/proof/consistency", s.handleConsistency)
	return mux
}

func (s *Server) handleCheckpoint(w http.ResponseWriter, r *http.Request) {
	l, err := s.transparencyLog()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	cp, err := l.Checkpoint(r.Context())
	if err != nil {
		s.writeLogError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(cp)
}

func (s *Server) handleLogKey(w http.ResponseWriter, r *http.Request) {
	k, err := s.LogVerifierKey()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(k + "\n"))
}

func (s *Server) handleTile(w http.ResponseWriter, r *http.Request) {
	p, err := tlog.ParseTilePath(strings.TrimPrefix(r.URL.Path, "/log/"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	l, err := s.transparencyLog()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	b, err := l.ReadTile(r.Context(), p)
	if err != nil {
		s.writeLogError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if p.Width == 0 {
		// A full tile never changes.
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-store")
	}
	w.Write(b)
}

// ProofResponse is the JSON of the proof endpoints.
type ProofResponse struct {
	Index  int64    `json:"index,omitempty"`
	Size   int64    `json:"size,omitempty"`
	From   int64    `json:"from,omitempty"`
	To     int64    `json:"to,omitempty"`
	Hashes []string `json:"hashes"`
}

func (s *Server) handleInclusion(w http.ResponseWriter, r *http.Request) {
	index, err1 := queryInt(r, "index")
	size, err2 := queryInt(r, "size")
	if err := errors.Join(err1, err2); err != nil {
		writeErrors(w, http.StatusBadRequest, err.Error())
		return
	}
	if index >= size {
		writeErrors(w, http.StatusBadRequest, "index must be below size")
		return
	}
	l, err := s.transparencyLog()
	if err != nil {
		writeErrors(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	proof, err := l.InclusionProof(r.Context(), index, size)
	if err != nil {
		s.writeLogError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=3600")
	writeJSON(w, http.StatusOK, ProofResponse{Index: index, Size: size, Hashes: encodeHashes(proof)})
}

func (s *Server) handleConsistency(w http.ResponseWriter, r *http.Request) {
	from, err1 := queryInt(r, "from")
	to, err2 := queryInt(r, "to")
	if err := errors.Join(err1, err2); err != nil {
		writeErrors(w, http.StatusBadRequest, err.Error())
		return
	}
	if from < 1 || from > to {
		writeErrors(w, http.StatusBadRequest, "need 1 <= from <= to")
		return
	}
	l, err := s.transparencyLog()
	if err != nil {
		writeErrors(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	proof, err := l.ConsistencyProof(r.Context(), from, to)
	if err != nil {
		s.writeLogError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=3600")
	writeJSON(w, http.StatusOK, ProofResponse{From: from, To: to, Hashes: encodeHashes(proof)})
}

func queryInt(r *http.Request, name string) (int64, error) {
	v := r.URL.Query().Get(name)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s must be a non-negative integer", name)
	}
	return n, nil
}

func encodeHashes(hs [][32]byte) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = base64.StdEncoding.EncodeToString(h[:])
	}
	return out
}

func (s *Server) writeLogError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, tlog.ErrNotFound), errors.Is(err, storage.ErrNotFound):
		http.Error(w, "not found: beyond the log", http.StatusNotFound)
	default:
		s.log.Error("log read failed", "path", r.URL.Path, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
	}
}
