// Package server wires Sigil's parts together and owns their lifecycle:
// storage, the HSM token, the barrier and its seal, the certificate
// authority, the listeners, and background work that must run on one node at
// a time. It is the only package that knows every other one.
//
// Lifecycle: a server opens storage and is either uninitialised (nothing
// stored yet; Initialize creates the barrier, the root, the first
// intermediate and the operator identity), sealed (the barrier's keys are not
// in memory: it signs nothing, serves no secret, and says so), or unsealed
// (serving). Auto-unsealing seals (pkcs11, dev) unseal at start; the shamir
// seal waits for shares.
//
// server never reads flags, environment variables or files other than the
// ones the configuration names; cmd/sigil resolves those into Options.
package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sigil-pki/sigil/acme"
	"github.com/sigil-pki/sigil/barrier"
	"github.com/sigil-pki/sigil/ca"
	"github.com/sigil-pki/sigil/config"
	"github.com/sigil-pki/sigil/hsm"
	"github.com/sigil-pki/sigil/identity/jwtsvid"
	"github.com/sigil-pki/sigil/internal/atomicfile"
	"github.com/sigil-pki/sigil/secretstore/database"
	"github.com/sigil-pki/sigil/storage"
	"github.com/sigil-pki/sigil/tlog"
)

// Errors callers branch on.
var (
	// ErrSealed: the operation needs the barrier's keys and the server is sealed.
	//lint:ignore ST1005 Sigil is a proper noun and this text is shown to clients as is
	ErrSealed = errors.New("Sigil is sealed")
	// ErrNotInitialized: nothing has been initialised in this storage yet.
	//lint:ignore ST1005 Sigil is a proper noun and this text is shown to clients as is
	ErrNotInitialized = errors.New("Sigil is not initialized; run 'sigil operator init'")
)

// Options carries what cmd/sigil resolved from outside the config file.
type Options struct {
	// HSMPIN is the token's user PIN (read from hsm.pin_file or hsm.pin_env).
	HSMPIN string
	// PostgresPassword is read from storage.postgres.password_file.
	PostgresPassword string
	Logger           *slog.Logger
	// Clock, when set, replaces time.Now (tests).
	Clock func() time.Time
}

// Server is one Sigil node.
type Server struct {
	cfg     config.Config
	log     *slog.Logger
	clock   func() time.Time
	store   *storage.DB
	token   *hsm.Token
	barrier *barrier.Barrier
	keys    *keyStore
	metrics *metrics

	tlsMu sync.Mutex // serialises renewals of the HTTPS certificate

	mu        sync.Mutex // guards the fields below and lifecycle transitions
	authority *ca.Authority
	jwt       *jwtsvid.Issuer
	db        *database.Engine
	acme      *acme.Server
	tlog      *tlog.Log
	// logVerifier is the note verifier key of the log's checkpoints.
	logVerifier string
	stopBG      context.CancelFunc
	bgDone      chan struct{}
	tls         *tlsHolder

	ids     identityState
	secrets secretsState
	agents  agentHub
}

