package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/ca/catest"
	"github.com/sigil-pki/sigil/storage"
)

// TestCrossCertificate: another CA's certificate for the root is kept,
// survives a reload, and gives every issued chain an alternate that
// verifies against that CA alone; certificates that are not
// cross-certificates for a root are refused and change nothing.
func TestCrossCertificate(t *testing.T) {
	e := newEnv(t, true, nil)
	ctx := context.Background()
	root := e.a.Roots()[0]
	now := e.clock.Now()
	leaf := e.issue(t, Request{Profile: ProfileTLSServer, DNSNames: []string{"www.example.org"}})
	if alts := e.a.AlternateChains(leaf.Chain); len(alts) != 0 {
		t.Fatalf("alternates before any cross-certificate: %d", len(alts))
	}

	good, corp, err := catest.CrossSign(root, "Corp Root", now.Add(-time.Hour), now.Add(365*24*time.Hour), true)
	if err != nil {
		t.Fatal(err)
	}
	inter := e.a.Intermediates()[0]
	forInter, _, _ := catest.CrossSign(inter, "Corp Root", now.Add(-time.Hour), now.Add(time.Hour), true)
	notCA, _, _ := catest.CrossSign(root, "Corp Root", now.Add(-time.Hour), now.Add(time.Hour), false)
	expired, _, _ := catest.CrossSign(root, "Corp Root", now.Add(-2*time.Hour), now.Add(-time.Hour), true)
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"the root itself", root, "self-issued"},
		{"for the intermediate", forInter, "match no root"},
		{"not a CA", notCA, "not a CA certificate"},
		{"expired", expired, "not valid now"},
	} {
		if _, err := e.a.AddCrossCertificate(ctx, tc.cert); !errors.Is(err, ErrBadCrossCertificate) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if n := len(e.store.issuers); n != 2 {
		t.Fatalf("refused cross-certificates were stored: %d issuers", n)
	}

	id, err := e.a.AddCrossCertificate(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.AddCrossCertificate(ctx, good); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("adding it twice: %v", err)
	}
	if c, ok := e.a.IssuerCert(id); !ok || !c.Equal(good) {
		t.Fatalf("IssuerCert(%s) = %v", id, ok)
	}
	if len(e.a.Roots()) != 1 || len(e.a.Intermediates()) != 1 {
		t.Fatalf("a cross-certificate changed the bundle: %d roots, %d intermediates", len(e.a.Roots()), len(e.a.Intermediates()))
	}

	// Reloaded from the store, the authority offers the same alternate.
	b, err := New(ctx, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, a := range map[string]*Authority{"live": e.a, "reloaded": b} {
		alts := a.AlternateChains(leaf.Chain)
		if len(alts) != 1 || len(alts[0]) != len(leaf.Chain)+1 || !alts[0][len(alts[0])-1].Equal(good) {
			t.Fatalf("%s: alternates %v", name, alts)
		}
		corpPool, inters := x509.NewCertPool(), x509.NewCertPool()
		corpPool.AddCert(corp)
		for _, c := range alts[0] {
			inters.AddCert(c)
		}
		if _, err := leaf.Certificate.Verify(x509.VerifyOptions{Roots: corpPool, Intermediates: inters, CurrentTime: now, DNSName: "www.example.org"}); err != nil {
			t.Errorf("%s: the alternate chain does not reach the other CA: %v", name, err)
		}
	}
	// The default chain stays Sigil's own.
	if err := e.verify(leaf.Certificate); err != nil {
		t.Fatal(err)
	}
	// Past the cross-certificate's end there is no alternate.
	e.clock.Advance(366 * 24 * time.Hour)
	if alts := e.a.AlternateChains(leaf.Chain); len(alts) != 0 {
		t.Fatalf("an expired cross-certificate is still offered")
	}
}
