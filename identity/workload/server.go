package workload

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sigil-pki/sigil/identity/attest"
	"github.com/sigil-pki/sigil/identity/entry"
)

// MetadataKey is the gRPC metadata key every Workload API request must
// carry with the value "true" (SPIFFE Workload API, section 5.1).
const MetadataKey = "workload.spiffe.io"

// minRefresh is the shortest wait between two refreshes on one stream, so
// that an SVID whose lifetime was clipped to almost nothing cannot make a
// stream spin.
const minRefresh = 500 * time.Millisecond

// connBufferSize is the read and write buffer of one connection.
const connBufferSize = 4 << 10

// mintParallelism bounds the SVIDs minted at once for one response.
const mintParallelism = 64

// retryAfterFailure is how long a stream that has served SVIDs waits after
// failing to refresh them (server sealed, log unavailable) before trying
// again; the workload keeps the SVIDs it has, which are still valid.
const retryAfterFailure = 5 * time.Second

// DefaultRotateAt is the fraction of an SVID's lifetime after which a fresh
// one is pushed.
const DefaultRotateAt = 0.5

// Attestor finds the selectors of the process at the other end of a Unix
// socket connection.
type Attestor interface {
	// Attest returns the selectors of conn's peer. It MUST return an error,
	// and no selectors, when the peer cannot be identified with certainty;
	// the request is then refused. It MUST NOT read from or write to conn.
	Attest(ctx context.Context, conn *net.UnixConn) ([]attest.Selector, error)
}

// Entries looks up registration entries.
type Entries interface {
	// MatchingEntries returns the entries whose selectors are all among
	// selectors ("type:value" strings), in a stable order. No match is an
	// empty result, not an error.
	MatchingEntries(ctx context.Context, selectors []string) ([]entry.Entry, error)
}

// Trust is what workloads of the trust domain trust, at one moment. A
// Trust is never modified once returned; a change is a new *Trust.
type Trust struct {
	// X509Authorities are the trust domain's X.509 roots.
	X509Authorities []*x509.Certificate
	// JWTAuthorities are the JWT-SVID verification keys by key ID.
	JWTAuthorities map[string]crypto.PublicKey
	// X509Signer names the intermediate that signs X.509-SVIDs now; a
	// cached SVID signed under another name is replaced.
	X509Signer string
}

// Authority signs SVIDs and says what to trust.
type Authority interface {
	// IssueX509SVID signs an X.509-SVID for the entry (its SPIFFE ID, DNS
	// names and X.509-SVID TTL) over key's public key, records it, and
	// returns the leaf and the chain (intermediates). key, freshly made for
	// this SVID, is there so that an authority that forwards the request
	// can prove possession with a certificate request; it MUST NOT be
	// stored or sent anywhere. It MUST NOT return a certificate it failed
	// to record.
	IssueX509SVID(ctx context.Context, e entry.Entry, key crypto.Signer) (leaf *x509.Certificate, chain []*x509.Certificate, err error)
	// MintJWTSVID signs a JWT-SVID for the entry's SPIFFE ID (with its
	// JWT-SVID TTL) and audience, records it, and returns the token and its
	// expiry. It MUST NOT return a token it failed to record.
	MintJWTSVID(ctx context.Context, e entry.Entry, audience []string) (token string, expiry time.Time, err error)
	// Trust returns the current trust; it must be cheap.
	Trust() *Trust
}

// Keeper keeps X.509-SVIDs, with their keys, beyond the process, so that
// an agent restarted while its server is away can still serve them. The
// keys it is given MUST be kept encrypted and MUST NOT leave the node.
type Keeper interface {
	// Keep records an SVID just minted for the entry: its chain (leaf
	// first, concatenated DER) and PKCS#8 key.
	Keep(e entry.Entry, chainDER, keyDER []byte)
	// Kept returns an SVID kept for the entry (the freshest it holds), if
	// the entry is unchanged since (same revision).
	Kept(e entry.Entry) (chainDER, keyDER []byte, ok bool)
	// Take returns, and forgets, an SVID for the entry that was signed in
	// advance and never handed out; it is handed out instead of minting
	// one. ok is false when there is none.
	Take(e entry.Entry) (chainDER, keyDER []byte, ok bool)
}

// Updates tells streams that entries or trust may have changed.
type Updates interface {
	// Changed returns a channel that is closed at the next change.
	Changed() <-chan struct{}
}

