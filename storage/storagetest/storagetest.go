// Package storagetest is the contract suite for storage.Store: every
// backend runs Run, so that code written against the Store contract behaves
// the same on SQLite and PostgreSQL. It also provides PostgresDSN, which
// gives each test a fresh schema on the test PostgreSQL server.
//
// It is test support only: nothing outside tests may import it.
package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sigil-pki/sigil/storage"
)

// Run runs the contract suite. open must return a new, empty store each
// time it is called, and arrange for it to be closed when t ends. Subtests
// run in parallel, each on its own store.
func Run(t *testing.T, open func(t *testing.T) storage.Store) {
	run := func(t *testing.T, name string, fn func(t *testing.T, s storage.Store)) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, open(t))
		})
	}
	run(t, "Backend", testBackend)
	t.Run("Barrier", func(t *testing.T) {
		run(t, "LoadBeforeInit", testBarrierLoadBeforeInit)
		run(t, "InitThenLoad", testBarrierInitThenLoad)
		run(t, "InitTwiceConflicts", testBarrierInitTwice)
		run(t, "UpdateKeyring", testUpdateKeyring)
		run(t, "UpdateKeyringStaleGeneration", testUpdateKeyringStale)
		run(t, "UpdateKeyringBeforeInit", testUpdateKeyringBeforeInit)
		run(t, "UpdateKeyringRace", testUpdateKeyringRace)
	})
	t.Run("Sealed", func(t *testing.T) {
		run(t, "GetMissing", testSealedMissing)
		run(t, "PutGetReplace", testSealedPutGetReplace)
	})
	t.Run("Issuers", func(t *testing.T) {
		run(t, "ListEmpty", testIssuersEmpty)
		run(t, "ListOrderedByNotBefore", testIssuersOrdered)
		run(t, "PutReplaces", testIssuerReplaces)
	})
	t.Run("Certificates", func(t *testing.T) {
		run(t, "InsertGet", testCertInsertGet)
		run(t, "SeqAssignedInInsertOrder", testCertSeqIgnored)
		run(t, "GetMissing", testCertMissing)
		run(t, "InsertNone", testCertInsertNone)
		run(t, "DuplicateSerialAllOrNone", testCertDuplicate)
		run(t, "Pagination", testCertPagination)
		run(t, "ListLimit", testCertLimit)
		run(t, "ListFilters", testCertFilters)
		run(t, "Revoke", testRevoke)
		run(t, "RevokeUnknown", testRevokeUnknown)
		run(t, "RevokeTwiceConflicts", testRevokeTwice)
		run(t, "ConcurrentInserts", testConcurrentInserts)
	})
	t.Run("Times", func(t *testing.T) {
		run(t, "ExactRoundTrip", testTimeRoundTrip)
		run(t, "ZeroRoundTrip", testZeroTimes)
		run(t, "UnrepresentableExactOrRefused", testTimeExactOrRefused)
	})
	t.Run("CRL", func(t *testing.T) {
		run(t, "NumberStartsAtOne", testCRLNumberSequence)
		run(t, "NumberConcurrent", testCRLNumberConcurrent)
		run(t, "GetMissing", testCRLMissing)
		run(t, "PutGet", testCRLPutGet)
		run(t, "PutOnlyNewer", testCRLOnlyNewer)
	})
	t.Run("Locks", func(t *testing.T) {
		run(t, "ExclusiveUntilReleased", testLockExclusive)
		run(t, "ConcurrentTryLock", testLockConcurrent)
	})
	runLog(t, run)
	runEntries(t, run)
	runKV(t, run)
	runDatabase(t, run)
	runACME(t, run)
	runAgents(t, run)
}

// t0 has every digit of nanosecond precision in use.
var t0 = time.Date(2025, time.March, 14, 15, 9, 26, 535897932, time.UTC)

// cmpCert compares certificates by value, ignoring the store-assigned Seq.
var cmpCert = cmpopts.IgnoreFields(storage.Certificate{}, "Seq")

func testCert(serial, issuer string) storage.Certificate {
	return storage.Certificate{
		Serial:    serial,
		IssuerID:  issuer,
		Profile:   "spiffe",
		Subject:   "spiffe://example.org/workload/" + serial,
		NotBefore: t0,
		NotAfter:  t0.Add(time.Hour),
		DER:       []byte("der:" + serial),
	}
}

func testCerts(prefix, issuer string, n int) []storage.Certificate {
	out := make([]storage.Certificate, n)
	for i := range out {
		out[i] = testCert(fmt.Sprintf("%s%04x", prefix, i), issuer)
	}
	return out
}

func mustInsert(t *testing.T, s storage.Store, certs ...storage.Certificate) {
	t.Helper()
	if err := s.InsertCertificates(t.Context(), certs); err != nil {
		t.Fatalf("InsertCertificates(%d certificates): %v", len(certs), err)
	}
}

func mustGet(t *testing.T, s storage.Store, serial string) storage.Certificate {
	t.Helper()
	c, err := s.GetCertificate(t.Context(), serial)
	if err != nil {
		t.Fatalf("GetCertificate(%s): %v", serial, err)
	}
	return c
}

