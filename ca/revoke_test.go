package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/storage"
)

var oidReasonCode = asn1.ObjectIdentifier{2, 5, 29, 21}

// parseCRL fetches and checks the issuer's CRL.
func (e *testEnv) parseCRL(t *testing.T, issuer *x509.Certificate) *x509.RevocationList {
	t.Helper()
	der, err := e.a.CRL(t.Context(), IssuerID(issuer))
	if err != nil {
		t.Fatalf("CRL: %v", err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("ParseRevocationList: %v", err)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	if !bytes.Equal(crl.AuthorityKeyId, issuer.SubjectKeyId) {
		t.Fatal("CRL AuthorityKeyId is not the issuer's")
	}
	return crl
}

func crlEntry(crl *x509.RevocationList, serial string) *x509.RevocationListEntry {
	for i, e := range crl.RevokedCertificateEntries {
		if Serial(e.SerialNumber) == serial {
			return &crl.RevokedCertificateEntries[i]
		}
	}
	return nil
}

func hasReasonExt(e *x509.RevocationListEntry) bool {
	for _, x := range e.Extensions {
		if x.Id.Equal(oidReasonCode) {
			return true
		}
	}
	return false
}

func TestRevokeAndCRL(t *testing.T) {
	e := newEnv(t, true, nil)
	ctx := t.Context()
	in := e.a.Intermediates()[0]
	now := e.clock.Now()

	first := e.parseCRL(t, in)
	if len(first.RevokedCertificateEntries) != 0 {
		t.Fatal("a fresh CRL lists revocations")
	}
	if !first.ThisUpdate.Equal(now) || !first.NextUpdate.Equal(now.Add(e.cfg.CRLValidity)) {
		t.Fatalf("CRL window %v..%v", first.ThisUpdate, first.NextUpdate)
	}

	a, b, c := e.svid(t, "/a"), e.svid(t, "/b"), e.svid(t, "/c")
	e.clock.Advance(time.Minute)
	revAt := e.clock.Now()
	rec, err := e.a.Revoke(ctx, a.Record.Serial, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Revoked() || !rec.RevokedAt.Equal(revAt) || rec.RevocationReason != 1 {
		t.Fatalf("revoked record %+v", rec)
	}
	afterA := e.parseCRL(t, in)
	if afterA.Number.Cmp(first.Number) <= 0 {
		t.Fatalf("CRL number %v did not increase from %v", afterA.Number, first.Number)
	}
	// Upper-case serials with leading zeros are accepted.
	if _, err := e.a.Revoke(ctx, "00"+upper(b.Record.Serial), 0); err != nil {
		t.Fatal(err)
	}
	crl := e.parseCRL(t, in)
	if crl.Number.Cmp(afterA.Number) <= 0 {
		t.Fatalf("CRL number %v did not increase from %v", crl.Number, afterA.Number)
	}
	if len(crl.RevokedCertificateEntries) != 2 {
		t.Fatalf("CRL lists %d entries, want 2", len(crl.RevokedCertificateEntries))
	}
	ea := crlEntry(crl, a.Record.Serial)
	if ea == nil || ea.ReasonCode != 1 || !hasReasonExt(ea) || !ea.RevocationTime.Equal(revAt) {
		t.Fatalf("entry for a: %+v", ea)
	}
	eb := crlEntry(crl, b.Record.Serial)
	if eb == nil || hasReasonExt(eb) {
		t.Fatalf("entry for b (unspecified) = %+v, want no reason extension", eb)
	}
	if crlEntry(crl, c.Record.Serial) != nil {
		t.Fatal("an unrevoked certificate is listed")
	}

	// Within CRLRefresh, the stored CRL is served and RefreshCRLs keeps it.
	if err := e.a.RefreshCRLs(ctx); err != nil {
		t.Fatal(err)
	}
	if again := e.parseCRL(t, in); again.Number.Cmp(crl.Number) != 0 {
		t.Fatalf("CRL regenerated within CRLRefresh: %v -> %v", crl.Number, again.Number)
	}
	// Past CRLRefresh, RefreshCRLs makes a new one.
	e.clock.Advance(e.cfg.CRLRefresh)
	if err := e.a.RefreshCRLs(ctx); err != nil {
		t.Fatal(err)
	}
	stored, err := e.store.GetCRL(ctx, IssuerID(in))
	if err != nil || stored.Number <= crl.Number.Int64() || !stored.ThisUpdate.Equal(e.clock.Now()) {
		t.Fatalf("after refresh: %+v, %v", stored, err)
	}
	// Expired revoked certificates leave the CRL.
	e.clock.Advance(2 * time.Hour)
	if err := e.a.RefreshCRLs(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(e.parseCRL(t, in).RevokedCertificateEntries); n != 0 {
		t.Fatalf("%d expired certificates still listed", n)
	}
}

func upper(s string) string { return string(bytes.ToUpper([]byte(s))) }

func TestRevokeErrors(t *testing.T) {
	e := newEnv(t, true, nil)
	leaf := e.svid(t, "/x")
	if _, err := e.a.Revoke(t.Context(), leaf.Record.Serial, 4); err != nil {
		t.Fatal(err)
	}
	other := e.svid(t, "/y")
	tests := []struct {
		name   string
		serial string
		reason int
		want   error
	}{
		{"unknown serial", "abcdef", 0, ErrNotFound},
		{"not hex", "xyz", 0, ErrNotFound},
		{"empty", "", 0, ErrNotFound},
		{"already revoked", leaf.Record.Serial, 1, ErrAlreadyRevoked},
		{"reason 7", other.Record.Serial, 7, ErrPolicy},
		{"reason 11", other.Record.Serial, 11, ErrPolicy},
		{"negative reason", other.Record.Serial, -1, ErrPolicy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := e.a.Revoke(t.Context(), tt.serial, tt.reason); !errors.Is(err, tt.want) {
				t.Fatalf("Revoke = %v, want %v", err, tt.want)
			}
		})
	}
	got, err := e.store.GetCertificate(t.Context(), other.Record.Serial)
	if err != nil || got.Revoked() {
		t.Fatal("a refused revocation changed the certificate")
	}
	if got, _ := e.store.GetCertificate(t.Context(), leaf.Record.Serial); got.RevocationReason != 4 {
		t.Fatal("a second revocation changed the stored reason")
	}
	if _, err := e.a.CRL(t.Context(), "0123"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("CRL of an unknown issuer = %v", err)
	}
	if _, err := e.a.RevokeIntermediate(t.Context(), "0123", 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RevokeIntermediate of an unknown issuer = %v", err)
	}
	if _, err := e.a.RevokeIntermediate(t.Context(), IssuerID(e.a.Roots()[0]), 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RevokeIntermediate of the root = %v", err)
	}
}

func TestRevokeIntermediate(t *testing.T) {
	e := newEnv(t, true, nil)
	ctx := t.Context()
	root := e.a.Roots()[0]
	old := e.a.Intermediates()[0]
	if n := len(e.parseCRL(t, root).RevokedCertificateEntries); n != 0 {
		t.Fatalf("fresh root CRL lists %d entries", n)
	}
	rootSigner := e.keys.signerFor(t, e.a, root)
	before := rootSigner.n.Load()

	rec, err := e.a.RevokeIntermediate(ctx, IssuerID(old), 4)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Profile != ProfileIntermediate || rec.RevocationReason != 4 {
		t.Fatalf("revoked record %+v", rec)
	}
	// The root signed a new intermediate and its CRL.
	if got := rootSigner.n.Load() - before; got != 2 {
		t.Fatalf("root signed %d times, want 2 (replacement intermediate and CRL)", got)
	}
	crl := e.parseCRL(t, root)
	if ent := crlEntry(crl, Serial(old.SerialNumber)); ent == nil || ent.ReasonCode != 4 {
		t.Fatalf("root CRL entry for the intermediate: %+v", ent)
	}
	inters := e.a.Intermediates()
	if len(inters) != 1 || inters[0].Equal(old) {
		t.Fatal("the revoked intermediate is still in service")
	}
	leaf := e.svid(t, "/after")
	if !leaf.Chain[0].Equal(inters[0]) {
		t.Fatal("new leaves do not come from the replacement")
	}
	if _, err := e.a.RevokeIntermediate(ctx, IssuerID(old), 4); !errors.Is(err, ErrAlreadyRevoked) {
		t.Fatalf("second RevokeIntermediate = %v", err)
	}
	// A reloaded authority keeps it out of service.
	b, err := New(ctx, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Intermediates(); len(got) != 1 || got[0].Equal(old) {
		t.Fatal("reloaded authority lists the revoked intermediate")
	}
}

func TestRevokeReportsPublishFailure(t *testing.T) {
	e := newEnv(t, true, nil)
	leaf := e.svid(t, "/publish")
	// A store that cannot list makes CRL generation fail; the revocation
	// stays durable and the CRL is marked for regeneration.
	failing := &failListStore{memStore: e.store}
	e.a.cfg.Store = failing
	rec, err := e.a.Revoke(t.Context(), leaf.Record.Serial, 1)
	if err == nil || errors.Is(err, ErrAlreadyRevoked) || !rec.Revoked() {
		t.Fatalf("Revoke = %+v, %v; want the revoked record and a publishing error", rec, err)
	}
	is := e.a.set.Load().byID[leaf.Record.IssuerID]
	if !is.crlDirty.Load() {
		t.Fatal("CRL not marked stale")
	}
	e.a.cfg.Store = e.store
	crl := e.parseCRL(t, leaf.Chain[0])
	if crlEntry(crl, leaf.Record.Serial) == nil {
		t.Fatal("the next CRL does not list the revocation")
	}
}

type failListStore struct{ *memStore }

func (failListStore) ListCertificates(_ context.Context, _ storage.CertificateFilter) ([]storage.Certificate, error) {
	return nil, errTest
}
