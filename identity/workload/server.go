package workload

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sigil-pki/sigil/identity/attest"
	"github.com/sigil-pki/sigil/identity/entry"
)

// MetadataKey is the gRPC metadata key every Workload API request must
// carry with the value "true" (SPIFFE Workload API, section 5.1).
const MetadataKey = "workload.spiffe.io"

// minRefresh is the shortest wait between two pushes on one stream, so
// that an SVID whose lifetime was clipped to almost nothing cannot make a
// stream spin.
const minRefresh = 500 * time.Millisecond

// Attestor finds the selectors of the process at the other end of a Unix
// socket connection.
type Attestor interface {
	// Attest returns the selectors of conn's peer. It MUST return an error,
	// and no selectors, when the peer cannot be identified with certainty;
	// the connection is then refused service. It MUST NOT read from or write
	// to conn.
	Attest(ctx context.Context, conn *net.UnixConn) ([]attest.Selector, error)
}

// Entries looks up registration entries.
type Entries interface {
	// MatchingEntries returns the entries whose selectors are all among
	// selectors ("type:value" strings), in a stable order. No match is an
	// empty result, not an error.
	MatchingEntries(ctx context.Context, selectors []string) ([]entry.Entry, error)
}

// Issuer signs X.509-SVIDs.
type Issuer interface {
	// IssueSVID signs an X.509-SVID for the SPIFFE ID with the given public
	// key, DNS names and TTL, records it, and returns the leaf and the chain
	// (intermediates). It MUST NOT return a certificate it failed to record.
	IssueSVID(ctx context.Context, spiffeID string, dns []string, pub crypto.PublicKey, ttl time.Duration) (leaf *x509.Certificate, chain []*x509.Certificate, err error)
	// Bundle returns the trust domain's X.509 roots.
	Bundle() []*x509.Certificate
}

// Config configures a Server.
type Config struct {
	// TrustDomain is the trust domain name, e.g. "example.org". Required.
	TrustDomain string
	// Attestor attests each connection's peer. Required.
	Attestor Attestor
	// Entries finds the entries a workload is entitled to. Required.
	Entries Entries
	// Issuer signs SVIDs and supplies the bundle. Required.
	Issuer Issuer
	// Clock tells the time used to schedule SVID rotation.
	// Default: nil, which means time.Now.
	Clock func() time.Time
	// Logger receives records about issuance and failures.
	// Default: nil, which discards.
	Logger *slog.Logger
}

// Server implements the SPIFFE Workload API. Keys for SVIDs always come
// from crypto/rand.
type Server struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	td       spiffeid.TrustDomain
	tdErr    error
	attestor Attestor
	entries  Entries
	issuer   Issuer
	now      func() time.Time
	log      *slog.Logger
}

