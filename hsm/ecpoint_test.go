package hsm

import (
	"bytes"
	"crypto/ecdh"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/asn1"
	"errors"
	"testing"
)

func TestParseECPoint(t *testing.T) {
	for _, c := range []struct {
		curve elliptic.Curve
		ecdh  ecdh.Curve
	}{{elliptic.P256(), ecdh.P256()}, {elliptic.P384(), ecdh.P384()}} {
		k, err := c.ecdh.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		point := k.PublicKey().Bytes()
		wrapped, err := asn1.Marshal(point)
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name  string
			value []byte
			ok    bool
		}{
			{"DER OCTET STRING", wrapped, true},
			{"bare point", point, true},
			{"trailing byte", append(bytes.Clone(wrapped), 0), false},
			{"compressed", append([]byte{0x02}, point[1:1+len(point)/2]...), false},
			{"off the curve", append(bytes.Clone(point[:len(point)-1]), point[len(point)-1]^1), false},
			{"empty", nil, false},
		}
		for _, tc := range tests {
			t.Run(c.curve.Params().Name+"/"+tc.name, func(t *testing.T) {
				pub, err := parseECPoint(c.curve, tc.value)
				if (err == nil) != tc.ok {
					t.Fatalf("parseECPoint: err = %v, want ok = %v", err, tc.ok)
				}
				if err != nil {
					return
				}
				if b, _ := pub.Bytes(); !bytes.Equal(b, point) {
					t.Fatal("parsed key encodes to another point")
				}
			})
		}
	}
}

// FuzzParseECPoint checks that whatever parseECPoint accepts is a point on
// the curve whose encoding appears, whole, in the input.
func FuzzParseECPoint(f *testing.F) {
	k, _ := ecdh.P256().GenerateKey(rand.Reader)
	wrapped, _ := asn1.Marshal(k.PublicKey().Bytes())
	f.Add(wrapped)
	f.Add(k.PublicKey().Bytes())
	f.Add([]byte{0x04, 0x41, 0x04})
	f.Fuzz(func(t *testing.T, value []byte) {
		pub, err := parseECPoint(elliptic.P256(), value)
		if err != nil {
			return
		}
		b, err := pub.Bytes()
		if err != nil {
			t.Fatalf("accepted key does not encode: %v", err)
		}
		if _, err := ecdh.P256().NewPublicKey(b); err != nil {
			t.Fatalf("accepted point is not on P-256: %v", err)
		}
		if !bytes.HasSuffix(value, b) {
			t.Fatal("accepted point is not the input's point")
		}
	})
}

func TestSplitBlob(t *testing.T) {
	ok := append([]byte{wrapVersion}, make([]byte, gcmIVSize+gcmTagSize+1)...)
	tests := []struct {
		name string
		blob []byte
		ok   bool
	}{
		{"shortest", ok, true},
		{"one byte short", ok[:len(ok)-1], false},
		{"empty", nil, false},
		{"version 0", append([]byte{0}, ok[1:]...), false},
		{"version 2", append([]byte{2}, ok[1:]...), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			iv, ct, err := splitBlob(tc.blob)
			if !tc.ok {
				if !errors.Is(err, ErrUnwrap) {
					t.Fatalf("got %v, want ErrUnwrap", err)
				}
				return
			}
			if err != nil || len(iv) != gcmIVSize || len(ct) != len(tc.blob)-1-gcmIVSize {
				t.Fatalf("splitBlob = %d-byte IV, %d-byte ciphertext, %v", len(iv), len(ct), err)
			}
		})
	}
}
