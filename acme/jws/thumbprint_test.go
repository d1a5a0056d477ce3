package jws

import (
	"encoding/json"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// The RSA key of RFC 7638 §3.1 and its thumbprint.
const (
	rfc7638Key = `{
		"kty": "RSA",
		"n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
		"e": "AQAB",
		"alg": "RS256",
		"kid": "2011-04-29"
	}`
	rfc7638Thumbprint = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
)

func TestThumbprintRFC7638(t *testing.T) {
	var k jose.JSONWebKey
	if err := json.Unmarshal([]byte(rfc7638Key), &k); err != nil {
		t.Fatal(err)
	}
	got, err := Thumbprint(&k)
	if err != nil {
		t.Fatal(err)
	}
	if got != rfc7638Thumbprint {
		t.Errorf("Thumbprint = %s, want %s", got, rfc7638Thumbprint)
	}

	ka, err := KeyAuthorization("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA", &k)
	if err != nil {
		t.Fatal(err)
	}
	if want := "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA." + rfc7638Thumbprint; ka != want {
		t.Errorf("KeyAuthorization = %s, want %s", ka, want)
	}
}

func TestThumbprintIgnoresNonKeyMembers(t *testing.T) {
	k := keySet(t)
	plain, err := Thumbprint(pub(k.p256))
	if err != nil {
		t.Fatal(err)
	}
	decorated, err := Thumbprint(&jose.JSONWebKey{Key: &k.p256.PublicKey, KeyID: "x", Use: "sig", Algorithm: "ES256"})
	if err != nil {
		t.Fatal(err)
	}
	private, err := Thumbprint(&jose.JSONWebKey{Key: k.p256})
	if err != nil {
		t.Fatal(err)
	}
	if plain != decorated || plain != private {
		t.Errorf("thumbprints differ: %s %s %s", plain, decorated, private)
	}
	other, err := Thumbprint(pub(k.p384))
	if err != nil {
		t.Fatal(err)
	}
	if other == plain {
		t.Error("two keys share a thumbprint")
	}
}

func TestThumbprintErrors(t *testing.T) {
	if _, err := Thumbprint(nil); err == nil {
		t.Error("Thumbprint(nil) succeeded")
	}
	if _, err := Thumbprint(&jose.JSONWebKey{Key: []byte("secret")}); err == nil {
		t.Error("Thumbprint of a symmetric key succeeded")
	}
	if _, err := KeyAuthorization("t", nil); err == nil {
		t.Error("KeyAuthorization with no key succeeded")
	}
}