// New opens storage and the HSM token and, when the seal allows it,
// unseals. It starts no listener; Serve does.
func New(ctx context.Context, cfg config.Config, opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	clock := opts.Clock
	if clock == nil {
		clock = time.Now
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	st, err := storage.Open(ctx, storage.Options{
		Backend:  cfg.Storage.Type,
		Path:     cfg.Storage.SQLite.Path,
		DSN:      cfg.Storage.Postgres.DSN,
		Password: opts.PostgresPassword,
		MaxConns: cfg.Storage.Postgres.MaxConns,
		Logger:   log,
	})
	if err != nil {
		return nil, fmt.Errorf("opening %s storage: %w", cfg.Storage.Type, err)
	}
	s := &Server{
		cfg:     cfg,
		log:     log,
		clock:   clock,
		store:   st,
		metrics: newMetrics(),
		tls:     &tlsHolder{},
	}
	if cfg.HSM.Module != "" {
		s.token, err = hsm.Open(hsm.Config{
			Module:     cfg.HSM.Module,
			TokenLabel: cfg.HSM.TokenLabel,
			PIN:        opts.HSMPIN,
			Logger:     log,
		})
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("opening HSM token %q: %w", cfg.HSM.TokenLabel, err)
		}
	}
	s.barrier = barrier.New(barrier.Config{Store: st, Clock: clock, Logger: log})
	s.newSecrets(secretAuditor{s})
	s.newDatabase()
	if err := s.newACME(); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.refreshPolicies(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("loading access policies: %w", err)
	}
	if err := s.refreshRevoked(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("loading revoked certificates: %w", err)
	}
	s.keys = &keyStore{barrier: s.barrier, token: s.token, rootLabel: cfg.HSM.RootKeyLabel, curve: curveFor(cfg.CA.KeyType)}

	status, err := s.barrier.Status(ctx)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("reading seal status: %w", err)
	}
	if status.Initialized && status.Type != cfg.Seal.Type {
		s.Close()
		return nil, fmt.Errorf("storage was initialised with the %s seal, but seal.type is %s", status.Type, cfg.Seal.Type)
	}
	if status.Initialized {
		if err := s.loadTLSFromDisk(); err != nil {
			log.Warn("no usable HTTPS certificate on disk yet", "err", err)
		}
		if status.Type != "shamir" {
			if err := s.autoUnseal(ctx); err != nil {
				s.Close()
				return nil, err
			}
		} else {
			log.Warn("Sigil is sealed: provide unseal shares with 'sigil operator unseal'", "threshold", status.Threshold)
		}
	}
	return s, nil
}

// Close stops background work and releases storage and the token.
func (s *Server) Close() error {
	s.Seal()
	var errs []error
	errs = append(errs, s.db.Close())
	if s.acme != nil {
		s.acme.Close()
	}
	if s.token != nil {
		errs = append(errs, s.token.Close())
	}
	errs = append(errs, s.store.Close())
	return errors.Join(errs...)
}

func (s *Server) wrapper(ctx context.Context, create bool) (barrier.KeyWrapper, error) {
	switch s.cfg.Seal.Type {
	case "dev":
		s.log.Warn("using the dev seal: the master key's wrapping key is a plain file; never use this outside development", "key_file", s.cfg.Seal.Dev.KeyFile)
		return barrier.DevKeyWrapper(s.cfg.Seal.Dev.KeyFile, nil)
	case "pkcs11":
		if s.token == nil {
			return nil, errors.New("the pkcs11 seal needs the hsm section")
		}
		label := s.cfg.Seal.PKCS11.KeyLabel
		if create {
			if err := s.token.GenerateAESKey(ctx, label); err != nil && !errors.Is(err, hsm.ErrKeyExists) {
				return nil, fmt.Errorf("creating seal key %q in the HSM: %w", label, err)
			}
		}
		w, err := s.token.Wrapper(ctx, label)
		if err != nil {
			return nil, fmt.Errorf("finding seal key %q in the HSM: %w", label, err)
		}
		return w, nil
	}
	return nil, fmt.Errorf("seal %q does not unseal itself", s.cfg.Seal.Type)
}

func (s *Server) autoUnseal(ctx context.Context) error {
	w, err := s.wrapper(ctx, false)
	if err != nil {
		return err
	}
	if err := s.barrier.UnsealWrapped(ctx, w); err != nil {
		return fmt.Errorf("unsealing with the %s seal: %w", s.cfg.Seal.Type, err)
	}
	if err := s.afterUnseal(ctx); err != nil {
		return err
	}
	return s.audit(ctx, tlog.Entry{Kind: tlog.KindOperatorUnseal, Subject: tlog.Subject{Detail: s.cfg.Seal.Type + " seal, at start"}})
}