// listAll pages through every certificate f selects, checking that Seq
// strictly increases across pages.
func listAll(t *testing.T, s storage.Store, f storage.CertificateFilter) []storage.Certificate {
	t.Helper()
	f.Limit = 1000
	var out []storage.Certificate
	for {
		page, err := s.ListCertificates(t.Context(), f)
		if err != nil {
			t.Fatalf("ListCertificates(%+v): %v", f, err)
		}
		if len(page) == 0 {
			return out
		}
		for _, c := range page {
			if c.Seq <= f.AfterSeq {
				t.Fatalf("ListCertificates(AfterSeq=%d) returned Seq %d", f.AfterSeq, c.Seq)
			}
			f.AfterSeq = c.Seq
		}
		out = append(out, page...)
	}
}

func serials(certs []storage.Certificate) []string {
	out := make([]string, len(certs))
	for i, c := range certs {
		out[i] = c.Serial
	}
	return out
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func testBackend(t *testing.T, s storage.Store) {
	if b := s.Backend(); b != "sqlite" && b != "postgres" {
		t.Errorf("Backend() = %q, want \"sqlite\" or \"postgres\"", b)
	}
}

var testBarrier = storage.BarrierState{
	SealType:   "shamir",
	SealConfig: []byte{0, 1, 2, 0xff, 0},
	Keyring:    []byte("keyring ciphertext, generation one"),
	Generation: 42, // ignored: InitBarrier stores 1
}

func mustLoadBarrier(t *testing.T, s storage.Store) storage.BarrierState {
	t.Helper()
	st, err := s.LoadBarrier(t.Context())
	if err != nil {
		t.Fatalf("LoadBarrier: %v", err)
	}
	return st
}

func mustInitBarrier(t *testing.T, s storage.Store) {
	t.Helper()
	if err := s.InitBarrier(t.Context(), testBarrier); err != nil {
		t.Fatalf("InitBarrier: %v", err)
	}
}

func testBarrierLoadBeforeInit(t *testing.T, s storage.Store) {
	_, err := s.LoadBarrier(t.Context())
	wantErr(t, "LoadBarrier before InitBarrier", err, storage.ErrNotFound)
}

func testBarrierInitThenLoad(t *testing.T, s storage.Store) {
	mustInitBarrier(t, s)
	want := testBarrier
	want.Generation = 1
	if diff := cmp.Diff(want, mustLoadBarrier(t, s)); diff != "" {
		t.Errorf("LoadBarrier after InitBarrier (-want +got):\n%s", diff)
	}
}

func testBarrierInitTwice(t *testing.T, s storage.Store) {
	mustInitBarrier(t, s)
	other := storage.BarrierState{SealType: "pkcs11", SealConfig: []byte("other"), Keyring: []byte("other")}
	wantErr(t, "second InitBarrier", s.InitBarrier(t.Context(), other), storage.ErrConflict)
	want := testBarrier
	want.Generation = 1
	if diff := cmp.Diff(want, mustLoadBarrier(t, s)); diff != "" {
		t.Errorf("state after a refused InitBarrier (-want +got):\n%s", diff)
	}
}

func testUpdateKeyring(t *testing.T, s storage.Store) {
	mustInitBarrier(t, s)
	for gen := int64(1); gen <= 3; gen++ {
		keyring := fmt.Appendf(nil, "keyring ciphertext, generation %d", gen+1)
		if err := s.UpdateKeyring(t.Context(), gen, keyring); err != nil {
			t.Fatalf("UpdateKeyring(%d): %v", gen, err)
		}
		want := storage.BarrierState{
			SealType:   testBarrier.SealType,
			SealConfig: testBarrier.SealConfig,
			Keyring:    keyring,
			Generation: gen + 1,
		}
		if diff := cmp.Diff(want, mustLoadBarrier(t, s)); diff != "" {
			t.Fatalf("after UpdateKeyring(%d) (-want +got):\n%s", gen, diff)
		}
	}
}

func testUpdateKeyringStale(t *testing.T, s storage.Store) {
	mustInitBarrier(t, s)
	current := []byte("generation two")
	if err := s.UpdateKeyring(t.Context(), 1, current); err != nil {
		t.Fatalf("UpdateKeyring(1): %v", err)
	}
	want := storage.BarrierState{SealType: testBarrier.SealType, SealConfig: testBarrier.SealConfig, Keyring: current, Generation: 2}
	for _, tc := range []struct {
		name string
		prev int64
	}{
		{"stale", 1},
		{"ahead", 3},
		{"zero", 0},
		{"negative", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.UpdateKeyring(t.Context(), tc.prev, []byte("must not be stored"))
			wantErr(t, fmt.Sprintf("UpdateKeyring(%d) at generation 2", tc.prev), err, storage.ErrConflict)
			if diff := cmp.Diff(want, mustLoadBarrier(t, s)); diff != "" {
				t.Errorf("state after a refused UpdateKeyring (-want +got):\n%s", diff)
			}
		})
	}
}

