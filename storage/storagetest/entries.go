package storagetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sigil-pki/sigil/storage"
)

// runEntries runs the registration entry contract: create and its two
// conflicts, get, list with filters and pagination, update's
// compare-and-swap, delete, and the entries revision counter.
func runEntries(t *testing.T, run func(t *testing.T, name string, fn func(t *testing.T, s storage.Store))) {
	t.Run("Entries", func(t *testing.T) {
		run(t, "CreateGet", testEntryCreateGet)
		run(t, "GetMissing", testEntryGetMissing)
		run(t, "DuplicateIDConflicts", testEntryDuplicateID)
		run(t, "DuplicateIdentityConflicts", testEntryDuplicateIdentity)
		run(t, "RejectsIncomplete", testEntryRejectsIncomplete)
		run(t, "ListFilters", testEntryListFilters)
		run(t, "ListPagination", testEntryPagination)
		run(t, "Update", testEntryUpdate)
		run(t, "UpdateStaleRevision", testEntryUpdateStale)
		run(t, "UpdateMissing", testEntryUpdateMissing)
		run(t, "UpdateOntoAnotherIdentityConflicts", testEntryUpdateIdentityTaken)
		run(t, "UpdateRace", testEntryUpdateRace)
		run(t, "Delete", testEntryDelete)
		run(t, "RevisionCountsChanges", testEntriesRevision)
	})
}

func testEntry(id, spiffeID string, selectors ...string) storage.RegistrationEntry {
	return storage.RegistrationEntry{
		ID:          id,
		SPIFFEID:    spiffeID,
		Selectors:   selectors,
		X509SVIDTTL: time.Hour,
		JWTSVIDTTL:  5 * time.Minute,
		DNSNames:    []string{},
		CreatedAt:   t0,
		UpdatedAt:   t0,
		Revision:    1,
	}
}

func mustCreateEntry(t *testing.T, s storage.Store, e storage.RegistrationEntry) {
	t.Helper()
	if err := s.CreateEntry(t.Context(), e); err != nil {
		t.Fatalf("CreateEntry(%s): %v", e.ID, err)
	}
}

func mustGetEntry(t *testing.T, s storage.Store, id string) storage.RegistrationEntry {
	t.Helper()
	e, err := s.GetEntry(t.Context(), id)
	if err != nil {
		t.Fatalf("GetEntry(%s): %v", id, err)
	}
	return e
}

func mustEntriesRevision(t *testing.T, s storage.Store) int64 {
	t.Helper()
	rev, err := s.EntriesRevision(t.Context())
	if err != nil {
		t.Fatalf("EntriesRevision: %v", err)
	}
	return rev
}

