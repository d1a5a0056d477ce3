// Package agent is the Sigil agent: it runs on a node other than the
// server's, attests the node to the server (join token or x509pop), keeps
// its agent SVID renewed, holds the registration entries parented to it
// (a full set, then the changes the server pushes, checked against the
// server's digest), and serves the SPIFFE Workload API to the node's
// workloads on a local socket through identity/workload and
// identity/attest, exactly as the server does.
//
// Workload keys are made here and never leave the node: the agent sends
// certificate requests and the server, after checking that the entry is
// this agent's, signs and logs them. Halfway to each rotation the agent
// signs a spare SVID, so that a rotation can be handed out while the
// server is away. It also renders secrets into files (KV secrets, dynamic
// and static database credentials), read as identities of its entries.
// Its state (agent SVID, entries, trust, workload SVIDs, rendered
// secrets) is kept in an encrypted cache whose key is on disk only
// sealed (cache.go), so that a restart without the server serves what is
// still valid.
//
// The agent must never send or store a private key in the clear, never
// serve an entry the server did not give it, never serve an SVID or keep
// a secret file past its expiry, never log a secret, and stops serving at
// once, erasing its cache, when the server says it was evicted.
package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sigil-pki/sigil/config"
	"github.com/sigil-pki/sigil/identity/agentapi"
	"github.com/sigil-pki/sigil/identity/attest"
	"github.com/sigil-pki/sigil/identity/entry"
	"github.com/sigil-pki/sigil/identity/workload"
)

// ErrEvicted is returned by Run when the server evicted this agent.
var ErrEvicted = errors.New("agent: evicted by the server")

// Defaults of Config fields left zero.
const (
	DefaultSyncTimeout = 30 * time.Second
	minBackoff         = 500 * time.Millisecond
	maxBackoff         = 30 * time.Second
	requestTimeout     = 30 * time.Second
)

// Config configures an Agent.
type Config struct {
	// ServerURL is the server's HTTPS base URL, e.g. https://sigil:8443.
	// Required.
	ServerURL string
	// ServerRoots verify the server's certificate (the trust domain's
	// roots). Required.
	ServerRoots *x509.CertPool
	// TrustDomain is the trust domain name. Required.
	TrustDomain string
	// JoinToken and NodeID attest with a join token; NodeID may be empty
	// when the token names the node.
	JoinToken string
	NodeID    string
	// NodeCertificate, when set, attests with x509pop: a certificate (and
	// its key) from a CA the server's agents.x509pop_ca_file names.
	NodeCertificate *tls.Certificate
	// Cache, when set, keeps the agent SVID, entries, trust and workload
	// SVIDs across restarts, encrypted. Default nil: memory only.
	Cache *Cache
	// Secrets are rendered into files, read as identities of this
	// agent's entries. Default none.
	Secrets []config.SecretFile
	// SecretsRefresh is how often KV secrets and static credentials are
	// read again. Default 30s.
	SecretsRefresh time.Duration
	// SyncTimeout is how long the sync stream may stay silent before the
	// agent reconnects; it must exceed the server's agents.sync_interval.
	// Default DefaultSyncTimeout.
	SyncTimeout time.Duration
	// RotateAt is the fraction of a workload X.509-SVID's lifetime after
	// which a fresh one is pushed. Default workload.DefaultRotateAt.
	RotateAt float64
	// Clock tells the time. Default time.Now.
	Clock func() time.Time
	// Logger receives the agent's records. Default: discard.
	Logger *slog.Logger
}

// Agent is a running agent. It implements the Workload API server's
// Entries and Authority.
type Agent struct {
	cfg  Config
	log  *slog.Logger
	now  func() time.Time
	base *http.Transport

	updates workload.Broadcast
	ready   chan struct{}
	readyMu sync.Once

	mu      sync.RWMutex
	svid    *tls.Certificate // agent SVID with its key
	svidAt  time.Time        // when svid was received
	node    string
	agentID string
	parents []string // ParentIDs whose entries this agent receives
	client  *http.Client
	// attestClient carries attestations only.
	attestClient *http.Client
	entries      map[string]entry.Entry
	digest       string
	trust        *workload.Trust
	wire         *agentapi.Trust
	evicted      bool
	lastSync     time.Time
	kept         map[string]keptSVID
	spares       map[string]keptSVID
	prefetch     map[string]*time.Timer
	runCtx       context.Context
	stop         context.CancelCauseFunc
	files        map[string]keptFile
	dirty        bool

	renderers []*renderer
	readers   map[string]*reader
}