func testUpdateKeyringBeforeInit(t *testing.T, s storage.Store) {
	err := s.UpdateKeyring(t.Context(), 0, []byte("keyring"))
	wantErr(t, "UpdateKeyring before InitBarrier", err, storage.ErrNotFound)
	_, err = s.LoadBarrier(t.Context())
	wantErr(t, "LoadBarrier after a refused UpdateKeyring", err, storage.ErrNotFound)
}

func testUpdateKeyringRace(t *testing.T, s storage.Store) {
	mustInitBarrier(t, s)
	const racers = 10
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			errs[i] = s.UpdateKeyring(t.Context(), 1, fmt.Appendf(nil, "racer %d", i))
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("racers %d and %d both updated from generation 1", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, storage.ErrConflict):
			t.Fatalf("racer %d: got %v, want nil or ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no racer updated the keyring")
	}
	st := mustLoadBarrier(t, s)
	if st.Generation != 2 || string(st.Keyring) != fmt.Sprintf("racer %d", winner) {
		t.Errorf("stored generation %d keyring %q, want 2 and the winner's (racer %d)", st.Generation, st.Keyring, winner)
	}
}

func testSealedMissing(t *testing.T, s storage.Store) {
	_, err := s.GetSealed(t.Context(), "intermediate/key")
	wantErr(t, "GetSealed of an absent name", err, storage.ErrNotFound)
}

func testSealedPutGetReplace(t *testing.T, s storage.Store) {
	values := []struct {
		name       string
		first      []byte
		replacedBy []byte
	}{
		{"intermediate/key", []byte("ciphertext one"), []byte("ciphertext two")},
		{"log/signing-key", []byte{0, 0, 0xff, 0x80, 0}, []byte{1}},
		{"empty", []byte{}, []byte("no longer empty")},
		{"path with spaces/and 'quotes'", []byte("x"), []byte{}},
	}
	ctx := t.Context()
	for _, v := range values {
		if err := s.PutSealed(ctx, v.name, v.first); err != nil {
			t.Fatalf("PutSealed(%q): %v", v.name, err)
		}
	}
	check := func(when string, pick func(i int) []byte) {
		t.Helper()
		for i, v := range values {
			got, err := s.GetSealed(ctx, v.name)
			if err != nil {
				t.Fatalf("%s: GetSealed(%q): %v", when, v.name, err)
			}
			if !bytes.Equal(got, pick(i)) {
				t.Errorf("%s: GetSealed(%q) = %x, want %x", when, v.name, got, pick(i))
			}
		}
	}
	check("after put", func(i int) []byte { return values[i].first })
	// Replace every other value: the rest must be untouched.
	for i := 0; i < len(values); i += 2 {
		if err := s.PutSealed(ctx, values[i].name, values[i].replacedBy); err != nil {
			t.Fatalf("PutSealed(%q) again: %v", values[i].name, err)
		}
	}
	check("after replace", func(i int) []byte {
		if i%2 == 0 {
			return values[i].replacedBy
		}
		return values[i].first
	})
}

func testIssuer(id string, notBefore time.Time) storage.Issuer {
	return storage.Issuer{
		ID:        id,
		Kind:      "intermediate",
		CertDER:   []byte("issuer der " + id),
		KeyRef:    "barrier:issuer/" + id,
		NotBefore: notBefore,
		NotAfter:  notBefore.Add(90 * 24 * time.Hour),
		CreatedAt: notBefore.Add(-time.Minute),
	}
}

func mustPutIssuer(t *testing.T, s storage.Store, iss storage.Issuer) {
	t.Helper()
	if err := s.PutIssuer(t.Context(), iss); err != nil {
		t.Fatalf("PutIssuer(%s): %v", iss.ID, err)
	}
}

func mustListIssuers(t *testing.T, s storage.Store) []storage.Issuer {
	t.Helper()
	got, err := s.ListIssuers(t.Context())
	if err != nil {
		t.Fatalf("ListIssuers: %v", err)
	}
	return got
}

func testIssuersEmpty(t *testing.T, s storage.Store) {
	if got := mustListIssuers(t, s); len(got) != 0 {
		t.Errorf("ListIssuers on an empty store = %v, want none", got)
	}
}

func testIssuersOrdered(t *testing.T, s storage.Store) {
	root := testIssuer("00aa", t0.Add(-365*24*time.Hour))
	root.Kind, root.KeyRef = "root", "pkcs11:sigil-root"
	older := testIssuer("ffee", t0)
	newer := testIssuer("0011", t0.Add(time.Nanosecond))
	for _, iss := range []storage.Issuer{newer, root, older} {
		mustPutIssuer(t, s, iss)
	}
	want := []storage.Issuer{root, older, newer}
	if diff := cmp.Diff(want, mustListIssuers(t, s)); diff != "" {
		t.Errorf("ListIssuers (-want +got):\n%s", diff)
	}
}

