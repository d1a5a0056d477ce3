package ca

import (
	"container/list"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"golang.org/x/crypto/ocsp"
	"golang.org/x/sync/singleflight"

	"github.com/sigil-pki/sigil/storage"
)

// OCSP answers one DER OCSP request (RFC 6960) with the DER response to
// send, which is always a response: good, revoked or unknown, signed by the
// issuing intermediate; malformedRequest for a request that cannot be
// parsed, names an unsupported CertID hash or does not hold exactly one
// request; tryLater before Bootstrap; internalError when the store or the
// signer fails. See the package documentation for the caching model.
func (a *Authority) OCSP(ctx context.Context, request []byte) []byte {
	return a.RespondOCSP(ctx, request).DER
}

// OCSPAnswer is a response to send and, for a signed one, its validity
// window (for HTTP caching headers); the times are zero for unsigned error
// responses.
type OCSPAnswer struct {
	DER                    []byte
	ThisUpdate, NextUpdate time.Time
}

// RespondOCSP is OCSP with the response's validity window.
func (a *Authority) RespondOCSP(ctx context.Context, request []byte) OCSPAnswer {
	req, err := parseOCSPRequest(request)
	if err != nil {
		a.log.Debug("malformed OCSP request", "err", err)
		return OCSPAnswer{DER: ocsp.MalformedRequestErrorResponse}
	}
	now := a.now()
	e, err := a.ocsp.response(ctx, a.set.Load(), req, now)
	if errors.Is(err, ErrNotInitialized) {
		return OCSPAnswer{DER: ocsp.TryLaterErrorResponse}
	}
	if err != nil {
		a.log.Error("answering an OCSP request", "serial", Serial(req.serial), "err", err)
		return OCSPAnswer{DER: ocsp.InternalErrorErrorResponse}
	}
	if req.nonce != nil && a.ocsp.limiter.allow(now) {
		der, err := a.ocsp.signWithNonce(e, req.nonce, now)
		if err == nil {
			return OCSPAnswer{DER: der, ThisUpdate: now, NextUpdate: now.Add(a.cfg.OCSPValidity)}
		}
		a.log.Error("signing an OCSP response with a nonce", "serial", Serial(req.serial), "err", err)
	}
	return OCSPAnswer{DER: e.der, ThisUpdate: e.nextUpdate.Add(-a.cfg.OCSPValidity), NextUpdate: e.nextUpdate}
}

// OIDs of the OCSP request.
var (
	oidSHA1      = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256    = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidOCSPNonce = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}
	oidOCSPBasic = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 1}
)

// RFC 6960 4.1.1 request structures.
type ocspRequestASN1 struct {
	TBSRequest        tbsRequestASN1
	OptionalSignature asn1.RawValue `asn1:"explicit,tag:0,optional"`
}

type tbsRequestASN1 struct {
	Version           int           `asn1:"explicit,tag:0,default:0,optional"`
	RequestorName     asn1.RawValue `asn1:"explicit,tag:1,optional"`
	RequestList       []singleRequestASN1
	RequestExtensions []pkix.Extension `asn1:"explicit,tag:2,optional"`
}

type singleRequestASN1 struct {
	ReqCert                 certIDASN1
	SingleRequestExtensions []pkix.Extension `asn1:"explicit,tag:0,optional"`
}

type certIDASN1 struct {
	HashAlgorithm  pkix.AlgorithmIdentifier
	IssuerNameHash []byte
	IssuerKeyHash  []byte
	SerialNumber   *big.Int
}

// ocspRequest is a parsed request: one CertID and an optional nonce.
type ocspRequest struct {
	hash      crypto.Hash
	issuerKey string // certIDKey of the named issuer
	serial    *big.Int
	// nonce is the nonce extension's extnValue (a DER OCTET STRING), echoed
	// verbatim.
	nonce []byte
}

// Nonce length limits of RFC 8954 section 2.1.
const (
	minNonceLen = 1
	maxNonceLen = 32
)