func entryIDs(es []storage.RegistrationEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func testEntryCreateGet(t *testing.T, s storage.Store) {
	full := storage.RegistrationEntry{
		ID:          "00112233445566778899aabbccddeeff",
		SPIFFEID:    "spiffe://example.org/web",
		ParentID:    "spiffe://example.org/agent/node-1",
		Selectors:   []string{"unix:uid:1000", "unix:gid:50", "unix:uid:1000", "unix:path:/usr/bin/web"},
		X509SVIDTTL: 90 * time.Minute,
		JWTSVIDTTL:  time.Minute + time.Nanosecond,
		DNSNames:    []string{"web.example.org", "api.example.org"},
		Hint:        "external",
		CreatedAt:   t0,
		UpdatedAt:   t0.Add(time.Second),
		Revision:    1,
	}
	bare := testEntry("ff", "spiffe://example.org/bare", "unix:user:bob")
	bare.DNSNames = nil
	bare.CreatedAt, bare.UpdatedAt = time.Time{}, time.Time{}
	mustCreateEntry(t, s, full)
	mustCreateEntry(t, s, bare)

	wantFull := full
	wantFull.Selectors = []string{"unix:gid:50", "unix:path:/usr/bin/web", "unix:uid:1000"}
	if diff := cmp.Diff(wantFull, mustGetEntry(t, s, full.ID)); diff != "" {
		t.Errorf("GetEntry of a full entry (-want +got); selectors must come back sorted and deduplicated:\n%s", diff)
	}
	wantBare := bare
	wantBare.DNSNames = []string{}
	if diff := cmp.Diff(wantBare, mustGetEntry(t, s, bare.ID)); diff != "" {
		t.Errorf("GetEntry of a bare entry (-want +got):\n%s", diff)
	}
	if full.Selectors[0] != "unix:uid:1000" || len(full.Selectors) != 4 {
		t.Errorf("CreateEntry modified its argument's selectors: %v", full.Selectors)
	}
}

func testEntryGetMissing(t *testing.T, s storage.Store) {
	mustCreateEntry(t, s, testEntry("aa", "spiffe://example.org/a", "unix:uid:1"))
	_, err := s.GetEntry(t.Context(), "ab")
	wantErr(t, "GetEntry of an unknown ID", err, storage.ErrNotFound)
}

func testEntryDuplicateID(t *testing.T, s storage.Store) {
	first := testEntry("aa", "spiffe://example.org/a", "unix:uid:1")
	mustCreateEntry(t, s, first)
	before := mustEntriesRevision(t, s)
	err := s.CreateEntry(t.Context(), testEntry("aa", "spiffe://example.org/other", "unix:uid:2"))
	wantErr(t, "CreateEntry with a taken ID", err, storage.ErrConflict)
	if diff := cmp.Diff(first, mustGetEntry(t, s, "aa")); diff != "" {
		t.Errorf("entry after a refused create (-want +got):\n%s", diff)
	}
	if got, err := s.ListEntries(t.Context(), storage.EntryFilter{Selector: "unix:uid:2"}); err != nil || len(got) != 0 {
		t.Errorf("ListEntries by the refused entry's selector = %v, %v; want none", entryIDs(got), err)
	}
	if after := mustEntriesRevision(t, s); after != before {
		t.Errorf("EntriesRevision moved from %d to %d on a refused create", before, after)
	}
}

func testEntryDuplicateIdentity(t *testing.T, s storage.Store) {
	mustCreateEntry(t, s, testEntry("01", "spiffe://example.org/a", "unix:uid:1", "unix:gid:2"))
	parented := testEntry("02", "spiffe://example.org/a", "unix:uid:1", "unix:gid:2")
	parented.ParentID = "spiffe://example.org/agent"
	cases := []struct {
		name    string
		e       storage.RegistrationEntry
		wantErr error
	}{
		{"same set, other order and duplicates", testEntry("10", "spiffe://example.org/a", "unix:gid:2", "unix:uid:1", "unix:gid:2"), storage.ErrConflict},
		{"subset is a different set", testEntry("11", "spiffe://example.org/a", "unix:uid:1"), nil},
		{"other SPIFFE ID", testEntry("12", "spiffe://example.org/b", "unix:uid:1", "unix:gid:2"), nil},
		{"other parent", parented, nil},
		{"same as the parented one", func() storage.RegistrationEntry { e := parented; e.ID = "13"; return e }(), storage.ErrConflict},
	}
	for _, tc := range cases {
		err := s.CreateEntry(t.Context(), tc.e)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
			t.Errorf("CreateEntry(%s): got %v, want %v", tc.name, err, tc.wantErr)
		}
		_, getErr := s.GetEntry(t.Context(), tc.e.ID)
		if stored := getErr == nil; stored != (tc.wantErr == nil) {
			t.Errorf("CreateEntry(%s): stored = %v, want %v", tc.name, stored, tc.wantErr == nil)
		}
	}
}

func testEntryRejectsIncomplete(t *testing.T, s storage.Store) {
	for _, tc := range []struct {
		name string
		e    storage.RegistrationEntry
	}{
		{"no ID", testEntry("", "spiffe://example.org/a", "unix:uid:1")},
		{"no SPIFFE ID", testEntry("aa", "", "unix:uid:1")},
		{"unstorable time", func() storage.RegistrationEntry {
			e := testEntry("bb", "spiffe://example.org/a", "unix:uid:1")
			e.CreatedAt = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
			return e
		}()},
	} {
		if err := s.CreateEntry(t.Context(), tc.e); err == nil || errors.Is(err, storage.ErrConflict) {
			t.Errorf("CreateEntry(%s) = %v, want a non-conflict error", tc.name, err)
		}
	}
	if got := mustEntriesRevision(t, s); got != 0 {
		t.Errorf("EntriesRevision after refused creates = %d, want 0", got)
	}
}