func testIssuerReplaces(t *testing.T, s storage.Store) {
	first := testIssuer("abcd", t0)
	mustPutIssuer(t, s, first)
	mustPutIssuer(t, s, testIssuer("other", t0.Add(time.Hour)))
	replaced := first
	replaced.KeyRef = "pkcs11:moved"
	replaced.CertDER = []byte("reissued")
	replaced.NotBefore = t0.Add(2 * time.Hour)
	replaced.NotAfter = t0.Add(3 * time.Hour)
	replaced.CreatedAt = t0.Add(4 * time.Hour)
	mustPutIssuer(t, s, replaced)
	want := []storage.Issuer{testIssuer("other", t0.Add(time.Hour)), replaced}
	if diff := cmp.Diff(want, mustListIssuers(t, s)); diff != "" {
		t.Errorf("ListIssuers after replacing one (-want +got):\n%s", diff)
	}
}

func testCertInsertGet(t *testing.T, s storage.Store) {
	certs := testCerts("a1", "issuer-1", 3)
	certs[1].Profile = "dns"
	certs[1].Subject = "example.org,192.0.2.1"
	certs[2].RevokedAt = t0.Add(time.Minute)
	certs[2].RevocationReason = 4
	mustInsert(t, s, certs...)
	var prevSeq int64
	for _, want := range certs {
		got := mustGet(t, s, want.Serial)
		if diff := cmp.Diff(want, got, cmpCert); diff != "" {
			t.Errorf("GetCertificate(%s) (-want +got):\n%s", want.Serial, diff)
		}
		if got.Seq <= prevSeq {
			t.Errorf("GetCertificate(%s).Seq = %d, want above the previous certificate's %d", want.Serial, got.Seq, prevSeq)
		}
		prevSeq = got.Seq
	}
	if !mustGet(t, s, certs[2].Serial).Revoked() || mustGet(t, s, certs[0].Serial).Revoked() {
		t.Error("Revoked() does not follow RevokedAt as inserted")
	}
}

func testCertSeqIgnored(t *testing.T, s storage.Store) {
	a, b, c := testCert("0a", "i"), testCert("0b", "i"), testCert("0c", "i")
	a.Seq, b.Seq, c.Seq = 1000, 5, -3
	mustInsert(t, s, a, b)
	mustInsert(t, s, c)
	got := listAll(t, s, storage.CertificateFilter{})
	if diff := cmp.Diff([]string{"0a", "0b", "0c"}, serials(got)); diff != "" {
		t.Errorf("listing order (-want +got):\n%s", diff)
	}
	for _, c := range got {
		if c.Seq <= 0 {
			t.Errorf("certificate %s stored with Seq %d, want a store-assigned positive value", c.Serial, c.Seq)
		}
	}
}

func testCertMissing(t *testing.T, s storage.Store) {
	mustInsert(t, s, testCert("01", "i"))
	_, err := s.GetCertificate(t.Context(), "02")
	wantErr(t, "GetCertificate of an unknown serial", err, storage.ErrNotFound)
}

func testCertInsertNone(t *testing.T, s storage.Store) {
	for _, certs := range [][]storage.Certificate{nil, {}} {
		if err := s.InsertCertificates(t.Context(), certs); err != nil {
			t.Errorf("InsertCertificates(%#v): %v", certs, err)
		}
	}
	if got := listAll(t, s, storage.CertificateFilter{}); len(got) != 0 {
		t.Errorf("after inserting nothing, listed %v", serials(got))
	}
}

func testCertDuplicate(t *testing.T, s storage.Store) {
	for _, tc := range []struct {
		name   string
		stored []storage.Certificate
		insert []storage.Certificate
	}{
		{
			name:   "serial already stored",
			stored: []storage.Certificate{testCert("d1", "i")},
			insert: []storage.Certificate{testCert("d2", "i"), testCert("d1", "other-issuer"), testCert("d3", "i")},
		},
		{
			name:   "serial repeated within the batch",
			insert: []storage.Certificate{testCert("e1", "i"), testCert("e2", "i"), testCert("e1", "i")},
		},
		{
			name:   "duplicate is the only certificate",
			stored: []storage.Certificate{testCert("f1", "i")},
			insert: []storage.Certificate{testCert("f1", "i")},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.stored) > 0 {
				mustInsert(t, s, tc.stored...)
			}
			before := listAll(t, s, storage.CertificateFilter{})
			err := s.InsertCertificates(t.Context(), tc.insert)
			wantErr(t, "InsertCertificates with a duplicate serial", err, storage.ErrConflict)
			after := listAll(t, s, storage.CertificateFilter{})
			if diff := cmp.Diff(before, after); diff != "" {
				t.Errorf("a refused batch changed the store (-before +after):\n%s", diff)
			}
			for _, c := range tc.stored {
				if diff := cmp.Diff(c, mustGet(t, s, c.Serial), cmpCert); diff != "" {
					t.Errorf("stored certificate %s changed (-want +got):\n%s", c.Serial, diff)
				}
			}
		})
	}
}