// New returns a Server configured by cfg. An invalid trust domain or a
// missing dependency is reported by Serve.
func New(cfg Config) *Server {
	s := &Server{
		attestor: cfg.Attestor,
		entries:  cfg.Entries,
		issuer:   cfg.Issuer,
		now:      cfg.Clock,
		log:      cfg.Logger,
	}
	s.td, s.tdErr = spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if s.tdErr == nil && (cfg.Attestor == nil || cfg.Entries == nil || cfg.Issuer == nil) {
		s.tdErr = errors.New("attestor, entries and issuer are all required")
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// Serve answers Workload API requests on l until ctx is done, then stops
// the gRPC server, ending every open stream, and returns nil. Every
// accepted connection is attested once, before its first request.
func (s *Server) Serve(ctx context.Context, l *net.UnixListener) error {
	if s.tdErr != nil {
		return fmt.Errorf("starting Workload API server: %w", s.tdErr)
	}
	gs := grpc.NewServer(
		grpc.Creds(&attestingCreds{ctx: ctx, attestor: s.attestor}),
		grpc.ChainUnaryInterceptor(unaryHeaderCheck),
		grpc.ChainStreamInterceptor(streamHeaderCheck),
	)
	workload.RegisterSpiffeWorkloadAPIServer(gs, s)
	stop := context.AfterFunc(ctx, gs.Stop)
	defer stop()
	if err := gs.Serve(l); err != nil && ctx.Err() == nil {
		return fmt.Errorf("serving Workload API on %s: %w", l.Addr(), err)
	}
	return nil
}

func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(MetadataKey); len(v) != 1 || v[0] != "true" {
		return status.Errorf(codes.InvalidArgument, "security header missing from request: %s: true is required", MetadataKey)
	}
	return nil
}

func unaryHeaderCheck(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func streamHeaderCheck(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := checkHeader(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}

// matchingEntries returns the entries of the caller of ctx, or a gRPC
// status error: Unauthenticated when attestation failed, PermissionDenied
// when no entry matches, Internal when the lookup failed.
func (s *Server) matchingEntries(ctx context.Context) ([]entry.Entry, error) {
	sels, err := callerSelectors(ctx)
	if err != nil {
		s.log.WarnContext(ctx, "workload attestation failed", "err", err)
		return nil, status.Error(codes.Unauthenticated, "workload attestation failed")
	}
	entries, err := s.entries.MatchingEntries(ctx, sels)
	if err != nil {
		s.log.ErrorContext(ctx, "looking up registration entries", "err", err)
		return nil, status.Error(codes.Internal, "looking up registration entries failed")
	}
	if len(entries) == 0 {
		s.log.InfoContext(ctx, "no identity issued", "selectors", sels)
		return nil, status.Error(codes.PermissionDenied, "no identity issued")
	}
	return entries, nil
}

// FetchX509SVID streams the caller's X.509-SVIDs: one response at once,
// then a fresh one whenever the earliest SVID of the previous response
// passes half its lifetime, until the stream's context is done.
func (s *Server) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	ctx := stream.Context()
	for {
		entries, err := s.matchingEntries(ctx)
		if err != nil {
			return err
		}
		resp, refreshAt, err := s.x509Response(ctx, entries)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.ErrorContext(ctx, "issuing X.509-SVIDs", "err", err)
			return status.Error(codes.Unavailable, "issuing X.509-SVIDs failed")
		}
		if err := stream.Send(resp); err != nil {
			return fmt.Errorf("sending X.509-SVID response: %w", err)
		}
		wait := max(refreshAt.Sub(s.now()), minRefresh)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// x509Response issues one SVID per entry and returns the response and the
// time at which the earliest of them passes half its lifetime.
func (s *Server) x509Response(ctx context.Context, entries []entry.Entry) (*workload.X509SVIDResponse, time.Time, error) {
	bundle := concatDER(s.issuer.Bundle())
	resp := &workload.X509SVIDResponse{Svids: make([]*workload.X509SVID, 0, len(entries))}
	var refreshAt time.Time
	for _, e := range entries {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("generating key for %s: %w", e.SPIFFEID, err)
		}
		leaf, chain, err := s.issuer.IssueSVID(ctx, e.SPIFFEID, e.DNSNames, key.Public(), e.X509SVIDTTL)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("issuing X.509-SVID for %s: %w", e.SPIFFEID, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("encoding key for %s: %w", e.SPIFFEID, err)
		}
		resp.Svids = append(resp.Svids, &workload.X509SVID{
			SpiffeId:    e.SPIFFEID,
			X509Svid:    concatDER(append([]*x509.Certificate{leaf}, chain...)),
			X509SvidKey: keyDER,
			Bundle:      bundle,
			Hint:        e.Hint,
		})
		s.log.InfoContext(ctx, "issued X.509-SVID", "spiffe_id", e.SPIFFEID, "serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter)
		if h := halfLife(leaf, s.now()); refreshAt.IsZero() || h.Before(refreshAt) {
			refreshAt = h
		}
	}
	return resp, refreshAt, nil
}

// halfLife returns the moment leaf passes half its remaining lifetime as
// seen from now, counting from NotBefore unless that is backdated.
func halfLife(leaf *x509.Certificate, now time.Time) time.Time {
	start := leaf.NotBefore
	if now.After(start) {
		start = now
	}
	return start.Add(leaf.NotAfter.Sub(start) / 2)
}

// FetchX509Bundles sends the trust bundle of the trust domain, then keeps
// the stream open until its context is done.
func (s *Server) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	ctx := stream.Context()
	if _, err := s.matchingEntries(ctx); err != nil {
		return err
	}
	resp := &workload.X509BundlesResponse{Bundles: map[string][]byte{
		s.td.IDString(): concatDER(s.issuer.Bundle()),
	}}
	if err := stream.Send(resp); err != nil {
		return fmt.Errorf("sending X.509 bundle response: %w", err)
	}
	<-ctx.Done()
	return nil
}

func concatDER(certs []*x509.Certificate) []byte {
	var n int
	for _, c := range certs {
		n += len(c.Raw)
	}
	out := make([]byte, 0, n)
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}