func testEntryListFilters(t *testing.T, s storage.Store) {
	for _, e := range []storage.RegistrationEntry{
		testEntry("04", "spiffe://example.org/web", "unix:uid:1000", "unix:gid:1000"),
		testEntry("02", "spiffe://example.org/web", "unix:uid:1001"),
		testEntry("03", "spiffe://example.org/db", "unix:uid:1000"),
		testEntry("01", "spiffe://example.org/db", "unix:user:postgres"),
	} {
		mustCreateEntry(t, s, e)
	}
	for _, tc := range []struct {
		name string
		f    storage.EntryFilter
		want []string
	}{
		{"all", storage.EntryFilter{}, []string{"01", "02", "03", "04"}},
		{"by SPIFFE ID", storage.EntryFilter{SPIFFEID: "spiffe://example.org/web"}, []string{"02", "04"}},
		{"by selector", storage.EntryFilter{Selector: "unix:uid:1000"}, []string{"03", "04"}},
		{"by both", storage.EntryFilter{SPIFFEID: "spiffe://example.org/db", Selector: "unix:uid:1000"}, []string{"03"}},
		{"unknown selector", storage.EntryFilter{Selector: "unix:uid:9"}, []string{}},
		{"after ID", storage.EntryFilter{AfterID: "02"}, []string{"03", "04"}},
		{"after ID with filter", storage.EntryFilter{AfterID: "03", Selector: "unix:uid:1000"}, []string{"04"}},
		{"limit", storage.EntryFilter{Limit: 3}, []string{"01", "02", "03"}},
	} {
		got, err := s.ListEntries(t.Context(), tc.f)
		if err != nil {
			t.Fatalf("ListEntries(%s): %v", tc.name, err)
		}
		if diff := cmp.Diff(tc.want, entryIDs(got)); diff != "" {
			t.Errorf("ListEntries(%s) IDs (-want +got):\n%s", tc.name, diff)
		}
	}
	got, err := s.ListEntries(t.Context(), storage.EntryFilter{Selector: "unix:gid:1000"})
	if err != nil || len(got) != 1 {
		t.Fatalf("ListEntries by gid: %v, %v", entryIDs(got), err)
	}
	if diff := cmp.Diff(testEntry("04", "spiffe://example.org/web", "unix:gid:1000", "unix:uid:1000"), got[0]); diff != "" {
		t.Errorf("listed entry (-want +got):\n%s", diff)
	}
}

func testEntryPagination(t *testing.T, s storage.Store) {
	const n = 230
	var want []string
	for i := range n {
		id := fmt.Sprintf("%032x", i*7919)
		want = append(want, id)
		mustCreateEntry(t, s, testEntry(id, fmt.Sprintf("spiffe://example.org/w/%d", i), "unix:uid:1"))
	}
	page, err := s.ListEntries(t.Context(), storage.EntryFilter{})
	if err != nil || len(page) != 100 {
		t.Fatalf("ListEntries with the default limit: %d entries, %v; want 100", len(page), err)
	}
	if page, err := s.ListEntries(t.Context(), storage.EntryFilter{Limit: 5000}); err != nil || len(page) != n {
		t.Fatalf("ListEntries with limit 5000 (capped at 1000): %d entries, %v; want all %d", len(page), err, n)
	}
	var got []string
	f := storage.EntryFilter{Selector: "unix:uid:1", Limit: 64}
	for {
		page, err := s.ListEntries(t.Context(), f)
		if err != nil {
			t.Fatalf("ListEntries(%+v): %v", f, err)
		}
		if len(page) == 0 {
			break
		}
		got = append(got, entryIDs(page)...)
		f.AfterID = page[len(page)-1].ID
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("paged IDs (-want +got):\n%s", diff)
	}
}

