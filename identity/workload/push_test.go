package workload

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sigil-pki/sigil/identity/attest"
	"github.com/sigil-pki/sigil/identity/entry"
)

// mutableEntries is an entry list that tests change while streams are open.
type mutableEntries struct {
	mu   sync.Mutex
	list entryList
}

func (m *mutableEntries) set(l ...entry.Entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.list = l
}

func (m *mutableEntries) MatchingEntries(ctx context.Context, sels []string) ([]entry.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.list.MatchingEntries(ctx, sels)
}

// rawStream opens FetchX509SVID with the security header on a plain gRPC
// connection, so a test can see every response the server pushes.
func rawStream(t *testing.T, addr string) grpc.ServerStreamingClient[workload.X509SVIDResponse] {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx := metadata.NewOutgoingContext(t.Context(), metadata.Pairs(MetadataKey, "true"))
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

func svidIDs(resp *workload.X509SVIDResponse) []string {
	var ids []string
	for _, s := range resp.Svids {
		ids = append(ids, s.SpiffeId)
	}
	return ids
}

func TestCachedSVIDShared(t *testing.T) {
	ca := newTestCA(t)
	addr := startServer(t, &fixedAttestor{sels: webSelectors}, entryList{webEntry(time.Hour)}, ca, nil)
	var serials []string
	for range 3 {
		svid, err := newClient(t, addr).FetchX509SVID(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		serials = append(serials, svid.Certificates[0].SerialNumber.String())
	}
	if serials[0] != serials[1] || serials[1] != serials[2] {
		t.Errorf("three workloads of one entry got serials %v, want one shared SVID", serials)
	}
	if n := ca.issuedCount(); n != 1 {
		t.Errorf("%d SVIDs signed for three fetches of one entry, want 1", n)
	}
}

func TestCacheFreshness(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	c := newSVIDCache(clock)
	minted := 0
	mint := func(context.Context) (*cachedSVID, error) {
		minted++
		return &cachedSVID{serial: time.Duration(minted).String(), notAfter: now.Add(time.Minute), refreshAt: now.Add(30 * time.Second)}, nil
	}
	steps := []struct {
		at         time.Duration
		wantMinted int
	}{
		{0, 1},
		{29 * time.Second, 1}, // fresh: shared
		{30 * time.Second, 2}, // half-life reached: replaced
		{59 * time.Second, 2},
		{2 * time.Minute, 3}, // expired: never served
	}
	start := now
	for _, st := range steps {
		now = start.Add(st.at)
		sv, err := c.get(t.Context(), "k", mint)
		if err != nil {
			t.Fatal(err)
		}
		if minted != st.wantMinted {
			t.Errorf("at +%v: %d mints, want %d", st.at, minted, st.wantMinted)
		}
		if !now.Before(sv.notAfter) {
			t.Errorf("at +%v: served an SVID that expired at %v", st.at, sv.notAfter)
		}
	}
	if _, err := c.get(t.Context(), "bad", func(context.Context) (*cachedSVID, error) { return nil, errors.New("sign failed") }); err == nil {
		t.Error("a failed mint returned no error")
	}
	if c.len() != 1 {
		t.Errorf("cache holds %d SVIDs, want 1 (a failed mint caches nothing)", c.len())
	}
}

func TestEntryChangesPushed(t *testing.T) {
	ca := newTestCA(t)
	var updates Broadcast
	admin := entry.Entry{ID: "admin", SPIFFEID: "spiffe://example.org/web-admin", Selectors: []string{"unix:user:web"}, X509SVIDTTL: time.Hour}
	web := webEntry(time.Hour)
	web.ID = "web"
	entries := &mutableEntries{list: entryList{web}}
	addr := startServer(t, &fixedAttestor{sels: webSelectors}, entries, ca, &updates)
	stream := rawStream(t, addr)

	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := svidIDs(first); !slices.Equal(got, []string{web.SPIFFEID}) {
		t.Fatalf("first response %v", got)
	}
	// A new matching entry arrives on the open stream without a poll.
	entries.set(web, admin)
	updates.Notify()
	second, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := svidIDs(second); !slices.Equal(got, []string{web.SPIFFEID, admin.SPIFFEID}) {
		t.Fatalf("after adding an entry: %v", got)
	}
	if first.Svids[0].X509Svid == nil || string(second.Svids[0].X509Svid) != string(first.Svids[0].X509Svid) {
		t.Error("the unchanged entry's SVID was re-issued, want the cached one")
	}
	// A notification that changes nothing sends nothing; deleting an
	// entry removes its identity.
	updates.Notify()
	entries.set(admin)
	updates.Notify()
	third, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := svidIDs(third); !slices.Equal(got, []string{admin.SPIFFEID}) {
		t.Fatalf("after deleting an entry: %v", got)
	}
	// With no entry left the stream ends as SPIRE's does.
	entries.set()
	updates.Notify()
	if _, err := stream.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("after deleting every entry: %v, want PermissionDenied", err)
	}
}

func TestTrustChangePushed(t *testing.T) {
	ca := newTestCA(t)
	var updates Broadcast
	addr := startServer(t, &fixedAttestor{sels: webSelectors}, entryList{webEntry(time.Hour)}, ca, &updates)
	client := newClient(t, addr)

	svids := make(chan string, 4)
	jwtKeys := make(chan []string, 4)
	go func() {
		_ = client.WatchX509Context(t.Context(), x509Watcher(func(c *workloadapi.X509Context) {
			svids <- c.DefaultSVID().Certificates[1].SerialNumber.String()
		}))
	}()
	go func() {
		_ = client.WatchJWTBundles(t.Context(), jwtWatcher(func(kids []string) { jwtKeys <- kids }))
	}()
	firstInter := recv(t, svids)
	firstKeys := recv(t, jwtKeys)
	if len(firstKeys) != 1 {
		t.Fatalf("JWT bundle has keys %v, want one", firstKeys)
	}

	ca.rotate(t)
	updates.Notify()
	if got := recv(t, svids); got == firstInter {
		t.Errorf("after the intermediate rotated the SVID is still signed by %s", got)
	}
	if got := recv(t, jwtKeys); len(got) != 2 || !slices.Contains(got, firstKeys[0]) {
		t.Errorf("after the JWT key rotated the bundle has %v, want the old and a new key", got)
	}
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing pushed within 10s")
	}
	panic("unreachable")
}

