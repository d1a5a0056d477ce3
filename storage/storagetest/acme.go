package storagetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sigil-pki/sigil/storage"
)

func runACME(t *testing.T, run func(*testing.T, string, func(*testing.T, storage.Store))) {
	t.Run("ACME", func(t *testing.T) {
		run(t, "Accounts", testACMEAccounts)
		run(t, "OrdersAndAuthzs", testACMEOrders)
	})
}

func testACMEAccounts(t *testing.T, s storage.Store) {
	ctx := context.Background()
	a := storage.ACMEDoc{ID: "acct1", Data: `{"status":"valid"}`}
	if err := s.PutACMEAccount(ctx, a, "thumb1", 0); err != nil {
		t.Fatal(err)
	}
	if err := s.PutACMEAccount(ctx, storage.ACMEDoc{ID: "acct2", Data: "{}"}, "thumb1", 0); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("second account with the same key: %v", err)
	}
	got, err := s.GetACMEAccountByThumbprint(ctx, "thumb1")
	if err != nil || got.ID != "acct1" || got.Revision != 1 {
		t.Fatalf("by thumbprint: %+v %v", got, err)
	}
	got.Data = `{"status":"deactivated"}`
	if err := s.PutACMEAccount(ctx, got, "", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.PutACMEAccount(ctx, got, "", 1); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("stale revision: %v", err)
	}
	if err := s.PutACMEAccount(ctx, storage.ACMEDoc{ID: "nope", Data: "{}"}, "", 3); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("update of a missing account: %v", err)
	}
	if err := s.SetACMEAccountThumbprint(ctx, "acct1", "thumb2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetACMEAccountByThumbprint(ctx, "thumb1"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("old key still finds the account: %v", err)
	}
	if got, err := s.GetACMEAccount(ctx, "acct1"); err != nil || got.Data != `{"status":"deactivated"}` || got.Revision != 2 {
		t.Errorf("account: %+v %v", got, err)
	}
}

func testACMEOrders(t *testing.T, s storage.Store) {
	ctx := context.Background()
	if err := s.PutACMEOrder(ctx, storage.ACMEDoc{ID: "o1", Data: `{"status":"pending"}`}, "acct", 0); err != nil {
		t.Fatal(err)
	}
	if err := s.PutACMEOrder(ctx, storage.ACMEDoc{ID: "o1", Data: `{"status":"ready"}`}, "acct", 1); err != nil {
		t.Fatal(err)
	}
	if o, err := s.GetACMEOrder(ctx, "o1"); err != nil || o.Data != `{"status":"ready"}` || o.Revision != 2 {
		t.Errorf("order: %+v %v", o, err)
	}
	for _, id := range []string{"o3", "o2", "o4"} {
		if err := s.PutACMEOrder(ctx, storage.ACMEDoc{ID: id, Data: `{}`}, "acct", 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutACMEOrder(ctx, storage.ACMEDoc{ID: "o0", Data: `{}`}, "other", 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		after string
		limit int
		want  []string
	}{
		{"", 0, []string{"o1", "o2", "o3", "o4"}},
		{"", 2, []string{"o1", "o2"}},
		{"o2", 2, []string{"o3", "o4"}},
		{"o4", 2, nil},
	} {
		docs, err := s.ListACMEOrders(ctx, "acct", tc.after, tc.limit)
		var ids []string
		for _, d := range docs {
			ids = append(ids, d.ID)
		}
		if err != nil || !slices.Equal(ids, tc.want) {
			t.Errorf("orders after %q, limit %d: %v %v, want %v", tc.after, tc.limit, ids, err, tc.want)
		}
	}
	if docs, _ := s.ListACMEOrders(ctx, "acct", "", 1); len(docs) != 1 || docs[0].Data != `{"status":"ready"}` || docs[0].Revision != 2 {
		t.Errorf("listed order: %+v", docs)
	}
	for i, exp := range []time.Duration{time.Hour, 2 * time.Hour, -time.Hour} {
		id := []string{"z1", "z2", "z3"}[i]
		if err := s.PutACMEAuthz(ctx, storage.ACMEDoc{ID: id, Data: "{}"}, "acct", "dns:a.test", t0.Add(exp), 0); err != nil {
			t.Fatal(err)
		}
	}
	found, err := s.FindACMEAuthzs(ctx, "acct", "dns:a.test", t0)
	if err != nil || len(found) != 2 || found[0].ID != "z1" || found[1].ID != "z2" {
		t.Errorf("reusable authorizations: %+v %v", found, err)
	}
	if other, _ := s.FindACMEAuthzs(ctx, "other", "dns:a.test", t0); len(other) != 0 {
		t.Errorf("another account found %d", len(other))
	}
}