func parseOCSPRequest(der []byte) (*ocspRequest, error) {
	var raw ocspRequestASN1
	rest, err := asn1.Unmarshal(der, &raw)
	if err != nil {
		return nil, fmt.Errorf("parsing the request: %w", err)
	}
	if len(rest) != 0 {
		return nil, errors.New("trailing data after the request")
	}
	tbs := raw.TBSRequest
	if tbs.Version != 0 {
		return nil, fmt.Errorf("unsupported version %d", tbs.Version)
	}
	if n := len(tbs.RequestList); n != 1 {
		return nil, fmt.Errorf("%d requests in the list; exactly one is answered", n)
	}
	id := tbs.RequestList[0].ReqCert
	var h crypto.Hash
	switch {
	case id.HashAlgorithm.Algorithm.Equal(oidSHA1):
		h = crypto.SHA1
	case id.HashAlgorithm.Algorithm.Equal(oidSHA256):
		h = crypto.SHA256
	default:
		return nil, fmt.Errorf("unsupported CertID hash %v", id.HashAlgorithm.Algorithm)
	}
	if len(id.IssuerNameHash) != h.Size() || len(id.IssuerKeyHash) != h.Size() {
		return nil, errors.New("CertID hashes have the wrong length")
	}
	if id.SerialNumber == nil {
		return nil, errors.New("CertID has no serial number")
	}
	req := &ocspRequest{
		hash:      h,
		issuerKey: certIDKey(h, id.IssuerNameHash, id.IssuerKeyHash),
		serial:    id.SerialNumber,
	}
	for _, ext := range tbs.RequestExtensions {
		if !ext.Id.Equal(oidOCSPNonce) {
			continue
		}
		if req.nonce != nil {
			return nil, errors.New("more than one nonce extension")
		}
		var nonce []byte
		if rest, err := asn1.Unmarshal(ext.Value, &nonce); err != nil || len(rest) != 0 {
			return nil, errors.New("nonce is not an OCTET STRING")
		}
		if len(nonce) < minNonceLen || len(nonce) > maxNonceLen {
			return nil, fmt.Errorf("nonce of %d bytes: %d to %d are allowed", len(nonce), minNonceLen, maxNonceLen)
		}
		req.nonce = ext.Value
	}
	return req, nil
}

// certIDKey joins a CertID's hash algorithm and hashes into a map key. The
// hash lengths are fixed per algorithm, so the key is unambiguous.
func certIDKey(h crypto.Hash, nameHash, keyHash []byte) string {
	return string(rune(h)) + string(nameHash) + string(keyHash)
}

// maxUnknown bounds the cached "unknown" responses.
const maxUnknown = 4096

// responder keeps pre-signed OCSP responses.
type responder struct {
	a *Authority

	mu sync.RWMutex
	// cache holds good and revoked responses.
	cache   map[respKey]*ocspEntry
	unknown *lru
	group   singleflight.Group
	limiter *rateLimiter
}

// respKey names one cached response. foreign marks "unknown" responses to
// CertIDs naming an issuer we do not hold, signed by the active
// intermediate, so they never answer for that intermediate's own serials.
type respKey struct {
	issuer  string
	serial  string
	hash    crypto.Hash
	foreign bool
}

func (k respKey) String() string {
	return fmt.Sprintf("%s/%s/%d/%t", k.issuer, k.serial, k.hash, k.foreign)
}

// ocspEntry is a signed response and what it says, so that a nonce
// response can be signed without reading the store.
type ocspEntry struct {
	der        []byte
	issuer     *issuer
	serial     *big.Int
	hash       crypto.Hash
	status     int
	revokedAt  time.Time
	reason     int
	nextUpdate time.Time
}

func newResponder(a *Authority) *responder {
	return &responder{
		a:       a,
		cache:   make(map[respKey]*ocspEntry),
		unknown: newLRU(maxUnknown),
		limiter: newRateLimiter(a.cfg.OCSPNonceRate, a.now()),
	}
}