// afterUnseal starts the transparency log, loads the CA and starts the
// work that needs keys. Every certificate from here on is logged before it
// is handed out.
func (s *Server) afterUnseal(ctx context.Context) error {
	l, verifier, err := s.openLog(ctx)
	if err != nil {
		s.barrier.Seal()
		return fmt.Errorf("opening the transparency log: %w", err)
	}
	auth, err := ca.New(ctx, s.caConfig())
	if err != nil {
		l.Close()
		s.barrier.Seal()
		return fmt.Errorf("loading the certificate authority: %w", err)
	}
	s.mu.Lock()
	s.tlog, s.logVerifier = l, verifier
	s.mu.Unlock()
	jwt, err := s.openJWT(ctx)
	if err != nil {
		s.mu.Lock()
		s.tlog, s.logVerifier = nil, ""
		s.mu.Unlock()
		l.Close()
		s.barrier.Seal()
		return fmt.Errorf("loading the JWT-SVID keys: %w", err)
	}
	s.mu.Lock()
	s.authority, s.jwt = auth, jwt
	s.startBackgroundLocked()
	s.mu.Unlock()
	s.refreshTrust()
	if err := s.ensureTLS(ctx, auth); err != nil {
		s.log.Error("issuing the HTTPS certificate", "err", err)
	}
	s.metrics.sealed.Set(0)
	s.log.Info("Sigil is unsealed")
	return nil
}

func (s *Server) caConfig() ca.Config {
	c := s.cfg.CA
	return ca.Config{
		Store:                  s.store,
		Keys:                   s.keys,
		Recorder:               recorder{s},
		TrustDomain:            s.cfg.TrustDomain,
		DNSDomains:             c.DNSDomains,
		PublicURL:              s.cfg.Listen.PublicURL,
		RootCommonName:         c.Root.CommonName,
		IntermediateCommonName: c.Intermediate.CommonName,
		RootTTL:                c.Root.TTL.D(),
		IntermediateTTL:        c.Intermediate.TTL.D(),
		RotateBefore:           c.Intermediate.RotateBefore.D(),
		DefaultTTL:             c.Leaf.DefaultTTL.D(),
		MaxTTL:                 c.Leaf.MaxTTL.D(),
		CRLValidity:            c.CRL.Validity.D(),
		CRLRefresh:             c.CRL.Refresh.D(),
		OCSPValidity:           c.OCSP.Validity.D(),
		OCSPRefreshBefore:      c.OCSP.RefreshBefore.D(),
		Clock:                  s.clock,
		Logger:                 s.log,
	}
}

// Authority returns the CA, or ErrSealed.
func (s *Server) Authority() (*ca.Authority, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.authority == nil {
		return nil, s.notReadyLocked()
	}
	return s.authority, nil
}

func (s *Server) notReadyLocked() error {
	st, err := s.barrier.Status(context.Background())
	if err == nil && !st.Initialized {
		return ErrNotInitialized
	}
	return ErrSealed
}

// Status reports the barrier's state.
func (s *Server) Status(ctx context.Context) (barrier.Status, error) {
	return s.barrier.Status(ctx)
}

// SubmitShare feeds one shamir share; on the last one the server unseals.
func (s *Server) SubmitShare(ctx context.Context, share []byte) (barrier.Status, error) {
	st, err := s.barrier.SubmitShare(ctx, share)
	if err != nil {
		return st, err
	}
	if !st.Sealed {
		s.mu.Lock()
		loaded := s.authority != nil
		s.mu.Unlock()
		if !loaded {
			if err := s.afterUnseal(ctx); err != nil {
				return st, err
			}
			if err := s.audit(ctx, tlog.Entry{Kind: tlog.KindOperatorUnseal, Actor: "operator", Subject: tlog.Subject{Detail: "shamir seal, threshold of shares given"}}); err != nil {
				return st, err
			}
		}
	}
	return s.barrier.Status(ctx)
}

