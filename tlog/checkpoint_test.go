package tlog_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/sigil-pki/sigil/tlog"
)

var root64 = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xab}, 32))

func TestParseCheckpoint(t *testing.T) {
	text := "sigil.test/log\n42\n" + root64 + "\n"
	cp, err := tlog.ParseCheckpoint([]byte(text))
	if err != nil {
		t.Fatalf("ParseCheckpoint: %v", err)
	}
	if cp.Origin != "sigil.test/log" || cp.Size != 42 || cp.Root != [32]byte(bytes.Repeat([]byte{0xab}, 32)) {
		t.Errorf("ParseCheckpoint = %+v", cp)
	}
	if cp.String() != text {
		t.Errorf("String() = %q, want %q", cp.String(), text)
	}
	for name, bad := range map[string]string{
		"no final newline":   "o\n1\n" + root64,
		"extension line":     "o\n1\n" + root64 + "\next\n",
		"empty origin":       "\n1\n" + root64 + "\n",
		"leading zero size":  "o\n01\n" + root64 + "\n",
		"negative size":      "o\n-1\n" + root64 + "\n",
		"size overflow":      "o\n9223372036854775808\n" + root64 + "\n",
		"short root":         "o\n1\n" + base64.StdEncoding.EncodeToString(make([]byte, 31)) + "\n",
		"unpadded root":      "o\n1\n" + strings.TrimRight(root64, "=") + "\n",
		"url-safe root":      "o\n1\n" + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 32)) + "\n",
		"two lines":          "o\n1\n",
		"carriage return":    "o\r\n1\n" + root64 + "\n",
		"non-canonical bits": "o\n1\n" + root64[:42] + "x=\n",
	} {
		if _, err := tlog.ParseCheckpoint([]byte(bad)); !errors.Is(err, tlog.ErrMalformedCheckpoint) {
			t.Errorf("%s: ParseCheckpoint = %v, want ErrMalformedCheckpoint", name, err)
		}
	}
}

func TestVerifyCheckpoint(t *testing.T) {
	l := newLog(t, newSQLiteStore(t), nil)
	m := newModel()
	appendAll(t, l, m, "cp", 0, 3, 1)
	text, err := l.Checkpoint(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cp, err := tlog.VerifyCheckpoint(text, testVerifier(t))
	if err != nil {
		t.Fatalf("VerifyCheckpoint: %v", err)
	}
	if cp.Origin != testOrigin || cp.Size != 3 || !bytes.Equal(cp.Root[:], m.roots[3]) {
		t.Errorf("checkpoint %+v, want size 3 and the independent root", cp)
	}
	// Another key with the same name does not verify it.
	_, otherV, err := tlog.GenerateKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(otherV)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tlog.VerifyCheckpoint(text, v); err == nil {
		t.Error("a checkpoint verified under another key")
	}
	// A tampered body does not verify.
	tampered := bytes.Replace(text, []byte("\n3\n"), []byte("\n4\n"), 1)
	if _, err := tlog.VerifyCheckpoint(tampered, testVerifier(t)); err == nil {
		t.Error("a tampered checkpoint verified")
	}
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Add([]byte("sigil.test/log\n42\n" + root64 + "\n"))
	f.Add([]byte("o\n0\n" + root64 + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cp, err := tlog.ParseCheckpoint(b)
		if err != nil {
			if !errors.Is(err, tlog.ErrMalformedCheckpoint) {
				t.Fatalf("error %v does not wrap ErrMalformedCheckpoint", err)
			}
			return
		}
		if cp.Size < 0 || cp.Origin == "" {
			t.Fatalf("accepted %+v", cp)
		}
		if cp.String() != string(b) {
			t.Fatalf("accepted %q, formats back as %q", b, cp.String())
		}
	})
}
