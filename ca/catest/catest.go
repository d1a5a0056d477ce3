// Package catest makes certificates of other CAs for tests of the
// authority: a stand-alone root that cross-certifies one of Sigil's
// roots. It holds no state and is for tests only.
package catest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"time"
)

// CrossSign makes a self-signed root named name, valid from notBefore
// to notAfter, and with it a cross-certificate for root: root's subject
// and key, signed by the new root, valid for the same period. self, when
// set, makes the cross-certificate self-issued instead (root's own
// subject as issuer), which a cross-certificate must not be.
func CrossSign(root *x509.Certificate, name string, notBefore, notAfter time.Time, ca bool) (cross, other *x509.Certificate, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: notBefore, NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	if other, err = x509.ParseCertificate(der); err != nil {
		return nil, nil, err
	}
	xt := &x509.Certificate{
		SerialNumber: big.NewInt(2), RawSubject: root.RawSubject,
		NotBefore: notBefore, NotAfter: notAfter,
		IsCA: ca, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if !ca {
		xt.KeyUsage = x509.KeyUsageDigitalSignature
	}
	der, err = x509.CreateCertificate(rand.Reader, xt, other, root.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cross, err = x509.ParseCertificate(der)
	return cross, other, err
}