// Seal drops every key from memory at once. Auto-unsealing seals stay
// sealed until the server restarts or Unseal is called.
func (s *Server) Seal() {
	s.stopBackground()
	s.mu.Lock()
	s.authority, s.jwt = nil, nil
	l := s.tlog
	s.tlog, s.logVerifier = nil, ""
	s.mu.Unlock()
	if l != nil {
		// Entries already accepted are committed before the log closes.
		if err := l.Close(); err != nil {
			s.log.Error("closing the transparency log", "err", err)
		}
	}
	wasSealed := s.barrier.Sealed()
	s.barrier.Seal()
	s.refreshTrust()
	s.metrics.sealed.Set(1)
	if !wasSealed {
		s.log.Warn("Sigil is sealed")
	}
}

// RotateBarrier adds a keyring term.
func (s *Server) RotateBarrier(ctx context.Context) (uint32, error) {
	if s.barrier.Sealed() {
		return 0, ErrSealed
	}
	term, err := s.barrier.Rotate(ctx)
	if err != nil {
		return 0, err
	}
	s.log.Info("barrier keyring rotated", "term", term)
	if err := s.audit(ctx, tlog.Entry{Kind: tlog.KindOperatorRotate, Subject: tlog.Subject{Detail: fmt.Sprintf("barrier keyring term %d", term)}}); err != nil {
		return term, err
	}
	return term, nil
}

func (s *Server) startBackgroundLocked() {
	if s.stopBG != nil || s.authority == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopBG = cancel
	done := make(chan struct{})
	s.bgDone = done
	auth := s.authority
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		wg.Go(func() { s.runLeases(ctx) })
		s.runMaintenance(ctx, auth)
		wg.Wait()
	}()
}

// stopBackground stops the maintenance goroutine and waits for it without
// holding s.mu, which the goroutine takes.
func (s *Server) stopBackground() {
	s.mu.Lock()
	stop, done := s.stopBG, s.bgDone
	s.stopBG, s.bgDone = nil, nil
	s.mu.Unlock()
	if stop == nil {
		return
	}
	stop()
	<-done
}

// runMaintenance runs the CA's periodic work (CRL refresh, intermediate
// rotation) on exactly one node: whoever holds the "ca-maintenance" lock.
// Every node renews its own HTTPS certificate.
func (s *Server) runMaintenance(ctx context.Context, auth *ca.Authority) {
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	var lock storage.Lock
	defer func() {
		if lock != nil {
			lock.Release()
		}
	}()
	caDone := make(chan struct{})
	for {
		if lock == nil {
			l, err := s.store.TryLock(ctx, "ca-maintenance")
			switch {
			case err == nil:
				lock = l
				s.log.Info("this node runs CA maintenance")
				go func() {
					defer close(caDone)
					auth.Run(ctx)
				}()
			case !errors.Is(err, storage.ErrLocked) && ctx.Err() == nil:
				s.log.Error("taking the CA maintenance lock", "err", err)
			}
		}
		if err := s.ensureTLS(ctx, auth); err != nil && ctx.Err() == nil {
			s.log.Error("renewing the HTTPS certificate", "err", err)
		}
		s.maintainJWT(ctx, lock != nil)
		select {
		case <-ctx.Done():
			if lock != nil {
				<-caDone
			}
			return
		case <-tick.C:
		}
	}
}

// dataPath returns a path inside the data directory.
func (s *Server) dataPath(name string) string { return filepath.Join(s.cfg.DataDir, name) }

// writeFile writes a file atomically with the given mode.
func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data, mode)
}

// Bundle returns the trust bundle (roots, then unexpired intermediates) from
// storage; it needs no keys and works while sealed.
func (s *Server) Bundle(ctx context.Context) ([]*x509.Certificate, error) {
	issuers, err := s.store.ListIssuers(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock()
	var roots, inters []*x509.Certificate
	for _, iss := range issuers {
		c, err := x509.ParseCertificate(iss.CertDER)
		if err != nil {
			return nil, fmt.Errorf("parsing issuer %s: %w", iss.ID, err)
		}
		if now.After(c.NotAfter) {
			continue
		}
		if iss.Kind == "root" {
			roots = append(roots, c)
		} else {
			inters = append(inters, c)
		}
	}
	return append(roots, inters...), nil
}

var _ io.Closer = (*Server)(nil)
