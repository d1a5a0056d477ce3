package storage

import (
	"strings"
	"testing"
	"time"
)

func TestRebindDollar(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"none", "SELECT 1", "SELECT 1"},
		{"in order", "INSERT INTO t (a, b) VALUES (?, ?)", "INSERT INTO t (a, b) VALUES ($1, $2)"},
		{"adjacent", "?,??", "$1,$2$3"},
		{"string literal", "SELECT '?' || ? || 'a''?'", "SELECT '?' || $1 || 'a''?'"},
		{"quoted identifier", `SELECT "odd?name" FROM t WHERE x = ?`, `SELECT "odd?name" FROM t WHERE x = $1`},
		{"ten and more", strings.Repeat("?", 11), "$1$2$3$4$5$6$7$8$9$10$11"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rebindDollar(tc.in); got != tc.want {
				t.Errorf("rebindDollar(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestEveryQueryRebindsCompletely(t *testing.T) {
	q := newQueries(postgresDialect)
	all := []string{q.loadBarrier, q.initBarrier, q.updateKeyring, q.getSealed, q.putSealed,
		q.putIssuer, q.listIssuers, q.insertCert, q.insertCertBatch, q.getCert, q.revokeCert, q.nextCRLNumber,
		q.putCRL, q.getCRL, q.tryLock, q.unlock, q.hasVersion, q.recordVersion}
	all = append(all, q.listCerts[:]...)
	for _, m := range migrations {
		for _, s := range m.stmts {
			all = append(all, postgresDialect.sql(s))
		}
	}
	for _, s := range all {
		if strings.ContainsAny(s, "?{}") {
			t.Errorf("statement still holds a placeholder or type token: %s", s)
		}
	}
}

func TestMigrationsAreOrdered(t *testing.T) {
	for i, m := range migrations {
		if m.version != int64(i+1) {
			t.Errorf("migration %d (%s) has version %d, want %d", i, m.name, m.version, i+1)
		}
		if m.name == "" || len(m.stmts) == 0 {
			t.Errorf("migration %d has no name or no statements", m.version)
		}
	}
}

func TestNanos(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      time.Time
		wantErr bool
	}{
		{"zero is NULL", time.Time{}, false},
		{"ordinary", time.Date(2030, 5, 6, 7, 8, 9, 10, time.FixedZone("x", -3600)), false},
		{"earliest", minStorableTime, false},
		{"latest", maxStorableTime, false},
		{"one past the latest", maxStorableTime.Add(time.Nanosecond), true},
		{"one before the earliest", minStorableTime.Add(-time.Nanosecond), true},
		{"year 9999", time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := nanos(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("nanos(%v) error = %v, want error %v", tc.in, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if n.Valid == tc.in.IsZero() {
				t.Errorf("nanos(%v).Valid = %v", tc.in, n.Valid)
			}
			if got := fromNanos(n); !got.Equal(tc.in) || got.Location() != time.UTC {
				t.Errorf("fromNanos(nanos(%v)) = %v", tc.in, got)
			}
		})
	}
}
