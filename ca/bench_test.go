package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/storage"
)

// benchKeys pre-generates P-256 subject keys so that key generation stays
// out of the measurement.
func benchKeys(b *testing.B) []crypto.PublicKey {
	b.Helper()
	keys := make([]crypto.PublicKey, 64)
	for i := range keys {
		keys[i] = mustKey(b).Public()
	}
	return keys
}

// BenchmarkRawCreateCertificate is the baseline: x509.CreateCertificate of
// an SVID-shaped leaf with a P-256 CA key, nothing else.
func BenchmarkRawCreateCertificate(b *testing.B) {
	caKey := mustKey(b)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "bench CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		b.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatal(err)
	}
	keys := benchKeys(b)
	uri, _ := url.Parse("spiffe://example.org/bench")
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			tmpl := &x509.Certificate{
				SerialNumber:          big.NewInt(i),
				NotBefore:             time.Now().Add(-time.Minute),
				NotAfter:              time.Now().Add(time.Hour),
				KeyUsage:              x509.KeyUsageDigitalSignature,
				ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
				BasicConstraintsValid: true,
				URIs:                  []*url.URL{uri},
				OCSPServer:            []string{"http://127.0.0.1:8080/ocsp"},
				IssuingCertificateURL: []string{"http://127.0.0.1:8080/ca/0123456789abcdef0123456789abcdef.crt"},
				CRLDistributionPoints: []string{"http://127.0.0.1:8080/crl/0123456789abcdef0123456789abcdef.crl"},
			}
			if _, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, keys[i%int64(len(keys))], caKey); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func benchIssue(b *testing.B, a *Authority, parallelism int) {
	keys := benchKeys(b)
	b.SetParallelism(parallelism)
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			_, err := a.Issue(context.Background(), Request{
				Profile:   ProfileSVID,
				SPIFFEID:  "spiffe://example.org/bench",
				PublicKey: keys[i%int64(len(keys))],
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkIssue measures Issue with an in-memory store: policy, signing,
// parsing and the group commit.
func BenchmarkIssue(b *testing.B) {
	e := newEnv(b, true, func(c *Config) { c.Logger = nil })
	benchIssue(b, e.a, 1)
}

// BenchmarkIssueSQLite measures Issue against the embedded SQLite store,
// where the group commit turns many issuances into one transaction. It runs
// 16 callers per CPU: durable writes, not signing, bound a single caller.
func BenchmarkIssueSQLite(b *testing.B) {
	ctx := context.Background()
	db, err := storage.Open(ctx, storage.Options{Backend: "sqlite", Path: filepath.Join(b.TempDir(), "sigil.db")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	clock := newFakeClock()
	cfg := testConfig(nil, newMemKeys(), clock, b)
	counted := &countingInserts{Store: db}
	cfg.Store = counted
	cfg.Clock = time.Now
	cfg.Logger = nil
	a, err := New(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Bootstrap(ctx); err != nil {
		b.Fatal(err)
	}
	counted.calls.Store(0)
	counted.records.Store(0)
	benchIssue(b, a, 16)
	if calls := counted.calls.Load(); calls > 0 {
		b.ReportMetric(float64(counted.records.Load())/float64(calls), "certs/insert")
	}
}

// countingInserts measures how well the group commit batches.
type countingInserts struct {
	Store
	calls, records atomic.Int64
}

func (c *countingInserts) InsertCertificates(ctx context.Context, certs []storage.Certificate) error {
	c.calls.Add(1)
	c.records.Add(int64(len(certs)))
	return c.Store.InsertCertificates(ctx, certs)
}
