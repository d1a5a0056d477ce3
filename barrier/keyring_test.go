package barrier

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"testing"
	"time"
)

func TestKeyringEncodingRoundTrip(t *testing.T) {
	b := &Barrier{rand: rand.Reader, clock: func() time.Time { return time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC) }}
	var r keyring
	for term := uint32(1); term <= 3; term++ {
		k, err := b.newDataKey(term * 10)
		if err != nil {
			t.Fatal(err)
		}
		r.terms = append(r.terms, k)
	}
	r.active = r.terms[2]
	enc := marshalKeyring(&r)
	if !json.Valid(enc) {
		t.Fatalf("keyring encoding is not JSON: %s", enc)
	}
	got, err := unmarshalKeyring(enc)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.terms) != 3 || got.active.term != 30 {
		t.Fatalf("decoded %d terms, active %d; want 3, 30", len(got.terms), got.active.term)
	}
	for i, k := range got.terms {
		w := r.terms[i]
		if k.term != w.term || !bytes.Equal(k.key, w.key) || !k.created.Equal(w.created) || k.aead == nil {
			t.Errorf("term %d did not round-trip", i)
		}
	}

	master := make([]byte, 32)
	rand.Read(master)
	sealed, err := sealKeyring(master, &r, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openKeyring(master, sealed); err != nil {
		t.Fatal(err)
	}
	master[0] ^= 1
	if _, err := openKeyring(master, sealed); err == nil {
		t.Fatal("keyring opened under a different master key")
	}
}

func TestUnmarshalKeyringRejects(t *testing.T) {
	key := `"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="`
	tests := []struct {
		name string
		doc  string
	}{
		{"not JSON", `{`},
		{"unknown version", `{"version":2,"terms":[{"term":1,"key":` + key + `}]}`},
		{"no terms", `{"version":1,"terms":[]}`},
		{"term zero", `{"version":1,"terms":[{"term":0,"key":` + key + `}]}`},
		{"terms out of order", `{"version":1,"terms":[{"term":2,"key":` + key + `},{"term":1,"key":` + key + `}]}`},
		{"repeated term", `{"version":1,"terms":[{"term":1,"key":` + key + `},{"term":1,"key":` + key + `}]}`},
		{"short key", `{"version":1,"terms":[{"term":1,"key":"AAAA"}]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := unmarshalKeyring([]byte(tc.doc)); err == nil {
				t.Fatalf("unmarshalKeyring accepted it: %d terms", len(r.terms))
			}
		})
	}
}

func TestSealConfigCheck(t *testing.T) {
	v := make([]byte, 32)
	good := func() sealConfig {
		return sealConfig{Version: 1, Type: SealShamir, Shares: 2, Threshold: 2, Verifiers: [][]byte{v, v}}
	}
	if c := good(); c.check(SealShamir) != nil {
		t.Fatalf("valid shamir configuration refused: %v", c.check(SealShamir))
	}
	if c := (sealConfig{Version: 1, Type: SealDev, WrappedKey: []byte{1}}); c.check(SealDev) != nil {
		t.Fatalf("valid dev configuration refused: %v", c.check(SealDev))
	}
	tests := []struct {
		name   string
		mutate func(*sealConfig)
	}{
		{"version", func(c *sealConfig) { c.Version = 2 }},
		{"type differs from row", func(c *sealConfig) { c.Type = SealDev }},
		{"threshold zero", func(c *sealConfig) { c.Threshold = 0 }},
		{"threshold above shares", func(c *sealConfig) { c.Threshold = 3 }},
		{"threshold one of two", func(c *sealConfig) { c.Threshold = 1 }},
		{"missing verifier", func(c *sealConfig) { c.Verifiers = c.Verifiers[:1] }},
		{"short verifier", func(c *sealConfig) { c.Verifiers[1] = v[:31] }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mutate(&c)
			if err := c.check(SealShamir); err == nil {
				t.Fatal("check accepted it")
			}
		})
	}
	for _, typ := range []string{SealPKCS11, SealDev, "other"} {
		c := sealConfig{Version: 1, Type: typ}
		if err := c.check(typ); err == nil {
			t.Errorf("%s configuration without a wrapped key accepted", typ)
		}
	}
}