func testEntryUpdate(t *testing.T, s storage.Store) {
	e := testEntry("aa", "spiffe://example.org/a", "unix:uid:1", "unix:gid:1")
	mustCreateEntry(t, s, e)
	next := e
	next.SPIFFEID = "spiffe://example.org/b"
	next.ParentID = "spiffe://example.org/agent"
	next.Selectors = []string{"unix:user:web", "unix:uid:1", "unix:user:web"}
	next.X509SVIDTTL, next.JWTSVIDTTL = 2*time.Hour, time.Hour
	next.DNSNames = []string{"b.example.org"}
	next.Hint = "b"
	next.CreatedAt = t0.Add(time.Hour) // ignored: creation time is kept
	next.UpdatedAt = t0.Add(2 * time.Hour)
	next.Revision = 77 // ignored
	if err := s.UpdateEntry(t.Context(), next, 1); err != nil {
		t.Fatalf("UpdateEntry(revision 1): %v", err)
	}
	want := next
	want.Selectors = []string{"unix:uid:1", "unix:user:web"}
	want.CreatedAt = t0
	want.Revision = 2
	if diff := cmp.Diff(want, mustGetEntry(t, s, "aa")); diff != "" {
		t.Errorf("entry after update (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		sel  string
		want []string
	}{{"unix:gid:1", []string{}}, {"unix:user:web", []string{"aa"}}, {"unix:uid:1", []string{"aa"}}} {
		got, err := s.ListEntries(t.Context(), storage.EntryFilter{Selector: tc.sel})
		if err != nil {
			t.Fatalf("ListEntries(%s): %v", tc.sel, err)
		}
		if diff := cmp.Diff(tc.want, entryIDs(got)); diff != "" {
			t.Errorf("ListEntries by %s after update (-want +got):\n%s", tc.sel, diff)
		}
	}
	if err := s.UpdateEntry(t.Context(), next, 2); err != nil {
		t.Fatalf("UpdateEntry(revision 2): %v", err)
	}
	if got := mustGetEntry(t, s, "aa").Revision; got != 3 {
		t.Errorf("revision after two updates = %d, want 3", got)
	}
}

func testEntryUpdateStale(t *testing.T, s storage.Store) {
	e := testEntry("aa", "spiffe://example.org/a", "unix:uid:1")
	mustCreateEntry(t, s, e)
	if err := s.UpdateEntry(t.Context(), e, 1); err != nil {
		t.Fatalf("UpdateEntry(1): %v", err)
	}
	want := mustGetEntry(t, s, "aa")
	before := mustEntriesRevision(t, s)
	for _, rev := range []int64{1, 3, 0, -1} {
		changed := e
		changed.SPIFFEID = "spiffe://example.org/must-not-be-stored"
		err := s.UpdateEntry(t.Context(), changed, rev)
		wantErr(t, fmt.Sprintf("UpdateEntry(%d) at revision 2", rev), err, storage.ErrConflict)
	}
	if diff := cmp.Diff(want, mustGetEntry(t, s, "aa")); diff != "" {
		t.Errorf("entry after refused updates (-want +got):\n%s", diff)
	}
	if after := mustEntriesRevision(t, s); after != before {
		t.Errorf("EntriesRevision moved from %d to %d on refused updates", before, after)
	}
}

func testEntryUpdateMissing(t *testing.T, s storage.Store) {
	err := s.UpdateEntry(t.Context(), testEntry("aa", "spiffe://example.org/a", "unix:uid:1"), 1)
	wantErr(t, "UpdateEntry of an unknown ID", err, storage.ErrNotFound)
	_, err = s.GetEntry(t.Context(), "aa")
	wantErr(t, "GetEntry after a refused update", err, storage.ErrNotFound)
}

func testEntryUpdateIdentityTaken(t *testing.T, s storage.Store) {
	mustCreateEntry(t, s, testEntry("aa", "spiffe://example.org/a", "unix:uid:1"))
	b := testEntry("bb", "spiffe://example.org/b", "unix:uid:1")
	mustCreateEntry(t, s, b)
	onto := b
	onto.SPIFFEID = "spiffe://example.org/a"
	err := s.UpdateEntry(t.Context(), onto, 1)
	wantErr(t, "UpdateEntry onto another entry's identity", err, storage.ErrConflict)
	if diff := cmp.Diff(b, mustGetEntry(t, s, "bb")); diff != "" {
		t.Errorf("entry after a refused update (-want +got):\n%s", diff)
	}
	// Updating an entry without changing its identity is no conflict with
	// itself.
	b.Hint = "same identity"
	if err := s.UpdateEntry(t.Context(), b, 1); err != nil {
		t.Errorf("UpdateEntry keeping its own identity: %v", err)
	}
}

func testEntryUpdateRace(t *testing.T, s storage.Store) {
	e := testEntry("aa", "spiffe://example.org/a", "unix:uid:1")
	mustCreateEntry(t, s, e)
	const racers = 8
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			mine := e
			mine.Hint = fmt.Sprintf("racer %d", i)
			mine.Selectors = []string{fmt.Sprintf("unix:uid:%d", 100+i)}
			errs[i] = s.UpdateEntry(t.Context(), mine, 1)
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("racers %d and %d both updated from revision 1", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, storage.ErrConflict):
			t.Fatalf("racer %d: got %v, want nil or ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no racer updated the entry")
	}
	got := mustGetEntry(t, s, "aa")
	if got.Revision != 2 || got.Hint != fmt.Sprintf("racer %d", winner) {
		t.Errorf("stored revision %d hint %q, want 2 and the winner's (racer %d)", got.Revision, got.Hint, winner)
	}
	listed, err := s.ListEntries(t.Context(), storage.EntryFilter{Selector: fmt.Sprintf("unix:uid:%d", 100+winner)})
	if err != nil || len(listed) != 1 {
		t.Errorf("ListEntries by the winner's selector = %v, %v; want the entry", entryIDs(listed), err)
	}
}

