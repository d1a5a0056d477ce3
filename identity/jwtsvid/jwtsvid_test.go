package jwtsvid_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	spiffejwt "github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/sigil-pki/sigil/identity/jwtsvid"
	"github.com/sigil-pki/sigil/identity/jwtsvid/jwtsvidtest"
)

// logRecorder remembers what it recorded, or fails when told to.
type logRecorder struct {
	mu   sync.Mutex
	got  []jwtsvid.Minted
	fail error
}

func (r *logRecorder) RecordJWT(_ context.Context, m jwtsvid.Minted) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.got = append(r.got, m)
	return nil
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func open(t *testing.T, s *jwtsvidtest.MemSealer, r *logRecorder, clk func() time.Time) *jwtsvid.Issuer {
	t.Helper()
	i, err := jwtsvid.Open(context.Background(), jwtsvid.Config{
		Sealer:      s,
		IsNotFound:  jwtsvidtest.IsNotFound,
		Recorder:    r,
		TrustDomain: "example.org",
		RotateEvery: time.Hour,
		PrepareLead: 10 * time.Minute,
		MaxTTL:      30 * time.Minute,
		Clock:       clk,
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return i
}

func bundleOf(i *jwtsvid.Issuer) *jwtbundle.Bundle {
	return jwtbundle.FromJWTAuthorities(spiffeid.RequireTrustDomainFromString("example.org"), i.PublicKeys())
}

func TestMintValidatesWithGoSpiffe(t *testing.T) {
	rec := &logRecorder{}
	i := open(t, &jwtsvidtest.MemSealer{}, rec, nil)
	token, exp, err := i.Mint(context.Background(), "spiffe://example.org/web", []string{"db", "cache"}, 5*time.Minute)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	if d := time.Until(exp); d < 4*time.Minute || d > 5*time.Minute {
		t.Errorf("expiry in %v, want about 5m", d)
	}
	svid, err := spiffejwt.ParseAndValidate(token, bundleOf(i), []string{"cache"})
	if err != nil {
		t.Fatalf("ParseAndValidate: %v", err)
	}
	if svid.ID.String() != "spiffe://example.org/web" || !svid.Expiry.Equal(exp) {
		t.Errorf("svid = %v exp %v, want spiffe://example.org/web exp %v", svid.ID, svid.Expiry, exp)
	}
	if _, err := spiffejwt.ParseAndValidate(token, bundleOf(i), []string{"other"}); err == nil {
		t.Error("token validated for an audience it was not minted for")
	}
	parsed, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if h := parsed.Signatures[0].Header; h.Algorithm != "ES256" || h.ExtraHeaders["typ"] != "JWT" || h.KeyID == "" {
		t.Errorf("header = alg %s typ %v kid %q, want ES256, JWT and a key ID", h.Algorithm, h.ExtraHeaders["typ"], h.KeyID)
	}
	if len(rec.got) != 1 {
		t.Fatalf("recorded %d mints, want 1", len(rec.got))
	}
	m := rec.got[0]
	if m.SPIFFEID != "spiffe://example.org/web" || m.KeyID != parsed.Signatures[0].Header.KeyID ||
		m.TokenSHA256 != sha256.Sum256([]byte(token)) || strings.Join(m.Audience, ",") != "db,cache" {
		t.Errorf("recorded %+v", m)
	}
}

func TestMintRefuses(t *testing.T) {
	rec := &logRecorder{}
	i := open(t, &jwtsvidtest.MemSealer{}, rec, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		id       string
		aud      []string
		wantText string
	}{
		{"no audience", "spiffe://example.org/web", nil, "audience"},
		{"empty audience", "spiffe://example.org/web", []string{""}, "audience"},
		{"other trust domain", "spiffe://other.org/web", []string{"a"}, "outside trust domain"},
		{"not a SPIFFE ID", "https://example.org/web", []string{"a"}, "subject"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, _, err := i.Mint(ctx, tc.id, tc.aud, time.Minute)
			if err == nil || !strings.Contains(err.Error(), tc.wantText) || tok != "" {
				t.Errorf("Mint = %q, %v; want an error about %s", tok, err, tc.wantText)
			}
		})
	}
	rec.fail = errors.New("log unavailable")
	tok, _, err := i.Mint(ctx, "spiffe://example.org/web", []string{"a"}, time.Minute)
	if err == nil || tok != "" {
		t.Errorf("Mint with a failing recorder = %q, %v; want no token and an error", tok, err)
	}
	if len(rec.got) != 0 {
		t.Errorf("refused mints were recorded: %+v", rec.got)
	}
}

func TestTTLClippedToMax(t *testing.T) {
	i := open(t, &jwtsvidtest.MemSealer{}, &logRecorder{}, nil)
	_, exp, err := i.Mint(context.Background(), "spiffe://example.org/web", []string{"a"}, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(exp); d > 30*time.Minute {
		t.Errorf("expiry in %v, want at most MaxTTL 30m", d)
	}
}

func TestKeysPersistAndRotate(t *testing.T) {
	ctx := context.Background()
	s := &jwtsvidtest.MemSealer{}
	a := open(t, s, &logRecorder{}, nil)
	b := open(t, s, &logRecorder{}, nil)
	if a.KeyIDs() != b.KeyIDs() || a.KeyIDs() == "" {
		t.Fatalf("reopened key set %q differs from %q", b.KeyIDs(), a.KeyIDs())
	}
	old, _, err := a.Mint(ctx, "spiffe://example.org/web", []string{"a"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	kid, err := a.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(a.KeyIDs(), ","+kid) {
		t.Errorf("after Rotate keys = %q, want the new key %s last", a.KeyIDs(), kid)
	}
	fresh, _, err := a.Mint(ctx, "spiffe://example.org/web", []string{"a"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jose.ParseSigned(fresh, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if got := parsed.Signatures[0].Header.KeyID; got != kid {
		t.Errorf("token after rotation signed by %s, want %s", got, kid)
	}
	// The other node learns the new key by reloading, and both tokens
	// verify against its bundle.
	changed, err := b.Reload(ctx)
	if err != nil || !changed {
		t.Fatalf("Reload = %v, %v; want a change", changed, err)
	}
	for _, tok := range []string{old, fresh} {
		if _, err := spiffejwt.ParseAndValidate(tok, bundleOf(b), []string{"a"}); err != nil {
			t.Errorf("token does not verify after rotation: %v", err)
		}
	}
}

func TestMaintainPreparesActivatesAndRetires(t *testing.T) {
	ctx := context.Background()
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	i := open(t, &jwtsvidtest.MemSealer{}, &logRecorder{}, clk.Now)
	first := i.KeyIDs()

	steps := []struct {
		advance     time.Duration
		wantChanged bool
		wantKeys    int
		wantActive  string // "first", "second"
	}{
		{advance: 30 * time.Minute, wantChanged: false, wantKeys: 1, wantActive: "first"},
		// 50 min: within PrepareLead of the 1 h rotation: a successor is
		// published but does not sign yet.
		{advance: 20 * time.Minute, wantChanged: true, wantKeys: 2, wantActive: "first"},
		{advance: 5 * time.Minute, wantChanged: false, wantKeys: 2, wantActive: "first"},
		// 1 h 5 min: the successor signs; the first key stays published.
		{advance: 10 * time.Minute, wantChanged: false, wantKeys: 2, wantActive: "second"},
		// 1 h 31 min: more than MaxTTL since the successor took over.
		{advance: 26 * time.Minute, wantChanged: true, wantKeys: 1, wantActive: "second"},
	}
	var second string
	for n, st := range steps {
		clk.Add(st.advance)
		changed, err := i.Maintain(ctx)
		if err != nil {
			t.Fatalf("step %d: Maintain: %v", n, err)
		}
		ids := strings.Split(i.KeyIDs(), ",")
		if changed != st.wantChanged || len(ids) != st.wantKeys {
			t.Fatalf("step %d: changed=%v keys=%v; want changed=%v and %d keys", n, changed, ids, st.wantChanged, st.wantKeys)
		}
		if len(ids) == 2 {
			second = ids[1]
		}
		want := first
		if st.wantActive == "second" {
			want = second
		}
		if got := i.ActiveKeyID(); got != want {
			t.Errorf("step %d: active key %s, want %s (%s)", n, got, want, st.wantActive)
		}
	}
}

func TestOpenRejectsCorruptSet(t *testing.T) {
	s := &jwtsvidtest.MemSealer{}
	if err := s.Put(context.Background(), jwtsvid.SealedName, []byte(`{"version":1,"keys":[{"kid":"x","pkcs8":"AAAA"}]}`)); err != nil {
		t.Fatal(err)
	}
	_, err := jwtsvid.Open(context.Background(), jwtsvid.Config{
		Sealer: s, IsNotFound: jwtsvidtest.IsNotFound,
		Recorder: &logRecorder{}, TrustDomain: "example.org",
	})
	if err == nil || !strings.Contains(err.Error(), "decoding key x") {
		t.Errorf("Open over a corrupt key set = %v, want a decoding error", err)
	}
}