func testCertPagination(t *testing.T, s storage.Store) {
	certs := testCerts("p", "i", 25)
	mustInsert(t, s, certs[:7]...)
	mustInsert(t, s, certs[7:]...)
	var (
		got   []string
		after int64
		pages []int
	)
	for range 10 {
		page, err := s.ListCertificates(t.Context(), storage.CertificateFilter{AfterSeq: after, Limit: 10})
		if err != nil {
			t.Fatalf("ListCertificates(AfterSeq=%d, Limit=10): %v", after, err)
		}
		pages = append(pages, len(page))
		if len(page) == 0 {
			break
		}
		got = append(got, serials(page)...)
		after = page[len(page)-1].Seq
	}
	if diff := cmp.Diff([]int{10, 10, 5, 0}, pages); diff != "" {
		t.Errorf("page sizes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(serials(certs), got); diff != "" {
		t.Errorf("serials over all pages (-want +got):\n%s", diff)
	}
}

func testCertLimit(t *testing.T, s storage.Store) {
	mustInsert(t, s, testCerts("l", "i", 1001)...)
	for _, tc := range []struct {
		limit, want int
	}{
		{0, 100},
		{-5, 100},
		{1, 1},
		{7, 7},
		{1000, 1000},
		{1001, 1000},
		{1 << 30, 1000},
	} {
		t.Run(fmt.Sprintf("Limit=%d", tc.limit), func(t *testing.T) {
			got, err := s.ListCertificates(t.Context(), storage.CertificateFilter{Limit: tc.limit})
			if err != nil {
				t.Fatalf("ListCertificates: %v", err)
			}
			if len(got) != tc.want {
				t.Errorf("listed %d certificates, want %d", len(got), tc.want)
			}
			if len(got) > 0 && got[0].Serial != "l0000" {
				t.Errorf("first listed %s, want l0000", got[0].Serial)
			}
		})
	}
}

func testCertFilters(t *testing.T, s storage.Store) {
	a1, b1, a2, b2 := testCert("a1", "iss-a"), testCert("b1", "iss-b"), testCert("a2", "iss-a"), testCert("b2", "iss-b")
	a1.NotAfter = t0.Add(1 * time.Hour)
	b1.NotAfter = t0.Add(2 * time.Hour)
	a2.NotAfter = t0.Add(3 * time.Hour)
	b2.NotAfter = t0.Add(4 * time.Hour)
	mustInsert(t, s, a1, b1)
	mustInsert(t, s, a2, b2)
	for _, serial := range []string{"a2", "b2"} {
		if _, err := s.RevokeCertificate(t.Context(), serial, t0, 1); err != nil {
			t.Fatalf("RevokeCertificate(%s): %v", serial, err)
		}
	}
	a1Seq := mustGet(t, s, "a1").Seq
	for _, tc := range []struct {
		name   string
		filter storage.CertificateFilter
		want   []string
	}{
		{"none", storage.CertificateFilter{}, []string{"a1", "b1", "a2", "b2"}},
		{"issuer", storage.CertificateFilter{IssuerID: "iss-a"}, []string{"a1", "a2"}},
		{"unknown issuer", storage.CertificateFilter{IssuerID: "iss-c"}, nil},
		{"revoked", storage.CertificateFilter{RevokedOnly: true}, []string{"a2", "b2"}},
		{"valid at, exclusive", storage.CertificateFilter{ValidAt: t0.Add(2 * time.Hour)}, []string{"a2", "b2"}},
		{"valid at, a nanosecond earlier", storage.CertificateFilter{ValidAt: t0.Add(2*time.Hour - time.Nanosecond)}, []string{"b1", "a2", "b2"}},
		{"issuer and revoked", storage.CertificateFilter{IssuerID: "iss-b", RevokedOnly: true}, []string{"b2"}},
		{"issuer and valid at", storage.CertificateFilter{IssuerID: "iss-a", ValidAt: t0.Add(30 * time.Minute)}, []string{"a1", "a2"}},
		{"revoked and valid at", storage.CertificateFilter{RevokedOnly: true, ValidAt: t0.Add(3 * time.Hour)}, []string{"b2"}},
		{"all three, nothing left", storage.CertificateFilter{IssuerID: "iss-b", RevokedOnly: true, ValidAt: t0.Add(5 * time.Hour)}, nil},
		{"issuer after seq", storage.CertificateFilter{IssuerID: "iss-a", AfterSeq: a1Seq}, []string{"a2"}},
		{"limit with filter", storage.CertificateFilter{IssuerID: "iss-b", Limit: 1}, []string{"b1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ListCertificates(t.Context(), tc.filter)
			if err != nil {
				t.Fatalf("ListCertificates(%+v): %v", tc.filter, err)
			}
			if diff := cmp.Diff(tc.want, serials(got), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("ListCertificates(%+v) serials (-want +got):\n%s", tc.filter, diff)
			}
		})
	}
}

func testRevoke(t *testing.T, s storage.Store) {
	c := testCert("0123abcd", "i")
	mustInsert(t, s, c, testCert("bystander", "i"))
	at := time.Date(2025, time.April, 1, 10, 0, 0, 7, time.FixedZone("CEST", 2*3600))
	got, err := s.RevokeCertificate(t.Context(), c.Serial, at, 1)
	if err != nil {
		t.Fatalf("RevokeCertificate: %v", err)
	}
	want := c
	want.RevokedAt = at
	want.RevocationReason = 1
	if diff := cmp.Diff(want, got, cmpCert); diff != "" {
		t.Errorf("RevokeCertificate result (-want +got):\n%s", diff)
	}
	if !got.Revoked() || got.RevokedAt.Location() != time.UTC {
		t.Errorf("RevokedAt = %v, want %v in UTC", got.RevokedAt, at)
	}
	stored := mustGet(t, s, c.Serial)
	if diff := cmp.Diff(got, stored); diff != "" {
		t.Errorf("GetCertificate after revoking differs from the returned certificate (-returned +stored):\n%s", diff)
	}
	if mustGet(t, s, "bystander").Revoked() {
		t.Error("revoking one certificate revoked another")
	}
}

func testRevokeUnknown(t *testing.T, s storage.Store) {
	mustInsert(t, s, testCert("01", "i"))
	_, err := s.RevokeCertificate(t.Context(), "02", t0, 1)
	wantErr(t, "RevokeCertificate of an unknown serial", err, storage.ErrNotFound)
	if mustGet(t, s, "01").Revoked() {
		t.Error("revoking an unknown serial revoked another certificate")
	}
}

func testRevokeTwice(t *testing.T, s storage.Store) {
	mustInsert(t, s, testCert("01", "i"))
	first, err := s.RevokeCertificate(t.Context(), "01", t0, 1)
	if err != nil {
		t.Fatalf("first RevokeCertificate: %v", err)
	}
	_, err = s.RevokeCertificate(t.Context(), "01", t0.Add(time.Hour), 4)
	wantErr(t, "second RevokeCertificate", err, storage.ErrConflict)
	if diff := cmp.Diff(first, mustGet(t, s, "01")); diff != "" {
		t.Errorf("stored revocation changed (-first +now):\n%s", diff)
	}
}

func testConcurrentInserts(t *testing.T, s storage.Store) {
	const (
		writers = 8
		batches = 5
		perTx   = 4
	)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				certs := testCerts(fmt.Sprintf("w%d-b%d-", w, b), fmt.Sprintf("issuer-%d", w), perTx)
				if err := s.InsertCertificates(t.Context(), certs); err != nil {
					t.Errorf("writer %d batch %d: %v", w, b, err)
					return
				}
			}
		})
	}
	wg.Wait()
	got := listAll(t, s, storage.CertificateFilter{})
	if len(got) != writers*batches*perTx {
		t.Fatalf("listed %d certificates, want %d", len(got), writers*batches*perTx)
	}
	// Each batch landed whole and contiguous in its writer's order.
	for w := range writers {
		mine := listAll(t, s, storage.CertificateFilter{IssuerID: fmt.Sprintf("issuer-%d", w)})
		var want []string
		for b := range batches {
			want = append(want, serials(testCerts(fmt.Sprintf("w%d-b%d-", w, b), "", perTx))...)
		}
		if diff := cmp.Diff(want, serials(mine)); diff != "" {
			t.Errorf("writer %d's certificates (-want +got):\n%s", w, diff)
		}
	}
}