func testEntryDelete(t *testing.T, s storage.Store) {
	mustCreateEntry(t, s, testEntry("aa", "spiffe://example.org/a", "unix:uid:1"))
	mustCreateEntry(t, s, testEntry("bb", "spiffe://example.org/b", "unix:uid:1"))
	if err := s.DeleteEntry(t.Context(), "aa"); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	_, err := s.GetEntry(t.Context(), "aa")
	wantErr(t, "GetEntry after delete", err, storage.ErrNotFound)
	wantErr(t, "second DeleteEntry", s.DeleteEntry(t.Context(), "aa"), storage.ErrNotFound)
	wantErr(t, "DeleteEntry of an unknown ID", s.DeleteEntry(t.Context(), "cc"), storage.ErrNotFound)
	got, err := s.ListEntries(t.Context(), storage.EntryFilter{Selector: "unix:uid:1"})
	if err != nil {
		t.Fatalf("ListEntries: %v", err)
	}
	if diff := cmp.Diff([]string{"bb"}, entryIDs(got)); diff != "" {
		t.Errorf("ListEntries after delete (-want +got):\n%s", diff)
	}
	// The deleted entry's ID and identity are free again.
	mustCreateEntry(t, s, testEntry("aa", "spiffe://example.org/a", "unix:uid:1"))
}

func testEntriesRevision(t *testing.T, s storage.Store) {
	if got := mustEntriesRevision(t, s); got != 0 {
		t.Fatalf("EntriesRevision on an empty store = %d, want 0", got)
	}
	e := testEntry("aa", "spiffe://example.org/a", "unix:uid:1")
	steps := []struct {
		name string
		do   func() error
	}{
		{"create", func() error { return s.CreateEntry(t.Context(), e) }},
		{"create another", func() error {
			return s.CreateEntry(t.Context(), testEntry("bb", "spiffe://example.org/b", "unix:uid:2"))
		}},
		{"update", func() error { return s.UpdateEntry(t.Context(), e, 1) }},
		{"delete", func() error { return s.DeleteEntry(t.Context(), "aa") }},
	}
	prev := int64(0)
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		got := mustEntriesRevision(t, s)
		if got <= prev {
			t.Errorf("EntriesRevision after %s = %d, want above %d", st.name, got, prev)
		}
		if again := mustEntriesRevision(t, s); again != got {
			t.Errorf("EntriesRevision read twice without a change: %d then %d", got, again)
		}
		prev = got
	}
	// Reads do not move it.
	if _, err := s.ListEntries(t.Context(), storage.EntryFilter{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetEntry(t.Context(), "bb"); err != nil {
		t.Fatal(err)
	}
	if got := mustEntriesRevision(t, s); got != prev {
		t.Errorf("EntriesRevision moved from %d to %d on reads", prev, got)
	}
}
