package jws

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// RSA account keys are accepted from minRSABits to maxRSABits: below is
// too weak, above only costs verification time (lego offers up to 8192).
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// algorithms are the "alg" values accepted on requests, in the order
// reported to clients.
var algorithms = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256, jose.EdDSA}

// Algorithms returns the "alg" values a request may be signed with: ES256
// (P-256), ES384 (P-384), RS256 (RSA, 2048 to 8192 bits) and EdDSA
// (Ed25519). It is what a badSignatureAlgorithm problem lists.
func Algorithms() []string {
	s := make([]string, len(algorithms))
	for i, a := range algorithms {
		s[i] = string(a)
	}
	return s
}

// checkKey checks that key is an acceptable account key and that alg is
// the algorithm for it: badPublicKey for a key Sigil does not take,
// badSignatureAlgorithm for a key that does not go with alg.
func checkKey(alg jose.SignatureAlgorithm, key *jose.JSONWebKey) *Problem {
	if key == nil {
		return badPublicKey("no key")
	}
	var want jose.SignatureAlgorithm
	switch k := key.Key.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			want = jose.ES256
		case elliptic.P384():
			want = jose.ES384
		default:
			return badPublicKey("EC keys must use P-256 or P-384")
		}
	case *rsa.PublicKey:
		if k.N == nil || k.N.BitLen() < minRSABits || k.N.BitLen() > maxRSABits {
			return badPublicKey("RSA keys must have %d to %d bits", minRSABits, maxRSABits)
		}
		if k.E < 3 || k.E%2 == 0 || k.E > 1<<31-1 {
			return badPublicKey("RSA public exponent must be odd, at least 3 and below 2^31")
		}
		want = jose.RS256
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return badPublicKey("Ed25519 keys must be %d bytes", ed25519.PublicKeySize)
		}
		want = jose.EdDSA
	default:
		return badPublicKey("the key must be an EC (P-256, P-384), RSA or Ed25519 public key")
	}
	if alg != want {
		return badSignatureAlgorithm("alg %s does not match the key, which signs with %s", alg, want)
	}
	return nil
}

// Thumbprint returns the RFC 7638 thumbprint of key: SHA-256 over the
// key's required members, base64url without padding. It identifies an
// account key and is the second half of a key authorization.
func Thumbprint(key *jose.JSONWebKey) (string, error) {
	if key == nil {
		return "", errors.New("jws: thumbprint of a nil key")
	}
	sum, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("jws: computing thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// KeyAuthorization returns token + "." + Thumbprint(key), the key
// authorization of RFC 8555 §8.1 that http-01, dns-01 and tls-alpn-01
// challenges prove.
func KeyAuthorization(token string, key *jose.JSONWebKey) (string, error) {
	tp, err := Thumbprint(key)
	if err != nil {
		return "", err
	}
	return token + "." + tp, nil
}

// sameKey reports whether a and b are the same public key, compared as
// RFC 7638 says to: by thumbprint.
func sameKey(a, b *jose.JSONWebKey) bool {
	ta, err := Thumbprint(a)
	if err != nil {
		return false
	}
	tb, err := Thumbprint(b)
	return err == nil && ta == tb
}
