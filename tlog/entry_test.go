package tlog_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sigil-pki/sigil/tlog"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var goldenEntries = []struct {
	name  string
	entry tlog.Entry
}{
	{"x509_issue", tlog.NewIssuance(tlog.KindX509Issue, baseTime, "spiffe://example.org/ns/prod/sa/api", []byte("not really DER"), "1a2b3c")},
	{"secret_read_denied", tlog.Entry{
		Kind: tlog.KindSecretRead, Time: time.Date(2030, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600)),
		Actor:   "spiffe://example.org/ns/dev/sa/batch",
		Subject: tlog.Subject{Path: "kv/data/payments/db", Version: 7},
		Outcome: tlog.Outcome{Denied: true, Reason: "no policy grants read"},
	}},
	{"operator_unseal", tlog.Entry{
		Kind: tlog.KindOperatorUnseal, Time: time.Unix(0, -1).UTC(), Actor: "operator:alice",
		Subject: tlog.Subject{Version: -3, Detail: "share 2 of 3 — ünïcode"},
	}},
}

func TestEntryGolden(t *testing.T) {
	for _, g := range goldenEntries {
		t.Run(g.name, func(t *testing.T) {
			b, err := g.entry.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary: %v", err)
			}
			path := filepath.Join("testdata", "entry_"+g.name+".hex")
			if *update {
				if err := os.WriteFile(path, []byte(hex.EncodeToString(b)+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			golden, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("reading golden file (run with -update to create): %v", err)
			}
			want, err := hex.DecodeString(strings.TrimSpace(string(golden)))
			if err != nil {
				t.Fatalf("golden file %s: %v", path, err)
			}
			if !bytes.Equal(b, want) {
				t.Errorf("encoding changed:\n got %x\nwant %x", b, want)
			}
			got, err := tlog.ParseEntry(want)
			if err != nil {
				t.Fatalf("ParseEntry(golden): %v", err)
			}
			wantEntry := g.entry
			wantEntry.Time = wantEntry.Time.UTC()
			if diff := cmp.Diff(wantEntry, got); diff != "" {
				t.Errorf("ParseEntry(golden) (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMarshalRejects(t *testing.T) {
	ok := goldenEntries[0].entry
	cases := []struct {
		name string
		mod  func(*tlog.Entry)
	}{
		{"empty kind", func(e *tlog.Entry) { e.Kind = "" }},
		{"undotted kind", func(e *tlog.Entry) { e.Kind = "issue" }},
		{"uppercase kind", func(e *tlog.Entry) { e.Kind = "X509.issue" }},
		{"trailing dot", func(e *tlog.Entry) { e.Kind = "x509.issue." }},
		{"long kind", func(e *tlog.Entry) { e.Kind = "a." + strings.Repeat("b", 63) }},
		{"zero time", func(e *tlog.Entry) { e.Time = time.Time{} }},
		{"long actor", func(e *tlog.Entry) { e.Actor = strings.Repeat("a", 1025) }},
		{"long serial", func(e *tlog.Entry) { e.Subject.Serial = strings.Repeat("a", 129) }},
		{"long detail", func(e *tlog.Entry) { e.Subject.Detail = strings.Repeat("a", 16385) }},
		{"invalid UTF-8", func(e *tlog.Entry) { e.Actor = "\xff" }},
	}
	for _, c := range cases {
		e := ok
		c.mod(&e)
		if _, err := e.MarshalBinary(); !errors.Is(err, tlog.ErrMalformedEntry) {
			t.Errorf("%s: MarshalBinary = %v, want ErrMalformedEntry", c.name, err)
		}
	}
}

func TestParseEntryRejects(t *testing.T) {
	good, err := goldenEntries[1].entry.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	with := func(f func([]byte) []byte) []byte { return f(bytes.Clone(good)) }
	// Offsets in good: version(1) kind-len(1) "secret.read"(11) time(8) actor-len(1)...
	cases := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"unknown version", with(func(b []byte) []byte { b[0] = 2; return b })},
		{"trailing byte", append(bytes.Clone(good), 0)},
		{"truncated", good[:len(good)-1]},
		{"non-minimal length", append([]byte{1, 0x8b, 0x00}, good[2:]...)},
		{"bad kind", with(func(b []byte) []byte { b[2] = 'S'; return b })},
		{"denied not a boolean", with(func(b []byte) []byte {
			// denied is the byte before the reason's length and text.
			reason := len("no policy grants read")
			b[len(b)-reason-2] = 2
			return b
		})},
		{"invalid UTF-8", with(func(b []byte) []byte { b[len(b)-1] = 0xff; return b })},
	}
	for _, c := range cases {
		if _, err := tlog.ParseEntry(c.b); !errors.Is(err, tlog.ErrMalformedEntry) {
			t.Errorf("%s: ParseEntry = %v, want ErrMalformedEntry", c.name, err)
		}
	}
}

func TestEncodingIgnoresLocationAndMonotonic(t *testing.T) {
	now := time.Now()
	a := tlog.Entry{Kind: tlog.KindLeaseCreate, Time: now}
	b := tlog.Entry{Kind: tlog.KindLeaseCreate, Time: now.Round(0).In(time.FixedZone("Y", -7200))}
	if !bytes.Equal(mustMarshal(t, a), mustMarshal(t, b)) {
		t.Error("the same instant in another location encodes differently")
	}
}

func FuzzParseEntry(f *testing.F) {
	for _, g := range goldenEntries {
		b, err := g.entry.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := tlog.ParseEntry(b)
		if err != nil {
			if !errors.Is(err, tlog.ErrMalformedEntry) {
				t.Fatalf("ParseEntry error %v does not wrap ErrMalformedEntry", err)
			}
			return
		}
		again, err := e.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted entry does not re-encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted %x, re-encodes to %x", b, again)
		}
	})
}
