package workload

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/identity/entry"
)

// downCA is a testCA whose signing is unavailable.
type downCA struct{ *testCA }

func (downCA) IssueX509SVID(context.Context, entry.Entry, crypto.Signer) (*x509.Certificate, []*x509.Certificate, error) {
	return nil, nil, errors.New("authority unreachable")
}

// memKeeper is a Keeper in memory.
type memKeeper struct {
	mu                             sync.Mutex
	kept, spare, keptKey, spareKey []byte
}

func (k *memKeeper) Keep(_ entry.Entry, chain, key []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.kept, k.keptKey = chain, key
}

func (k *memKeeper) Kept(entry.Entry) ([]byte, []byte, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.kept, k.keptKey, k.kept != nil
}

func (k *memKeeper) Take(entry.Entry) ([]byte, []byte, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	c, key := k.spare, k.spareKey
	k.spare, k.spareKey = nil, nil
	return c, key, c != nil
}

// signedSVID signs an SVID for e with a fresh key, as an agent does in
// advance, and returns its chain (concatenated DER), PKCS#8 key and leaf.
func signedSVID(t *testing.T, ca *testCA, e entry.Entry) ([]byte, []byte, *x509.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, chain, err := ca.IssueX509SVID(t.Context(), e, key)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	return concatDER(append([]*x509.Certificate{leaf}, chain...)), der, leaf
}

// TestKeeperServesWhileAuthorityDown: with signing unavailable, a spare
// signed in advance is handed out first, else the kept SVID while it is
// unexpired; an expired one is never served.
func TestKeeperServesWhileAuthorityDown(t *testing.T) {
	ca := newTestCA(t)
	e := webEntry(time.Hour)
	keptChain, keptKey, keptLeaf := signedSVID(t, ca, e)
	spareChain, spareKey, spareLeaf := signedSVID(t, ca, e)
	expired := webEntry(-time.Minute)
	oldChain, oldKey, _ := signedSVID(t, ca, expired)

	tests := []struct {
		name   string
		keeper *memKeeper
		want   *x509.Certificate // nil: the request fails
	}{
		{"spare first", &memKeeper{kept: keptChain, keptKey: keptKey, spare: spareChain, spareKey: spareKey}, spareLeaf},
		{"kept when no spare", &memKeeper{kept: keptChain, keptKey: keptKey}, keptLeaf},
		{"expired kept is not served", &memKeeper{kept: oldChain, keptKey: oldKey}, nil},
		{"nothing kept", &memKeeper{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startServer(t, &fixedAttestor{sels: webSelectors}, entryList{e}, ca, nil, func(c *Config) {
				c.Authority = downCA{ca}
				c.Keeper = tt.keeper
			})
			svid, err := newClient(t, addr).FetchX509SVID(t.Context())
			if tt.want == nil {
				if err == nil {
					t.Fatalf("served %s with nothing valid to serve", svid.Certificates[0].SerialNumber)
				}
				return
			}
			if err != nil {
				t.Fatalf("FetchX509SVID: %v", err)
			}
			if got := svid.Certificates[0]; !got.Equal(tt.want) {
				t.Errorf("served serial %s, want %s", got.SerialNumber, tt.want.SerialNumber)
			}
			pub := svid.PrivateKey.Public().(*ecdsa.PublicKey)
			if !pub.Equal(tt.want.PublicKey) {
				t.Error("the key served does not match the certificate")
			}
		})
	}
}
