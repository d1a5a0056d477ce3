package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/miekg/pkcs11"
)

var (
	oidP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384 = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
)

// curveOID returns the named-curve OID PKCS#11 expects in CKA_EC_PARAMS.
func curveOID(c elliptic.Curve) (asn1.ObjectIdentifier, error) {
	switch c {
	case elliptic.P256():
		return oidP256, nil
	case elliptic.P384():
		return oidP384, nil
	case nil:
		return nil, errors.New("no curve given")
	default:
		return nil, fmt.Errorf("unsupported curve %s: want P-256 or P-384", c.Params().Name)
	}
}

// curveFromParams maps a DER CKA_EC_PARAMS value back to a curve.
func curveFromParams(der []byte) (elliptic.Curve, error) {
	var oid asn1.ObjectIdentifier
	rest, err := asn1.Unmarshal(der, &oid)
	if err != nil || len(rest) != 0 {
		return nil, errors.New("CKA_EC_PARAMS is not a named-curve OID")
	}
	switch {
	case oid.Equal(oidP256):
		return elliptic.P256(), nil
	case oid.Equal(oidP384):
		return elliptic.P384(), nil
	default:
		return nil, fmt.Errorf("unsupported curve OID %s", oid)
	}
}

// parseECPoint decodes a CKA_EC_POINT value: a DER OCTET STRING holding an
// uncompressed point, as PKCS#11 v2.20+ specifies. A bare uncompressed
// point, which some tokens return, is accepted as well.
func parseECPoint(curve elliptic.Curve, value []byte) (*ecdsa.PublicKey, error) {
	point := value
	var inner []byte
	if rest, err := asn1.Unmarshal(value, &inner); err == nil && len(rest) == 0 {
		point = inner
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
	if err != nil {
		return nil, fmt.Errorf("decoding CKA_EC_POINT: %w", err)
	}
	return pub, nil
}

// Signer is an EC private key in the token. It implements crypto.Signer
// and is safe for concurrent use.
type Signer struct {
	tok   *Token
	label string
	priv  pkcs11.ObjectHandle
	pub   *ecdsa.PublicKey
	// size is the byte length of the curve order.
	size int
}

// GenerateECKey generates a P-256 or P-384 key pair as token objects: the
// private key sensitive, not extractable, private and usable only to sign,
// the public key usable to verify, both with the same random CKA_ID. It
// returns ErrKeyExists if a private or secret key already carries label.
func (t *Token) GenerateECKey(ctx context.Context, label string, curve elliptic.Curve) (*Signer, error) {
	if label == "" {
		return nil, errors.New("generating EC key: empty label")
	}
	oid, err := curveOID(curve)
	if err != nil {
		return nil, fmt.Errorf("generating EC key %q: %w", label, err)
	}
	params, err := asn1.Marshal(oid)
	if err != nil {
		return nil, fmt.Errorf("generating EC key %q: encoding curve: %w", label, err)
	}
	id, err := t.newID()
	if err != nil {
		return nil, fmt.Errorf("generating EC key %q: %w", label, err)
	}

	t.genMu.Lock()
	defer t.genMu.Unlock()
	var s *Signer
	err = t.withSession(ctx, func(sh pkcs11.SessionHandle) error {
		taken, err := t.labelTaken(sh, label)
		if err != nil {
			return err
		}
		if taken {
			return ErrKeyExists
		}
		pubTmpl := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
			pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		}
		privTmpl := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
			pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
			pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		}
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)}
		pubObj, privObj, err := t.p.GenerateKeyPair(sh, mech, pubTmpl, privTmpl)
		if err != nil {
			return fmt.Errorf("generating key pair: %w", err)
		}
		s, err = t.newSigner(sh, label, privObj, pubObj)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("generating EC key %q: %w", label, err)
	}
	t.log.Info("generated EC key in token", "token", t.label, "key", label,
		"curve", curve.Params().Name, "key_id", hex.EncodeToString(id))
	return s, nil
}

