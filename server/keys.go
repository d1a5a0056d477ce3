package server

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/sigil-pki/sigil/barrier"
	"github.com/sigil-pki/sigil/hsm"
)

// keyStore keeps the CA's private keys: the root in the HSM token when one
// is configured, every other key as PKCS#8 sealed under the barrier. It
// implements ca.KeyStore.
type keyStore struct {
	barrier   *barrier.Barrier
	token     *hsm.Token // nil without an HSM
	rootLabel string
	curve     elliptic.Curve
}

const (
	refPKCS11  = "pkcs11:"
	refBarrier = "barrier:"
)

func curveFor(keyType string) elliptic.Curve {
	if keyType == "ec-p384" {
		return elliptic.P384()
	}
	return elliptic.P256()
}

func (k *keyStore) Generate(ctx context.Context, purpose string) (crypto.Signer, string, error) {
	if purpose == "root" && k.token != nil {
		s, err := k.token.GenerateECKey(ctx, k.rootLabel, k.curve)
		if err != nil {
			return nil, "", fmt.Errorf("generating root key %q in the HSM: %w", k.rootLabel, err)
		}
		return s, refPKCS11 + k.rootLabel, nil
	}
	key, err := ecdsa.GenerateKey(k.curve, rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("generating %s key: %w", purpose, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, "", fmt.Errorf("encoding %s key: %w", purpose, err)
	}
	defer clear(der)
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, "", err
	}
	name := "ca/" + purpose + "-" + hex.EncodeToString(id[:])
	if err := k.barrier.Put(ctx, name, der); err != nil {
		return nil, "", fmt.Errorf("sealing %s key: %w", purpose, err)
	}
	return key, refBarrier + name, nil
}

func (k *keyStore) Signer(ctx context.Context, ref string) (crypto.Signer, error) {
	switch {
	case strings.HasPrefix(ref, refPKCS11):
		if k.token == nil {
			return nil, fmt.Errorf("key %s lives in an HSM, but no hsm section is configured", ref)
		}
		s, err := k.token.Signer(ctx, strings.TrimPrefix(ref, refPKCS11))
		if err != nil {
			return nil, fmt.Errorf("loading key %s: %w", ref, err)
		}
		return s, nil
	case strings.HasPrefix(ref, refBarrier):
		der, err := k.barrier.Get(ctx, strings.TrimPrefix(ref, refBarrier))
		if err != nil {
			return nil, fmt.Errorf("unsealing key %s: %w", ref, err)
		}
		defer clear(der)
		key, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return nil, fmt.Errorf("decoding key %s: %w", ref, err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, errors.New("key " + ref + " is not a signing key")
		}
		return s, nil
	}
	return nil, fmt.Errorf("unknown key reference %q", ref)
}