// fresh reports whether e may still be served at now.
func (r *responder) fresh(e *ocspEntry, now time.Time) bool {
	return e != nil && now.Before(e.nextUpdate.Add(-r.a.cfg.OCSPRefreshBefore))
}

func (r *responder) cached(k respKey, now time.Time) *ocspEntry {
	r.mu.RLock()
	e := r.cache[k]
	r.mu.RUnlock()
	if r.fresh(e, now) {
		return e
	}
	if e := r.unknown.get(k); r.fresh(e, now) {
		return e
	}
	return nil
}

// put caches e. A revocation is final: a good response signed from a read
// that raced with Revoke never replaces the revoked one.
func (r *responder) put(k respKey, e *ocspEntry) {
	if e.status == ocsp.Unknown {
		r.unknown.add(k, e)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.cache[k]; old != nil && old.status == ocsp.Revoked && e.status != ocsp.Revoked {
		return
	}
	r.cache[k] = e
}

// response returns the cached response for req, signing (once, however many
// callers ask at the same time) when none is cached or it is due for
// refresh.
func (r *responder) response(ctx context.Context, set *issuerSet, req *ocspRequest, now time.Time) (*ocspEntry, error) {
	is := set.byCertID[req.issuerKey]
	k := respKey{serial: Serial(req.serial), hash: req.hash}
	if is == nil {
		// A CertID naming an issuer we do not hold (or the root, which
		// signs no OCSP): unknown, signed by the active intermediate.
		if is = set.active(now); is == nil {
			return nil, ErrNotInitialized
		}
		k.foreign = true
	}
	k.issuer = is.id
	if e := r.cached(k, now); e != nil {
		return e, nil
	}
	v, err, _ := r.group.Do(k.String(), func() (any, error) {
		if e := r.cached(k, now); e != nil {
			return e, nil
		}
		status, revokedAt, reason := ocsp.Unknown, time.Time{}, 0
		// Only a serial we could have issued is looked up.
		if !k.foreign && req.serial.Sign() > 0 && req.serial.BitLen() <= 160 {
			rec, err := r.a.cfg.Store.GetCertificate(context.WithoutCancel(ctx), k.serial)
			switch {
			case err == nil && rec.IssuerID == is.id && rec.Revoked():
				status, revokedAt, reason = ocsp.Revoked, rec.RevokedAt, rec.RevocationReason
			case err == nil && rec.IssuerID == is.id:
				status = ocsp.Good
			case err != nil && !errors.Is(err, storage.ErrNotFound):
				return nil, fmt.Errorf("reading certificate %s: %w", k.serial, err)
			}
		}
		e, err := r.sign(is, req.serial, req.hash, status, revokedAt, reason, r.a.now())
		if err != nil {
			return nil, err
		}
		r.put(k, e)
		return e, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*ocspEntry), nil
}

// sign makes a response with x/crypto/ocsp, signed by the issuer itself.
func (r *responder) sign(is *issuer, serial *big.Int, h crypto.Hash, status int, revokedAt time.Time, reason int, now time.Time) (*ocspEntry, error) {
	e := &ocspEntry{
		issuer:     is,
		serial:     serial,
		hash:       h,
		status:     status,
		revokedAt:  revokedAt,
		reason:     reason,
		nextUpdate: now.Add(r.a.cfg.OCSPValidity),
	}
	tmpl := ocsp.Response{
		Status:           status,
		SerialNumber:     serial,
		ThisUpdate:       now,
		NextUpdate:       e.nextUpdate,
		RevokedAt:        revokedAt,
		RevocationReason: reason,
		IssuerHash:       h,
	}
	der, err := ocsp.CreateResponse(is.cert, is.cert, tmpl, is.signer)
	if err != nil {
		return nil, fmt.Errorf("signing the OCSP response for %s with %s: %w", Serial(serial), is.id, err)
	}
	e.der = der
	return e, nil
}

// storeRevoked signs the revoked response for a certificate of is under
// both CertID hashes and replaces whatever was cached.
func (r *responder) storeRevoked(is *issuer, cert storage.Certificate) error {
	n, ok := new(big.Int).SetString(cert.Serial, 16)
	if !ok {
		return fmt.Errorf("stored serial %q is not hex", cert.Serial)
	}
	now := r.a.now()
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		e, err := r.sign(is, n, h, ocsp.Revoked, cert.RevokedAt, cert.RevocationReason, now)
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.cache[respKey{issuer: is.id, serial: cert.Serial, hash: h}] = e
		r.mu.Unlock()
	}
	return nil
}

// sweep drops responses past their nextUpdate, which bounds the cache by
// the certificates asked about within one validity period.
func (r *responder) sweep(now time.Time) {
	r.mu.Lock()
	for k, e := range r.cache {
		if !now.Before(e.nextUpdate) {
			delete(r.cache, k)
		}
	}
	r.mu.Unlock()
	r.unknown.sweep(now)
}

// RFC 6960 4.2.1 response structures, for responses carrying a nonce:
// x/crypto/ocsp.CreateResponse puts extra extensions into singleExtensions,
// but the nonce belongs in responseExtensions (RFC 6960 4.4.1, RFC 8954),
// which is where clients such as OpenSSL look for it.
type ocspResponseASN1 struct {
	Status   asn1.Enumerated
	Response responseBytesASN1 `asn1:"explicit,tag:0"`
}

type responseBytesASN1 struct {
	ResponseType asn1.ObjectIdentifier
	Response     []byte
}

type basicResponseASN1 struct {
	TBSResponseData    asn1.RawValue
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          asn1.BitString
}

type responseDataASN1 struct {
	ResponderID        asn1.RawValue
	ProducedAt         time.Time `asn1:"generalized"`
	Responses          []singleResponseASN1
	ResponseExtensions []pkix.Extension `asn1:"explicit,tag:1,optional"`
}

type singleResponseASN1 struct {
	CertID     certIDASN1
	CertStatus asn1.RawValue
	ThisUpdate time.Time `asn1:"generalized"`
	NextUpdate time.Time `asn1:"generalized,explicit,tag:0"`
}

type revokedInfoASN1 struct {
	RevocationTime time.Time       `asn1:"generalized"`
	Reason         asn1.Enumerated `asn1:"explicit,tag:0,optional"`
}

// signWithNonce signs a fresh response with e's status that echoes the
// request's nonce extension value.
func (r *responder) signWithNonce(e *ocspEntry, nonce []byte, now time.Time) ([]byte, error) {
	is := e.issuer
	keyBits, err := subjectPublicKeyBits(is.cert.RawSubjectPublicKeyInfo)
	if err != nil {
		return nil, err
	}
	hashOID := oidSHA1
	if e.hash == crypto.SHA256 {
		hashOID = oidSHA256
	}
	status := asn1.RawValue{Class: asn1.ClassContextSpecific, Bytes: []byte{}}
	switch e.status {
	case ocsp.Good:
		status.Tag = 0
	case ocsp.Revoked:
		inner, err := asn1.Marshal(revokedInfoASN1{RevocationTime: e.revokedAt.UTC(), Reason: asn1.Enumerated(e.reason)})
		if err != nil {
			return nil, err
		}
		var seq asn1.RawValue
		if _, err := asn1.Unmarshal(inner, &seq); err != nil {
			return nil, err
		}
		status.Tag, status.IsCompound, status.Bytes = 1, true, seq.Bytes
	default:
		status.Tag = 2
	}
	tbs, err := asn1.Marshal(responseDataASN1{
		ResponderID: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, IsCompound: true, Bytes: is.cert.RawSubject},
		ProducedAt:  now.UTC().Truncate(time.Second),
		Responses: []singleResponseASN1{{
			CertID: certIDASN1{
				HashAlgorithm:  pkix.AlgorithmIdentifier{Algorithm: hashOID, Parameters: asn1.NullRawValue},
				IssuerNameHash: hashOf(e.hash, is.cert.RawSubject),
				IssuerKeyHash:  hashOf(e.hash, keyBits),
				SerialNumber:   e.serial,
			},
			CertStatus: status,
			ThisUpdate: now.UTC(),
			NextUpdate: now.Add(r.a.cfg.OCSPValidity).UTC(),
		}},
		ResponseExtensions: []pkix.Extension{{Id: oidOCSPNonce, Value: nonce}},
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the response: %w", err)
	}
	h, sigAlg, err := signatureAlgorithm(is.signer.Public())
	if err != nil {
		return nil, err
	}
	digest := tbs
	if h != 0 {
		d := h.New()
		d.Write(tbs)
		digest = d.Sum(nil)
	}
	sig, err := is.signer.Sign(r.a.rand, digest, h)
	if err != nil {
		return nil, fmt.Errorf("signing the response with %s: %w", is.id, err)
	}
	basic, err := asn1.Marshal(basicResponseASN1{
		TBSResponseData:    asn1.RawValue{FullBytes: tbs},
		SignatureAlgorithm: sigAlg,
		Signature:          asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)},
	})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(ocspResponseASN1{
		Status:   asn1.Enumerated(ocsp.Success),
		Response: responseBytesASN1{ResponseType: oidOCSPBasic, Response: basic},
	})
}