type x509Watcher func(*workloadapi.X509Context)

func (w x509Watcher) OnX509ContextUpdate(c *workloadapi.X509Context) { w(c) }
func (x509Watcher) OnX509ContextWatchError(error)                    {}

type jwtWatcher func([]string)

func (w jwtWatcher) OnJWTBundlesUpdate(s *jwtbundle.Set) {
	b, ok := s.Get(spiffeid.RequireTrustDomainFromString(testTD))
	if !ok {
		return
	}
	var kids []string
	for kid := range b.JWTAuthorities() {
		kids = append(kids, kid)
	}
	slices.Sort(kids)
	w(kids)
}
func (jwtWatcher) OnJWTBundlesWatchError(error) {}

func TestJWTSVID(t *testing.T) {
	ca := newTestCA(t)
	web := webEntry(time.Hour)
	web.JWTSVIDTTL = 5 * time.Minute
	addr := startServer(t, &fixedAttestor{sels: webSelectors}, entryList{web}, ca, nil)
	client := newClient(t, addr)

	svid, err := client.FetchJWTSVID(t.Context(), jwtsvid.Params{Audience: "db", ExtraAudiences: []string{"cache"}})
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	if svid.ID.String() != web.SPIFFEID || svid.Hint != web.Hint {
		t.Errorf("JWT-SVID for %s hint %q, want %s hint %q", svid.ID, svid.Hint, web.SPIFFEID, web.Hint)
	}
	if d := time.Until(svid.Expiry); d <= 4*time.Minute || d > 5*time.Minute {
		t.Errorf("JWT-SVID expires in %v, want the entry's 5m", d)
	}
	// A relying party verifies with the bundle alone.
	bundles, err := client.FetchJWTBundles(t.Context())
	if err != nil {
		t.Fatalf("FetchJWTBundles: %v", err)
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), bundles, []string{"cache"}); err != nil {
		t.Errorf("ParseAndValidate against the fetched bundle: %v", err)
	}
	// And through the API.
	validated, err := client.ValidateJWTSVID(t.Context(), svid.Marshal(), "db")
	if err != nil {
		t.Fatalf("ValidateJWTSVID: %v", err)
	}
	if validated.ID != svid.ID || validated.Claims["sub"] != web.SPIFFEID {
		t.Errorf("validated %s with sub %v", validated.ID, validated.Claims["sub"])
	}

	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"validate for another audience", func() error {
			_, err := client.ValidateJWTSVID(t.Context(), svid.Marshal(), "other")
			return err
		}, codes.InvalidArgument},
		{"validate a tampered token", func() error {
			tok := svid.Marshal()
			_, err := client.ValidateJWTSVID(t.Context(), tok[:len(tok)-4]+"AAAA", "db")
			return err
		}, codes.InvalidArgument},
		{"validate without audience", func() error {
			_, err := client.ValidateJWTSVID(t.Context(), svid.Marshal(), "")
			return err
		}, codes.InvalidArgument},
		{"fetch without audience", func() error {
			_, err := client.FetchJWTSVID(t.Context(), jwtsvid.Params{})
			return err
		}, codes.InvalidArgument},
		{"fetch an identity the workload does not have", func() error {
			_, err := client.FetchJWTSVID(t.Context(), jwtsvid.Params{Audience: "db", Subject: spiffeid.RequireFromString("spiffe://example.org/db")})
			return err
		}, codes.PermissionDenied},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(tc.call()); got != tc.want {
				t.Errorf("code %v, want %v", got, tc.want)
			}
		})
	}
}

func TestAttestedPerRequest(t *testing.T) {
	ca := newTestCA(t)
	db := entry.Entry{SPIFFEID: "spiffe://example.org/db", Selectors: []string{"unix:uid:2000"}, JWTSVIDTTL: time.Minute}
	att := &fixedAttestor{}
	att.set(webSelectors...)
	addr := startServer(t, att, entryList{webEntry(time.Hour), db}, ca, nil)
	client := newClient(t, addr)

	for _, step := range []struct {
		sels []attest.Selector
		want string
	}{
		{webSelectors, "spiffe://example.org/web"},
		{[]attest.Selector{{Type: "unix", Value: "uid:2000"}}, "spiffe://example.org/db"},
	} {
		att.set(step.sels...)
		svid, err := client.FetchJWTSVID(t.Context(), jwtsvid.Params{Audience: "a"})
		if err != nil {
			t.Fatal(err)
		}
		if svid.ID.String() != step.want {
			t.Errorf("on one connection with selectors %v got %s, want %s", step.sels, svid.ID, step.want)
		}
	}
	att.mu.Lock()
	defer att.mu.Unlock()
	if att.calls != 2 {
		t.Errorf("attested %d times for two requests, want 2", att.calls)
	}
}