// Signer returns the EC private key labelled label, or ErrKeyNotFound. The
// public key is read from the public key object with the same CKA_ID.
func (t *Token) Signer(ctx context.Context, label string) (*Signer, error) {
	var s *Signer
	err := t.withSession(ctx, func(sh pkcs11.SessionHandle) error {
		priv, err := t.findOne(sh, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		})
		if err != nil {
			return err
		}
		attrs, err := t.p.GetAttributeValue(sh, priv, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
		})
		if err != nil {
			return fmt.Errorf("reading private key ID: %w", err)
		}
		pub, err := t.findOne(sh, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
			pkcs11.NewAttribute(pkcs11.CKA_ID, attrs[0].Value),
		})
		if errors.Is(err, ErrKeyNotFound) {
			return errors.New("no public key object shares the private key's ID")
		}
		if err != nil {
			return fmt.Errorf("finding public key: %w", err)
		}
		s, err = t.newSigner(sh, label, priv, pub)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("loading EC key %q: %w", label, err)
	}
	return s, nil
}

func (t *Token) newSigner(sh pkcs11.SessionHandle, label string, priv, pubObj pkcs11.ObjectHandle) (*Signer, error) {
	attrs, err := t.p.GetAttributeValue(sh, pubObj, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("reading public key: %w", err)
	}
	var params, point []byte
	for _, a := range attrs {
		switch a.Type {
		case pkcs11.CKA_EC_PARAMS:
			params = a.Value
		case pkcs11.CKA_EC_POINT:
			point = a.Value
		}
	}
	curve, err := curveFromParams(params)
	if err != nil {
		return nil, err
	}
	pub, err := parseECPoint(curve, point)
	if err != nil {
		return nil, err
	}
	return &Signer{
		tok:   t,
		label: label,
		priv:  priv,
		pub:   pub,
		size:  (curve.Params().N.BitLen() + 7) / 8,
	}, nil
}

// Public returns the key's *ecdsa.PublicKey.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// Sign signs digest with CKM_ECDSA inside the token and returns an ASN.1
// DER ECDSA-Sig-Value, as ecdsa.VerifyASN1 and crypto/x509 expect. digest
// must be a hash; if opts names a hash function, digest must have its size.
// A digest longer than the curve order is truncated to its leftmost bytes,
// as ECDSA prescribes. rand is ignored: the token supplies the nonce.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if len(digest) == 0 {
		return nil, fmt.Errorf("signing with key %q: empty digest", s.label)
	}
	if opts != nil {
		if h := opts.HashFunc(); h != 0 && len(digest) != h.Size() {
			return nil, fmt.Errorf("signing with key %q: digest has %d bytes, %v needs %d", s.label, len(digest), h, h.Size())
		}
	}
	// The order of P-256 and P-384 is a whole number of bytes, so keeping
	// the leftmost bytes is exactly ECDSA's leftmost-bits truncation.
	if len(digest) > s.size {
		digest = digest[:s.size]
	}
	var raw []byte
	err := s.tok.withSession(context.Background(), func(sh pkcs11.SessionHandle) error {
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}
		if err := s.tok.p.SignInit(sh, mech, s.priv); err != nil {
			return fmt.Errorf("starting signature: %w", err)
		}
		var err error
		raw, err = s.tok.p.Sign(sh, digest)
		if err != nil {
			return fmt.Errorf("signing: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("signing with key %q: %w", s.label, err)
	}
	if len(raw) != 2*s.size {
		return nil, fmt.Errorf("signing with key %q: token returned a %d-byte signature, want %d", s.label, len(raw), 2*s.size)
	}
	sig, err := asn1.Marshal(struct{ R, S *big.Int }{
		R: new(big.Int).SetBytes(raw[:s.size]),
		S: new(big.Int).SetBytes(raw[s.size:]),
	})
	if err != nil {
		return nil, fmt.Errorf("signing with key %q: encoding signature: %w", s.label, err)
	}
	return sig, nil
}
