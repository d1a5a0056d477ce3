package challenge

import (
	"bytes"
	"crypto/sha256"
	"encoding/asn1"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
)

// FuzzMatchKeyAuthorization checks the http-01 body comparison against its
// definition: a match is the key authorization followed by nothing but
// trailing whitespace, within the size bound, whatever the bytes.
func FuzzMatchKeyAuthorization(f *testing.F) {
	const ka = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
	f.Add([]byte(ka), ka)
	f.Add([]byte(ka+"\r\n"), ka)
	f.Add([]byte(" "+ka), ka)
	f.Add([]byte(ka+"\x00"), ka)
	f.Add([]byte(ka+"\u00a0"), ka)
	f.Add([]byte(""), "")
	f.Add([]byte("a \t"), "a \t")
	f.Fuzz(func(t *testing.T, body []byte, want string) {
		got := matchKeyAuthorization(body, want)
		if got {
			rest, ok := bytes.CutPrefix(body, []byte(want))
			if !ok || len(bytes.Trim(rest, " \t\r\n")) != 0 {
				t.Fatalf("matched %q against %q: not the key authorization plus trailing whitespace", body, want)
			}
			if want == "" || len(body) > maxBody {
				t.Fatalf("matched %q (%d bytes) against %q", body, len(body), want)
			}
		}
		// The key authorization itself, and with whitespace after it, match
		// when it has no trailing whitespace of its own and fits.
		if want != "" && strings.TrimRight(want, " \t\r\n") == want && len(want)+2 <= maxBody {
			if !matchKeyAuthorization([]byte(want), want) || !matchKeyAuthorization([]byte(want+"\r\n"), want) {
				t.Fatalf("%q does not match itself", want)
			}
		}
	})
}

// FuzzParseACMEIdentifier checks that the acmeIdentifier parser accepts
// exactly the DER encoding of a 32-byte OCTET STRING: whatever it accepts,
// encoding/asn1 re-encodes to the same bytes.
func FuzzParseACMEIdentifier(f *testing.F) {
	sum := sha256.Sum256([]byte("key.authorization"))
	good, _ := asn1.Marshal(sum[:])
	f.Add(good)
	f.Add(sum[:])
	f.Add(append(good, 0))
	f.Add(append([]byte{0x04, 0x81, 0x20}, sum[:]...)) // non-minimal length
	f.Add(append([]byte{0x24, 0x22, 0x04, 0x20}, sum[:]...))
	f.Add([]byte{0x04, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		digest, err := parseACMEIdentifier(der)
		if err != nil {
			return
		}
		if len(digest) != sha256.Size {
			t.Fatalf("accepted a %d-byte digest", len(digest))
		}
		again, err := asn1.Marshal(digest)
		if err != nil || !bytes.Equal(again, der) {
			t.Fatalf("accepted %x, which is not the DER of its digest (%x)", der, again)
		}
	})
}

// FuzzParseGeneralNames checks the subjectAltName parser: what it accepts
// is DER that re-encodes from the parsed entries to the same bytes, so no
// entry can hide from the count RFC 8737 §3 depends on.
func FuzzParseGeneralNames(f *testing.F) {
	seq := func(items ...[]byte) []byte {
		var b cryptobyte.Builder
		b.AddASN1(0x30, func(b *cryptobyte.Builder) {
			for _, it := range items {
				b.AddBytes(it)
			}
		})
		return b.BytesOrPanic()
	}
	f.Add(seq([]byte("\x82\x0bexample.com")))
	f.Add(seq([]byte("\x82\x0bexample.com"), []byte("\x87\x04\x7f\x00\x00\x01")))
	f.Add(seq([]byte("\xa0\x03\x06\x01\x00")))
	f.Add(seq())
	f.Add(seq([]byte("\x04\x01a")))
	f.Add([]byte("\x30\x80\x82\x01a\x00\x00"))
	f.Fuzz(func(t *testing.T, der []byte) {
		names, err := parseGeneralNames(der)
		if err != nil {
			return
		}
		if len(names) == 0 {
			t.Fatal("accepted an empty GeneralNames")
		}
		var b cryptobyte.Builder
		b.AddASN1(0x30, func(b *cryptobyte.Builder) {
			for _, n := range names {
				if n.tag&0xc0 != 0x80 {
					t.Fatalf("accepted a non-context-specific tag %#x", uint8(n.tag))
				}
				b.AddASN1(n.tag, func(b *cryptobyte.Builder) { b.AddBytes(n.value) })
			}
		})
		again, err := b.Bytes()
		if err != nil || !bytes.Equal(again, der) {
			t.Fatalf("accepted %x, which re-encodes as %x (%v)", der, again, err)
		}
		for _, n := range names {
			_ = n.String()
		}
	})
}
