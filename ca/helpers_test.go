package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/storage"
)

// memStore is an in-memory Store with the storage.Store contract, plus
// counters and fault hooks for the tests.
type memStore struct {
	mu      sync.Mutex
	issuers map[string]storage.Issuer
	certs   map[string]storage.Certificate
	seq     int64
	crlNums map[string]int64
	crls    map[string]storage.CRL

	// batches records the size of every InsertCertificates call.
	batches []int
	// gate, when set, makes the next InsertCertificates call wait for it to
	// be closed; blocked is then incremented.
	gate    chan struct{}
	blocked atomic.Int32
	// reject fails any InsertCertificates call holding a record with this
	// subject.
	reject string
	// getCalls counts GetCertificate calls.
	getCalls atomic.Int64
}

func newMemStore() *memStore {
	return &memStore{
		issuers: map[string]storage.Issuer{},
		certs:   map[string]storage.Certificate{},
		crlNums: map[string]int64{},
		crls:    map[string]storage.CRL{},
	}
}

func (s *memStore) PutIssuer(_ context.Context, iss storage.Issuer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.issuers[iss.ID] = iss
	return nil
}

func (s *memStore) ListIssuers(context.Context) ([]storage.Issuer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []storage.Issuer
	for _, i := range s.issuers {
		out = append(out, i)
	}
	slices.SortFunc(out, func(a, b storage.Issuer) int { return a.NotBefore.Compare(b.NotBefore) })
	return out, nil
}

func (s *memStore) InsertCertificates(_ context.Context, certs []storage.Certificate) error {
	s.mu.Lock()
	gate := s.gate
	s.gate = nil
	s.mu.Unlock()
	if gate != nil {
		s.blocked.Add(1)
		<-gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, len(certs))
	for _, c := range certs {
		if _, ok := s.certs[c.Serial]; ok {
			return storage.ErrConflict
		}
		if s.reject != "" && c.Subject == s.reject {
			return fmt.Errorf("rejecting %s", c.Subject)
		}
	}
	for _, c := range certs {
		s.seq++
		c.Seq = s.seq
		s.certs[c.Serial] = c
	}
	return nil
}

func (s *memStore) GetCertificate(_ context.Context, serial string) (storage.Certificate, error) {
	s.getCalls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.certs[serial]
	if !ok {
		return storage.Certificate{}, storage.ErrNotFound
	}
	return c, nil
}

func (s *memStore) ListCertificates(_ context.Context, f storage.CertificateFilter) ([]storage.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	var all []storage.Certificate
	for _, c := range s.certs {
		all = append(all, c)
	}
	slices.SortFunc(all, func(a, b storage.Certificate) int { return int(a.Seq - b.Seq) })
	var out []storage.Certificate
	for _, c := range all {
		switch {
		case c.Seq <= f.AfterSeq,
			f.IssuerID != "" && c.IssuerID != f.IssuerID,
			f.RevokedOnly && !c.Revoked(),
			!f.ValidAt.IsZero() && !c.NotAfter.After(f.ValidAt):
			continue
		}
		out = append(out, c)
		if len(out) == limit {
			break
		}
	}
	return out, nil
}

func (s *memStore) RevokeCertificate(_ context.Context, serial string, at time.Time, reason int) (storage.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.certs[serial]
	if !ok {
		return storage.Certificate{}, storage.ErrNotFound
	}
	if c.Revoked() {
		return storage.Certificate{}, storage.ErrConflict
	}
	c.RevokedAt, c.RevocationReason = at, reason
	s.certs[serial] = c
	return c, nil
}

func (s *memStore) NextCRLNumber(_ context.Context, issuerID string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.crlNums[issuerID]++
	return s.crlNums[issuerID], nil
}

func (s *memStore) PutCRL(_ context.Context, crl storage.CRL) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.crls[crl.IssuerID]; ok && old.Number >= crl.Number {
		return storage.ErrConflict
	}
	s.crls[crl.IssuerID] = crl
	return nil
}

func (s *memStore) GetCRL(_ context.Context, issuerID string) (storage.CRL, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.crls[issuerID]
	if !ok {
		return storage.CRL{}, storage.ErrNotFound
	}
	return c, nil
}

func (s *memStore) certCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.certs)
}

// countingSigner counts signatures.
type countingSigner struct {
	crypto.Signer
	n atomic.Int64
}

func (c *countingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	c.n.Add(1)
	return c.Signer.Sign(r, digest, opts)
}

// memKeys is an in-memory KeyStore of P-256 keys wrapped in counting
// signers.
type memKeys struct {
	mu    sync.Mutex
	keys  map[string]*countingSigner
	order []string
}

