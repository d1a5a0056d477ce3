package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"sync/atomic"
	"testing"

	"github.com/sigil-pki/sigil/ca"
)

// BenchmarkIssueWithLog is the whole issuance path as the server runs it:
// policy, signing, the certificate record on SQLite and the transparency
// log entry, each committed before Issue returns. Compare with
// ca.BenchmarkRawCreateCertificate and ca.BenchmarkIssueSQLite (no log).
func BenchmarkIssueWithLog(b *testing.B) {
	cfg := testConfig(b, "dev")
	s, err := New(b.Context(), cfg, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Initialize(b.Context(), InitOptions{}); err != nil {
		b.Fatal(err)
	}
	auth, err := s.Authority()
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]*ecdsa.PrivateKey, 64)
	for i := range keys {
		keys[i], _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	var n atomic.Int64
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := auth.Issue(b.Context(), ca.Request{Profile: ca.ProfileSVID, SPIFFEID: "spiffe://example.org/bench", PublicKey: keys[i%64].Public()}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