// New checks cfg and returns an Agent that has not attested yet.
func New(cfg Config) (*Agent, error) {
	switch {
	case cfg.ServerURL == "":
		return nil, errors.New("agent: the server URL is required")
	case cfg.ServerRoots == nil:
		return nil, errors.New("agent: the server's roots are required")
	case cfg.TrustDomain == "":
		return nil, errors.New("agent: the trust domain is required")
	case cfg.JoinToken == "" && cfg.NodeCertificate == nil && cfg.Cache == nil:
		return nil, errors.New("agent: a join token, a node certificate or a cache holding an agent SVID is required")
	}
	if cfg.NodeID != "" {
		if err := agentapi.CheckNodeID(cfg.NodeID); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = DefaultSyncTimeout
	}
	a := &Agent{
		cfg:     cfg,
		log:     cfg.Logger,
		now:     cfg.Clock,
		ready:   make(chan struct{}),
		entries: map[string]entry.Entry{},
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.base = &http.Transport{
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.ServerRoots,
			GetClientCertificate: a.clientCertificate},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}
	a.client = &http.Client{Transport: a.base}
	// Attestation presents the node certificate (x509pop) or nothing,
	// never an agent SVID, on connections of its own.
	a.attestClient = &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.ServerRoots,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if cfg.NodeCertificate != nil {
					return cfg.NodeCertificate, nil
				}
				return &tls.Certificate{}, nil
			}},
		DisableKeepAlives: true,
	}}
	if cfg.SecretsRefresh <= 0 {
		cfg.SecretsRefresh = 30 * time.Second
	}
	for _, f := range cfg.Secrets {
		r, err := newRenderer(a, f, cfg.SecretsRefresh)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		a.renderers = append(a.renderers, r)
	}
	return a, nil
}

// clientCertificate presents the agent SVID while it is unexpired, or
// nothing.
func (a *Agent) clientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.svid != nil && a.now().Before(a.svid.Leaf.NotAfter) {
		return a.svid, nil
	}
	return &tls.Certificate{}, nil
}

// NodeID returns the node this agent attested as ("" before).
func (a *Agent) NodeID() string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.node
}

// Run attests (or resumes from the cache), then keeps the SVID renewed and
// the entries in sync while serving the Workload API on l, until ctx is
// done (nil) or the agent is evicted (ErrEvicted).
func (a *Agent) Run(ctx context.Context, l *net.UnixListener) error {
	resumed := a.resume()
	if !resumed {
		if err := a.attestWithRetry(ctx); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	a.mu.Lock()
	a.runCtx, a.stop = ctx, cancel
	a.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { a.renewLoop(ctx, cancel) })
	wg.Go(func() { a.syncLoop(ctx, cancel) })
	if a.cfg.Cache != nil {
		wg.Go(func() { a.persistLoop(ctx) })
	}
	select {
	case <-a.ready:
	case <-ctx.Done():
		wg.Wait()
		return a.endErr(ctx)
	}
	ws := workload.New(workload.Config{
		TrustDomain: a.cfg.TrustDomain,
		Attestor:    attest.New(attest.Config{Logger: a.log}),
		Entries:     a,
		Authority:   a,
		Keeper:      a,
		Updates:     &a.updates,
		RotateAt:    a.cfg.RotateAt,
		Clock:       a.now,
		Logger:      a.log,
	})
	wg.Go(func() { a.runSecrets(ctx, a.renderers) })
	a.log.Info("serving the Workload API", "node", a.NodeID(), "socket", l.Addr().String())
	err := ws.Serve(ctx, l)
	cancel(nil)
	wg.Wait()
	if err != nil {
		return err
	}
	return a.endErr(ctx)
}

// endErr is Run's result once ctx is done: ErrEvicted when that was the
// cause.
func (a *Agent) endErr(ctx context.Context) error {
	if errors.Is(context.Cause(ctx), ErrEvicted) {
		return ErrEvicted
	}
	return nil
}

// markReady opens the Workload API once entries and trust are known.
func (a *Agent) markReady() { a.readyMu.Do(func() { close(a.ready) }) }

// backoff waits d (doubling up to maxBackoff) or until ctx ends.
func backoff(ctx context.Context, d *time.Duration) bool {
	t := time.NewTimer(*d)
	defer t.Stop()
	*d = min(*d*2, maxBackoff)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// newKey makes a P-256 key and a certificate request signed with it.
func newKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating a key: %w", err)
	}
	csr, err := csrFor(key)
	return key, csr, err
}

func csrFor(key crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("making a certificate request: %w", err)
	}
	return der, nil
}

// parseChain parses DER certificates, leaf first.
func parseChain(ders [][]byte) ([]*x509.Certificate, error) {
	if len(ders) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	out := make([]*x509.Certificate, len(ders))
	for i, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i, err)
		}
		out[i] = c
	}
	return out, nil
}

// samePublicKey reports whether two public keys are equal.
func samePublicKey(x, y crypto.PublicKey) bool {
	k, ok := x.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(y)
}