func newMemKeys() *memKeys { return &memKeys{keys: map[string]*countingSigner{}} }

func (k *memKeys) Generate(_ context.Context, purpose string) (crypto.Signer, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	ref := fmt.Sprintf("mem:%s-%d", purpose, len(k.order))
	s := &countingSigner{Signer: key}
	k.keys[ref] = s
	k.order = append(k.order, ref)
	return s, ref, nil
}

func (k *memKeys) Signer(_ context.Context, ref string) (crypto.Signer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s, ok := k.keys[ref]
	if !ok {
		return nil, fmt.Errorf("no key %s", ref)
	}
	return s, nil
}

// signerFor returns the counting signer behind an issuer.
func (k *memKeys) signerFor(t *testing.T, a *Authority, cert *x509.Certificate) *countingSigner {
	t.Helper()
	is, ok := a.set.Load().byID[IssuerID(cert)]
	if !ok {
		t.Fatalf("issuer %s not loaded", IssuerID(cert))
	}
	s, ok := is.signer.(*countingSigner)
	if !ok {
		t.Fatalf("issuer %s signer is %T", is.id, is.signer)
	}
	return s
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// recorderFunc adapts a function to Recorder.
type recorderFunc func(context.Context, storage.Certificate) error

func (f recorderFunc) RecordIssuance(ctx context.Context, c storage.Certificate) error {
	return f(ctx, c)
}

func (f recorderFunc) RecordCRL(context.Context, storage.CRL) error { return nil }

// testEnv is a bootstrapped authority with its fakes.
type testEnv struct {
	a     *Authority
	store *memStore
	keys  *memKeys
	clock *fakeClock
	cfg   Config
}

const testTD = "example.org"

func testConfig(store *memStore, keys *memKeys, clock *fakeClock, t testing.TB) Config {
	return Config{
		Store:                  store,
		Keys:                   keys,
		TrustDomain:            testTD,
		DNSDomains:             []string{"example.org", "svc.internal"},
		PublicURL:              "http://ca.example.org:8080/",
		RootCommonName:         "Test Root",
		IntermediateCommonName: "Test Intermediate",
		RootTTL:                10 * 365 * 24 * time.Hour,
		IntermediateTTL:        90 * 24 * time.Hour,
		RotateBefore:           30 * 24 * time.Hour,
		DefaultTTL:             time.Hour,
		MaxTTL:                 24 * time.Hour,
		CRLValidity:            24 * time.Hour,
		CRLRefresh:             time.Hour,
		OCSPValidity:           24 * time.Hour,
		OCSPRefreshBefore:      12 * time.Hour,
		Clock:                  clock.Now,
		Logger:                 slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// newEnv builds an authority; mutate adjusts the config first. It is
// bootstrapped unless bootstrap is false.
func newEnv(t testing.TB, bootstrap bool, mutate func(*Config)) *testEnv {
	t.Helper()
	store, keys, clock := newMemStore(), newMemKeys(), newFakeClock()
	cfg := testConfig(store, keys, clock, t)
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if bootstrap {
		if err := a.Bootstrap(context.Background()); err != nil {
			t.Fatalf("Bootstrap: %v", err)
		}
	}
	return &testEnv{a: a, store: store, keys: keys, clock: clock, cfg: cfg}
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (e *testEnv) issue(t testing.TB, req Request) *Issued {
	t.Helper()
	if req.PublicKey == nil {
		req.PublicKey = mustKey(t).Public()
	}
	iss, err := e.a.Issue(context.Background(), req)
	if err != nil {
		t.Fatalf("Issue(%+v): %v", req, err)
	}
	return iss
}

func (e *testEnv) svid(t testing.TB, path string) *Issued {
	t.Helper()
	return e.issue(t, Request{Profile: ProfileSVID, SPIFFEID: "spiffe://" + testTD + path})
}

// verify checks leaf against the authority's bundle at the fake time.
func (e *testEnv) verify(leaf *x509.Certificate, intermediates ...*x509.Certificate) error {
	return e.verifyAt(leaf, e.clock.Now(), intermediates...)
}

// verifyAt checks leaf against the authority's current bundle at a time.
func (e *testEnv) verifyAt(leaf *x509.Certificate, at time.Time, intermediates ...*x509.Certificate) error {
	roots := x509.NewCertPool()
	for _, r := range e.a.Roots() {
		roots.AddCert(r)
	}
	inter := x509.NewCertPool()
	if len(intermediates) == 0 {
		intermediates = e.a.Intermediates()
	}
	for _, c := range intermediates {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err
}

// pollUntil waits for cond with a deadline, without fixed sleeps.
func pollUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

var errTest = errors.New("test failure")