// roundTripTimes are instants every backend stores exactly.
var roundTripTimes = []struct {
	name string
	at   time.Time
}{
	{"nanoseconds", t0},
	{"other zone", time.Date(2026, time.July, 1, 12, 0, 0, 1, time.FixedZone("IST", 5*3600+1800))},
	{"before 1970", time.Date(1969, time.December, 31, 23, 59, 59, 999999999, time.UTC)},
	{"with monotonic reading", time.Now()},
	{"far future", time.Date(2250, time.January, 1, 0, 0, 0, 1, time.UTC)},
	{"epoch", time.Unix(0, 0)},
}

func testTimeRoundTrip(t *testing.T, s storage.Store) {
	ctx := t.Context()
	for i, tc := range roundTripTimes {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("t%02d", i)
			check := func(what string, got time.Time) {
				t.Helper()
				if !got.Equal(tc.at) || got.Location() != time.UTC {
					t.Errorf("%s = %v, want %v in UTC", what, got, tc.at.UTC())
				}
			}

			c := testCert(id, id)
			c.NotBefore, c.NotAfter = tc.at, tc.at
			mustInsert(t, s, c)
			got := mustGet(t, s, id)
			check("Certificate.NotBefore", got.NotBefore)
			check("Certificate.NotAfter", got.NotAfter)
			revoked, err := s.RevokeCertificate(ctx, id, tc.at, 0)
			if err != nil {
				t.Fatalf("RevokeCertificate: %v", err)
			}
			check("revoked Certificate.RevokedAt", revoked.RevokedAt)
			check("stored Certificate.RevokedAt", mustGet(t, s, id).RevokedAt)

			iss := storage.Issuer{ID: id, Kind: "root", CertDER: []byte{1}, KeyRef: "pkcs11:r", NotBefore: tc.at, NotAfter: tc.at, CreatedAt: tc.at}
			mustPutIssuer(t, s, iss)
			var found bool
			for _, got := range mustListIssuers(t, s) {
				if got.ID == id {
					found = true
					check("Issuer.NotBefore", got.NotBefore)
					check("Issuer.NotAfter", got.NotAfter)
					check("Issuer.CreatedAt", got.CreatedAt)
				}
			}
			if !found {
				t.Fatalf("issuer %s not listed", id)
			}

			if err := s.PutCRL(ctx, storage.CRL{IssuerID: id, Number: 1, ThisUpdate: tc.at, NextUpdate: tc.at, DER: []byte{2}}); err != nil {
				t.Fatalf("PutCRL: %v", err)
			}
			crl, err := s.GetCRL(ctx, id)
			if err != nil {
				t.Fatalf("GetCRL: %v", err)
			}
			check("CRL.ThisUpdate", crl.ThisUpdate)
			check("CRL.NextUpdate", crl.NextUpdate)
		})
	}
}