// Config configures a Server.
type Config struct {
	// TrustDomain is the trust domain name, e.g. "example.org". Required.
	TrustDomain string
	// Attestor attests the caller of every request. Required.
	Attestor Attestor
	// Entries finds the entries a workload is entitled to. Required.
	Entries Entries
	// Authority signs SVIDs and supplies the trust bundle. Required.
	Authority Authority
	// RotateAt is the fraction of an X.509-SVID's lifetime after which
	// streams push a fresh one, in (0, 1). Default: DefaultRotateAt.
	RotateAt float64
	// Updates wakes open streams when entries or trust change.
	// Default: nil, which means streams only wake to rotate SVIDs.
	Updates Updates
	// Keeper, when set, is given every SVID minted, and asked for one when
	// minting fails: an unexpired kept SVID is served until the authority
	// is back. Default: nil, nothing kept.
	Keeper Keeper
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

	td        spiffeid.TrustDomain
	tdErr     error
	attestor  Attestor
	entries   Entries
	authority Authority
	updates   Updates
	keeper    Keeper
	now       func() time.Time
	log       *slog.Logger
	cache     *svidCache
	rotateAt  float64

	trustMu sync.Mutex
	trust   *Trust
	encoded encodedTrust
}

// encodedTrust is a Trust in the Workload API's wire forms.
type encodedTrust struct {
	x509DER []byte // roots, concatenated DER
	jwks    []byte // JWKS JSON
	jwt     *jwtbundle.Bundle
}

// never is the change channel of a server without Updates.
var never = make(chan struct{})