// signatureAlgorithm picks the digest and AlgorithmIdentifier for a key.
func signatureAlgorithm(pub crypto.PublicKey) (crypto.Hash, pkix.AlgorithmIdentifier, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return crypto.SHA256, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}}, nil
		case elliptic.P384():
			return crypto.SHA384, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}}, nil
		case elliptic.P521():
			return crypto.SHA512, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}}, nil
		}
	case *rsa.PublicKey:
		return crypto.SHA256, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}, Parameters: asn1.NullRawValue}, nil
	case ed25519.PublicKey:
		return 0, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 3, 101, 112}}, nil
	}
	return 0, pkix.AlgorithmIdentifier{}, fmt.Errorf("no OCSP signature algorithm for key type %T", pub)
}

// lru is a bounded least-recently-used cache of responses.
type lru struct {
	mu  sync.Mutex
	max int
	ll  *list.List
	m   map[respKey]*list.Element
}

type lruItem struct {
	k respKey
	e *ocspEntry
}

func newLRU(max int) *lru {
	return &lru{max: max, ll: list.New(), m: make(map[respKey]*list.Element)}
}

func (l *lru) get(k respKey) *ocspEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	el, ok := l.m[k]
	if !ok {
		return nil
	}
	l.ll.MoveToFront(el)
	return el.Value.(*lruItem).e
}