func testZeroTimes(t *testing.T, s storage.Store) {
	c := storage.Certificate{Serial: "00", IssuerID: "i", DER: []byte{0x30}}
	mustInsert(t, s, c)
	if diff := cmp.Diff(c, mustGet(t, s, "00"), cmpCert); diff != "" {
		t.Errorf("certificate with zero times (-want +got):\n%s", diff)
	}
	iss := storage.Issuer{ID: "z", Kind: "root", CertDER: []byte{1}, KeyRef: "pkcs11:z"}
	mustPutIssuer(t, s, iss)
	if diff := cmp.Diff([]storage.Issuer{iss}, mustListIssuers(t, s)); diff != "" {
		t.Errorf("issuer with zero times (-want +got):\n%s", diff)
	}
	crl := storage.CRL{IssuerID: "z", Number: 1, DER: []byte{1}}
	if err := s.PutCRL(t.Context(), crl); err != nil {
		t.Fatalf("PutCRL: %v", err)
	}
	got, err := s.GetCRL(t.Context(), "z")
	if err != nil {
		t.Fatalf("GetCRL: %v", err)
	}
	if diff := cmp.Diff(crl, got); diff != "" {
		t.Errorf("CRL with zero times (-want +got):\n%s", diff)
	}
}

// testTimeExactOrRefused: a time a backend cannot represent (RFC 5280's
// 99991231235959Z "no expiry" is one) must be refused, never stored as a
// different instant.
func testTimeExactOrRefused(t *testing.T, s storage.Store) {
	for _, at := range []time.Time{
		time.Date(9999, time.December, 31, 23, 59, 59, 0, time.UTC),
		time.Date(1, time.January, 1, 0, 0, 1, 0, time.UTC),
	} {
		serial := fmt.Sprintf("y%d", at.Year())
		c := testCert(serial, "i")
		c.NotAfter = at
		if err := s.InsertCertificates(t.Context(), []storage.Certificate{c}); err != nil {
			if _, err := s.GetCertificate(t.Context(), serial); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("refused certificate %s: GetCertificate got %v, want ErrNotFound", serial, err)
			}
			continue
		}
		if got := mustGet(t, s, serial).NotAfter; !got.Equal(at) {
			t.Errorf("NotAfter %v stored as %v", at, got)
		}
	}
}

func testCRLNumberSequence(t *testing.T, s storage.Store) {
	for _, step := range []struct {
		issuer string
		want   int64
	}{
		{"a", 1}, {"a", 2}, {"b", 1}, {"a", 3}, {"b", 2},
	} {
		got, err := s.NextCRLNumber(t.Context(), step.issuer)
		if err != nil {
			t.Fatalf("NextCRLNumber(%s): %v", step.issuer, err)
		}
		if got != step.want {
			t.Errorf("NextCRLNumber(%s) = %d, want %d", step.issuer, got, step.want)
		}
	}
}

func testCRLNumberConcurrent(t *testing.T, s storage.Store) {
	const callers = 20
	got := make([]int64, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			n, err := s.NextCRLNumber(t.Context(), "issuer")
			if err != nil {
				t.Errorf("caller %d: NextCRLNumber: %v", i, err)
			}
			got[i] = n
		})
	}
	wg.Wait()
	slices.Sort(got)
	want := make([]int64, callers)
	for i := range want {
		want[i] = int64(i + 1)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("numbers handed to %d concurrent callers (-want +got):\n%s", callers, diff)
	}
	next, err := s.NextCRLNumber(t.Context(), "issuer")
	if err != nil || next != callers+1 {
		t.Errorf("NextCRLNumber afterwards = %d, %v; want %d", next, err, callers+1)
	}
}

func testCRLMissing(t *testing.T, s storage.Store) {
	if err := s.PutCRL(t.Context(), storage.CRL{IssuerID: "other", Number: 1, DER: []byte{1}}); err != nil {
		t.Fatalf("PutCRL: %v", err)
	}
	_, err := s.GetCRL(t.Context(), "issuer")
	wantErr(t, "GetCRL for an issuer without one", err, storage.ErrNotFound)
}