// New returns a Server configured by cfg. An invalid trust domain or a
// missing dependency is reported by Serve.
func New(cfg Config) *Server {
	s := &Server{
		attestor:  cfg.Attestor,
		entries:   cfg.Entries,
		authority: cfg.Authority,
		updates:   cfg.Updates,
		keeper:    cfg.Keeper,
		now:       cfg.Clock,
		log:       cfg.Logger,
		rotateAt:  cfg.RotateAt,
	}
	if s.rotateAt <= 0 || s.rotateAt >= 1 {
		s.rotateAt = DefaultRotateAt
	}
	s.td, s.tdErr = spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if s.tdErr == nil && (cfg.Attestor == nil || cfg.Entries == nil || cfg.Authority == nil) {
		s.tdErr = errors.New("attestor, entries and authority are all required")
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.cache = newSVIDCache(s.now)
	return s
}

// Serve answers Workload API requests on l until ctx is done, then stops
// the gRPC server, ending every open stream, and returns nil.
func (s *Server) Serve(ctx context.Context, l *net.UnixListener) error {
	if s.tdErr != nil {
		return fmt.Errorf("starting Workload API server: %w", s.tdErr)
	}
	gs := grpc.NewServer(
		grpc.Creds(unixCreds{}),
		grpc.ChainUnaryInterceptor(unaryHeaderCheck),
		grpc.ChainStreamInterceptor(streamHeaderCheck),
		// A workload's connection is mostly idle: small per-connection
		// buffers (gRPC shares the write buffer while idle by default)
		// keep thousands of open streams cheap. Message sizes are not
		// limited by them.
		grpc.ReadBufferSize(connBufferSize),
		grpc.WriteBufferSize(connBufferSize),
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

// attestCaller attests the process that made ctx's request, or returns
// Unauthenticated.
func (s *Server) attestCaller(ctx context.Context) ([]string, error) {
	sels, err := s.callerSelectors(ctx)
	if err != nil {
		s.log.WarnContext(ctx, "workload attestation failed", "err", err)
		return nil, status.Error(codes.Unauthenticated, "workload attestation failed")
	}
	return sels, nil
}

// entriesFor returns the entries matching sels, or a gRPC status error:
// PermissionDenied when none matches, Internal when the lookup failed.
func (s *Server) entriesFor(ctx context.Context, sels []string) ([]entry.Entry, error) {
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

// changed returns the channel closed at the next update.
func (s *Server) changed() <-chan struct{} {
	if s.updates == nil {
		return never
	}
	return s.updates.Changed()
}

// currentTrust returns the authority's trust and its wire encodings,
// re-encoding only when the trust changed.
func (s *Server) currentTrust() (*Trust, encodedTrust, error) {
	t := s.authority.Trust()
	s.trustMu.Lock()
	defer s.trustMu.Unlock()
	if t == s.trust {
		return t, s.encoded, nil
	}
	jb := jwtbundle.FromJWTAuthorities(s.td, t.JWTAuthorities)
	jwks, err := jb.Marshal()
	if err != nil {
		return nil, encodedTrust{}, fmt.Errorf("encoding the JWT bundle: %w", err)
	}
	s.trust = t
	s.encoded = encodedTrust{x509DER: concatDER(t.X509Authorities), jwks: jwks, jwt: jb}
	return t, s.encoded, nil
}

// wait blocks until at, a change, or the end of ctx; it reports false for
// the last.
func (s *Server) wait(ctx context.Context, at time.Time, changed <-chan struct{}) bool {
	var timeout <-chan time.Time
	if !at.IsZero() {
		t := time.NewTimer(max(at.Sub(s.now()), minRefresh))
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-changed:
	case <-timeout:
	}
	return true
}

// FetchX509SVID streams the caller's X.509-SVIDs: one response at once,
// then a new one whenever an SVID passes half its lifetime, an entry of the
// caller is created, changed or deleted, or the signing intermediate or
// the bundle changes. When the caller no longer matches any entry the
// stream ends with PermissionDenied.
func (s *Server) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	ctx := stream.Context()
	sels, err := s.attestCaller(ctx)
	if err != nil {
		return err
	}
	var sent string
	for {
		changed := s.changed()
		entries, err := s.entriesFor(ctx, sels)
		if err != nil {
			return err
		}
		resp, refreshAt, fp, err := s.x509Response(ctx, entries)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.ErrorContext(ctx, "issuing X.509-SVIDs", "err", err)
			if sent == "" {
				return status.Error(codes.Unavailable, "issuing X.509-SVIDs failed")
			}
			if !s.wait(ctx, s.now().Add(retryAfterFailure), changed) {
				return nil
			}
			continue
		}
		if fp != sent {
			if err := stream.Send(resp); err != nil {
				return fmt.Errorf("sending X.509-SVID response: %w", err)
			}
			sent = fp
		}
		if !s.wait(ctx, refreshAt, changed) {
			return nil
		}
	}
}

// cacheKey names what an SVID for e depends on: the entry's identity
// fields and the intermediate that signs.
func cacheKey(e entry.Entry, signer string) string {
	return strings.Join([]string{
		e.ID, e.SPIFFEID, strings.Join(e.DNSNames, ","),
		strconv.FormatInt(int64(e.X509SVIDTTL), 10), strconv.FormatInt(e.UpdatedAt.UnixNano(), 10), signer,
	}, "\x00")
}

// x509Response returns the response for entries, the time at which its
// earliest SVID passes half its lifetime, and a fingerprint that changes
// exactly when the response's content does. SVIDs come from the cache or
// are minted in parallel.
func (s *Server) x509Response(ctx context.Context, entries []entry.Entry) (*workload.X509SVIDResponse, time.Time, string, error) {
	trust, enc, err := s.currentTrust()
	if err != nil {
		return nil, time.Time{}, "", err
	}
	svids := make([]*cachedSVID, len(entries))
	var misses []int
	for n, e := range entries {
		if svids[n] = s.cache.fresh(cacheKey(e, trust.X509Signer)); svids[n] == nil {
			misses = append(misses, n)
		}
	}
	if len(misses) > 0 {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(mintParallelism)
		for _, n := range misses {
			e := entries[n]
			g.Go(func() error {
				sv, err := s.cache.get(gctx, cacheKey(e, trust.X509Signer), func(ctx context.Context) (*cachedSVID, error) {
					return s.mintX509(ctx, e)
				})
				svids[n] = sv
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return nil, time.Time{}, "", err
		}
	}
	resp := &workload.X509SVIDResponse{Svids: make([]*workload.X509SVID, len(entries))}
	var refreshAt time.Time
	var fp strings.Builder
	for n, e := range entries {
		sv := svids[n]
		resp.Svids[n] = &workload.X509SVID{
			SpiffeId:    e.SPIFFEID,
			X509Svid:    sv.chainDER,
			X509SvidKey: sv.keyDER,
			Bundle:      enc.x509DER,
			Hint:        e.Hint,
		}
		if refreshAt.IsZero() || sv.refreshAt.Before(refreshAt) {
			refreshAt = sv.refreshAt
		}
		fp.WriteString(sv.serial)
		fp.WriteByte(',')
	}
	fmt.Fprintf(&fp, "%p", trust)
	return resp, refreshAt, fp.String(), nil
}

// mintX509 issues a fresh SVID for e with a new key.
func (s *Server) mintX509(ctx context.Context, e entry.Entry) (*cachedSVID, error) {
	if sv := s.taken(e); sv != nil {
		s.log.InfoContext(ctx, "handing out an X.509-SVID signed in advance", "spiffe_id", e.SPIFFEID, "serial", sv.serial, "not_after", sv.notAfter)
		return sv, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key for %s: %w", e.SPIFFEID, err)
	}
	leaf, chain, err := s.authority.IssueX509SVID(ctx, e, key)
	if err != nil {
		if kept := s.kept(e); kept != nil {
			s.log.WarnContext(ctx, "issuing X.509-SVID failed; serving the kept one", "spiffe_id", e.SPIFFEID, "serial", kept.serial, "err", err)
			return kept, nil
		}
		return nil, fmt.Errorf("issuing X.509-SVID for %s: %w", e.SPIFFEID, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding key for %s: %w", e.SPIFFEID, err)
	}
	s.log.InfoContext(ctx, "issued X.509-SVID", "spiffe_id", e.SPIFFEID, "serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter)
	sv := &cachedSVID{
		chainDER:  concatDER(append([]*x509.Certificate{leaf}, chain...)),
		keyDER:    keyDER,
		serial:    leaf.SerialNumber.Text(16),
		notAfter:  leaf.NotAfter,
		refreshAt: rotationTime(leaf, s.now(), s.rotateAt),
	}
	if s.keeper != nil {
		s.keeper.Keep(e, sv.chainDER, sv.keyDER)
	}
	return sv, nil
}

// taken returns the keeper's SVID signed in advance for e, if it has one
// that is unexpired, with its rotation time; nil otherwise.
func (s *Server) taken(e entry.Entry) *cachedSVID {
	if s.keeper == nil {
		return nil
	}
	chainDER, keyDER, ok := s.keeper.Take(e)
	if !ok {
		return nil
	}
	leaf, ok := s.unexpiredLeaf(chainDER)
	if !ok {
		return nil
	}
	s.keeper.Keep(e, chainDER, keyDER)
	return &cachedSVID{
		chainDER:  chainDER,
		keyDER:    keyDER,
		serial:    leaf.SerialNumber.Text(16),
		notAfter:  leaf.NotAfter,
		refreshAt: rotationTime(leaf, s.now(), s.rotateAt),
	}
}

// kept returns the keeper's SVID for e while it is unexpired, to be
// refreshed again soon; nil otherwise.
func (s *Server) kept(e entry.Entry) *cachedSVID {
	if s.keeper == nil {
		return nil
	}
	chainDER, keyDER, ok := s.keeper.Kept(e)
	if !ok {
		return nil
	}
	leaf, ok := s.unexpiredLeaf(chainDER)
	if !ok {
		return nil
	}
	refreshAt := s.now().Add(retryAfterFailure)
	if leaf.NotAfter.Before(refreshAt) {
		refreshAt = leaf.NotAfter
	}
	return &cachedSVID{
		chainDER:  chainDER,
		keyDER:    keyDER,
		serial:    leaf.SerialNumber.Text(16),
		notAfter:  leaf.NotAfter,
		refreshAt: refreshAt,
	}
}

// unexpiredLeaf parses the leaf of a concatenated DER chain and reports
// whether it is still valid.
func (s *Server) unexpiredLeaf(chainDER []byte) (*x509.Certificate, bool) {
	certs, err := x509.ParseCertificates(chainDER)
	if err != nil || len(certs) == 0 || !s.now().Before(certs[0].NotAfter) {
		return nil, false
	}
	return certs[0], true
}

// rotationTime returns the moment leaf has used the fraction at of its
// lifetime, counting from NotBefore unless that is backdated (then from
// now).
func rotationTime(leaf *x509.Certificate, now time.Time, at float64) time.Time {
	start := leaf.NotBefore
	if now.After(start) {
		start = now
	}
	return start.Add(time.Duration(float64(leaf.NotAfter.Sub(start)) * at))
}

// FetchX509Bundles streams the trust domain's X.509 bundle: at once, then
// whenever it changes.
func (s *Server) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	return s.streamBundles(stream.Context(),
		func(enc encodedTrust) []byte { return enc.x509DER },
		func(b []byte) error {
			return stream.Send(&workload.X509BundlesResponse{Bundles: map[string][]byte{s.td.IDString(): b}})
		})
}

// FetchJWTBundles streams the trust domain's JWT bundle (a JWKS): at once,
// then whenever a key is added or retired.
func (s *Server) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	return s.streamBundles(stream.Context(),
		func(enc encodedTrust) []byte { return enc.jwks },
		func(b []byte) error {
			return stream.Send(&workload.JWTBundlesResponse{Bundles: map[string][]byte{s.td.IDString(): b}})
		})
}

// streamBundles runs a bundle stream for an attested caller with an
// identity: it sends pick's bytes of the current trust at once and again
// whenever they change. It ends with PermissionDenied once the caller no
// longer matches an entry.
func (s *Server) streamBundles(ctx context.Context, pick func(encodedTrust) []byte, send func([]byte) error) error {
	sels, err := s.attestCaller(ctx)
	if err != nil {
		return err
	}
	var last []byte
	for {
		changed := s.changed()
		if _, err := s.entriesFor(ctx, sels); err != nil {
			return err
		}
		t, enc, err := s.currentTrust()
		if err != nil {
			s.log.ErrorContext(ctx, "encoding bundles", "err", err)
			return status.Error(codes.Internal, "encoding bundles failed")
		}
		// A sealed server has nothing to trust; an empty bundle would make
		// the workload distrust everything, so nothing is sent until it
		// unseals.
		empty := len(t.X509Authorities) == 0 && len(t.JWTAuthorities) == 0
		if b := pick(enc); !empty && (last == nil || !bytes.Equal(b, last)) {
			if err := send(b); err != nil {
				return fmt.Errorf("sending bundle response: %w", err)
			}
			last = b
		}
		if !s.wait(ctx, time.Time{}, changed) {
			return nil
		}
	}
}

// FetchJWTSVID mints one JWT-SVID per entry of the caller (or only for the
// requested SPIFFE ID) for the requested audience.
func (s *Server) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if len(req.GetAudience()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	for _, a := range req.GetAudience() {
		if a == "" {
			return nil, status.Error(codes.InvalidArgument, "audience must not be empty")
		}
	}
	sels, err := s.attestCaller(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := s.entriesFor(ctx, sels)
	if err != nil {
		return nil, err
	}
	if want := req.GetSpiffeId(); want != "" {
		if _, err := spiffeid.FromString(want); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "invalid requested SPIFFE ID: %v", err)
		}
		var only []entry.Entry
		for _, e := range entries {
			if e.SPIFFEID == want {
				only = append(only, e)
				break
			}
		}
		if len(only) == 0 {
			return nil, status.Errorf(codes.PermissionDenied, "no identity issued for %s", want)
		}
		entries = only
	}
	resp := &workload.JWTSVIDResponse{Svids: make([]*workload.JWTSVID, 0, len(entries))}
	for _, e := range entries {
		token, exp, err := s.authority.MintJWTSVID(ctx, e, req.GetAudience())
		if err != nil {
			s.log.ErrorContext(ctx, "minting JWT-SVID", "spiffe_id", e.SPIFFEID, "err", err)
			return nil, status.Error(codes.Unavailable, "minting JWT-SVID failed")
		}
		s.log.InfoContext(ctx, "issued JWT-SVID", "spiffe_id", e.SPIFFEID, "audience", req.GetAudience(), "expiry", exp)
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: e.SPIFFEID, Svid: token, Hint: e.Hint})
	}
	return resp, nil
}

// ValidateJWTSVID checks a JWT-SVID's signature against the trust domain's
// JWT bundle, its expiry and that audience is among its audiences. Any
// attested caller may validate; it needs no identity of its own.
func (s *Server) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	switch {
	case req.GetAudience() == "":
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	case req.GetSvid() == "":
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	if _, err := s.attestCaller(ctx); err != nil {
		return nil, err
	}
	_, enc, err := s.currentTrust()
	if err != nil {
		return nil, status.Error(codes.Internal, "encoding bundles failed")
	}
	return validateJWT(enc.jwt, req.GetSvid(), req.GetAudience())
}

// validateJWT checks token, which comes from an untrusted caller, against
// bundle for audience, and answers as ValidateJWTSVID does.
func validateJWT(bundle *jwtbundle.Bundle, token, audience string) (*workload.ValidateJWTSVIDResponse, error) {
	svid, err := jwtsvid.ParseAndValidate(token, bundle, []string{audience})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "claims cannot be represented: %v", err)
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
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

// Listen binds the Workload API's Unix socket at path, replacing a stale
// socket file left by a previous run, and lets any local process connect:
// the attested selectors decide what it gets.
func Listen(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o777); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