func (l *lru) add(k respKey, e *ocspEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.m[k]; ok {
		el.Value.(*lruItem).e = e
		l.ll.MoveToFront(el)
		return
	}
	l.m[k] = l.ll.PushFront(&lruItem{k: k, e: e})
	for l.ll.Len() > l.max {
		last := l.ll.Back()
		l.ll.Remove(last)
		delete(l.m, last.Value.(*lruItem).k)
	}
}

func (l *lru) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ll.Len()
}

func (l *lru) sweep(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for el := l.ll.Front(); el != nil; {
		next := el.Next()
		if it := el.Value.(*lruItem); !now.Before(it.e.nextUpdate) {
			l.ll.Remove(el)
			delete(l.m, it.k)
		}
		el = next
	}
}

// rateLimiter is a token bucket holding up to one second of tokens.
type rateLimiter struct {
	mu     sync.Mutex
	rate   float64
	tokens float64
	last   time.Time
}

func newRateLimiter(perSecond int, now time.Time) *rateLimiter {
	return &rateLimiter{rate: float64(perSecond), tokens: float64(perSecond), last: now}
}

func (l *rateLimiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.After(l.last) {
		l.tokens = min(l.rate, l.tokens+now.Sub(l.last).Seconds()*l.rate)
		l.last = now
	}
	if l.tokens >= 1 {
		l.tokens--
		return true
	}
	return false
}