func testCRL(issuer string, n int64) storage.CRL {
	return storage.CRL{
		IssuerID:   issuer,
		Number:     n,
		ThisUpdate: t0.Add(time.Duration(n) * time.Hour),
		NextUpdate: t0.Add(time.Duration(n+24) * time.Hour),
		DER:        fmt.Appendf(nil, "crl %s #%d", issuer, n),
	}
}

func mustGetCRL(t *testing.T, s storage.Store, issuer string) storage.CRL {
	t.Helper()
	got, err := s.GetCRL(t.Context(), issuer)
	if err != nil {
		t.Fatalf("GetCRL(%s): %v", issuer, err)
	}
	return got
}

func testCRLPutGet(t *testing.T, s storage.Store) {
	for _, crl := range []storage.CRL{testCRL("a", 1), testCRL("b", 7)} {
		if err := s.PutCRL(t.Context(), crl); err != nil {
			t.Fatalf("PutCRL(%s #%d): %v", crl.IssuerID, crl.Number, err)
		}
	}
	for _, want := range []storage.CRL{testCRL("a", 1), testCRL("b", 7)} {
		if diff := cmp.Diff(want, mustGetCRL(t, s, want.IssuerID)); diff != "" {
			t.Errorf("GetCRL(%s) (-want +got):\n%s", want.IssuerID, diff)
		}
	}
}

func testCRLOnlyNewer(t *testing.T, s storage.Store) {
	if err := s.PutCRL(t.Context(), testCRL("a", 5)); err != nil {
		t.Fatalf("PutCRL(#5): %v", err)
	}
	if err := s.PutCRL(t.Context(), testCRL("b", 1)); err != nil {
		t.Fatalf("PutCRL(b #1): %v", err)
	}
	// Applied in order; each step states what is stored afterwards.
	for _, step := range []struct {
		put     int64
		wantErr error
		stored  int64
	}{
		{put: 4, wantErr: storage.ErrConflict, stored: 5},
		{put: 5, wantErr: storage.ErrConflict, stored: 5},
		{put: 6, stored: 6},
		{put: 1, wantErr: storage.ErrConflict, stored: 6},
		{put: 100, stored: 100},
	} {
		crl := testCRL("a", step.put)
		if step.put == 5 {
			crl.DER = []byte("same number, different list")
		}
		err := s.PutCRL(t.Context(), crl)
		if !errors.Is(err, step.wantErr) || (step.wantErr == nil && err != nil) {
			t.Fatalf("PutCRL(#%d) over #%d: got %v, want %v", step.put, step.stored, err, step.wantErr)
		}
		if diff := cmp.Diff(testCRL("a", step.stored), mustGetCRL(t, s, "a")); diff != "" {
			t.Fatalf("after PutCRL(#%d) (-want +got):\n%s", step.put, diff)
		}
	}
	if diff := cmp.Diff(testCRL("b", 1), mustGetCRL(t, s, "b")); diff != "" {
		t.Errorf("another issuer's CRL changed (-want +got):\n%s", diff)
	}
}

func mustTryLock(t *testing.T, s storage.Store, name string) storage.Lock {
	t.Helper()
	l, err := s.TryLock(t.Context(), name)
	if err != nil {
		t.Fatalf("TryLock(%q): %v", name, err)
	}
	return l
}

func testLockExclusive(t *testing.T, s storage.Store) {
	first := mustTryLock(t, s, "crl")
	_, err := s.TryLock(t.Context(), "crl")
	wantErr(t, "TryLock of a held name", err, storage.ErrLocked)
	other := mustTryLock(t, s, "rotation")
	if err := first.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	second := mustTryLock(t, s, "crl")
	// Releasing again is harmless, and must not free the new holder's lock.
	if err := first.Release(); err != nil {
		t.Errorf("second Release: %v", err)
	}
	_, err = s.TryLock(t.Context(), "crl")
	wantErr(t, "TryLock after a stale Release", err, storage.ErrLocked)
	for _, l := range []storage.Lock{second, other} {
		if err := l.Release(); err != nil {
			t.Errorf("Release: %v", err)
		}
	}
	if err := mustTryLock(t, s, "rotation").Release(); err != nil {
		t.Errorf("Release: %v", err)
	}
}

func testLockConcurrent(t *testing.T, s storage.Store) {
	const contenders = 8
	locks := make([]storage.Lock, contenders)
	var wg sync.WaitGroup
	for i := range contenders {
		wg.Go(func() {
			l, err := s.TryLock(t.Context(), "sequencer")
			if err != nil && !errors.Is(err, storage.ErrLocked) {
				t.Errorf("contender %d: TryLock: %v", i, err)
			}
			locks[i] = l
		})
	}
	wg.Wait()
	var holders int
	for _, l := range locks {
		if l != nil {
			holders++
			defer l.Release()
		}
	}
	if holders != 1 {
		t.Errorf("%d of %d contenders hold the lock, want exactly 1", holders, contenders)
	}
}
