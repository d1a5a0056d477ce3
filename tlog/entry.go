// Package tlog owns Sigil's transparency log: the canonical entry record,
// the sequencer that batches concurrent appends into one durable commit
// (group commit), the RFC 6962 Merkle tree stored as C2SP tlog-tiles, the
// C2SP signed-note checkpoints, and inclusion and consistency proofs.
//
// It must never record a secret value: an Entry has no field that could
// hold one, only names, digests and outcomes. It never answers an Append
// before the entry, the tiles that cover it and a checkpoint that commits
// to it are durable, so a caller that gets an error must not hand out what
// it was recording (fail closed). It never imports net/http: the tile
// server is a protocol adapter above it.
//
// # Entry encoding, version 1
//
// An entry is encoded canonically: the same Entry always gives the same
// bytes, and ParseEntry accepts exactly the bytes MarshalBinary produces.
// Strings are UTF-8, written as a uvarint length (minimal encoding) followed
// by the bytes; integers are big-endian and fixed width. In order:
//
//	version        1 byte, 0x01
//	kind           string, 3..64 bytes, matching ^[a-z0-9]+(\.[a-z0-9]+)+$
//	time           int64, unix nanoseconds (UTC; the location is not kept)
//	actor          string, at most 1024 bytes
//	subject.serial string, at most 128 bytes
//	subject.cert   32 bytes, SHA-256 of the certificate DER, zero if none
//	subject.path   string, at most 4096 bytes
//	subject.version int64
//	subject.detail string, at most 16384 bytes
//	outcome.denied 1 byte, 0x00 or 0x01
//	outcome.reason string, at most 4096 bytes
//
// An encoded entry is at most MaxEntrySize bytes. Nothing may follow the
// last field.
//
// # Tiles
//
// The tree's hashes and entries are stored as C2SP tlog-tiles with tiles
// of height 8: a hash tile at level L and index N holds up to 256
// consecutive hashes of tree level 8L, starting at node 256N; an entry
// bundle at index N holds entries 256N.. as a 2-byte big-endian length
// followed by the entry. A tile holding fewer than 256 is partial, and its
// path carries the width: tile/0/x001/234.p/17.
package tlog

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"regexp"
	"time"
	"unicode/utf8"
)

// Entry kinds. Kind is open-ended: any dotted lowercase name is accepted,
// these are the ones Sigil writes.
const (
	KindX509Issue       = "x509.issue"
	KindJWTIssue        = "jwt.issue"
	KindACMEIssue       = "acme.issue"
	KindCertRevoke      = "cert.revoke"
	KindCRLPublish      = "crl.publish"
	KindSecretRead      = "secret.read"
	KindSecretWrite     = "secret.write"
	KindLeaseCreate     = "lease.create"
	KindLeaseRevoke     = "lease.revoke"
	KindOperatorInit    = "operator.init"
	KindOperatorUnseal  = "operator.unseal"
	KindOperatorRotate  = "operator.rotate"
	KindOperatorSeal    = "operator.seal"
	KindPolicyChange    = "policy.change"
	KindEntryCreate     = "entry.create"
	KindEntryUpdate     = "entry.update"
	KindEntryDelete     = "entry.delete"
	KindCACross         = "ca.cross"
	KindAgentToken      = "agent.token"
	KindAgentAttest     = "agent.attest"
	KindAgentEvict      = "agent.evict"
	entryEncodingV1     = 0x01
	maxKindLen          = 64
	maxActorLen         = 1024
	maxSerialLen        = 128
	maxPathLen          = 4096
	maxDetailLen        = 16384
	maxReasonLen        = 4096
	entryFixedFieldsLen = 1 + 8 + 32 + 8 + 1
)

// MaxEntrySize is the largest encoded entry; an entry bundle stores each
// entry's length in two bytes, so it must stay below 64 KiB.
const MaxEntrySize = 65535

// ErrMalformedEntry is returned by ParseEntry for bytes that are not a
// canonical encoding, and by MarshalBinary for an entry that has none.
var ErrMalformedEntry = errors.New("tlog: malformed entry")

var kindPattern = regexp.MustCompile(`^[a-z0-9]+(\.[a-z0-9]+)+$`)

// Entry is one log record: who did what to which subject, and whether it
// was allowed. It never holds a secret value.
type Entry struct {
	// Kind names the action, e.g. KindX509Issue.
	Kind string
	// Time is when the action happened; stored to the nanosecond in UTC.
	Time time.Time
	// Actor is who acted: a SPIFFE ID, an ACME account URL, an operator.
	Actor   string
	Subject Subject
	Outcome Outcome
}

// Subject is what an entry is about: a certificate (Serial and
// CertSHA256), a secret (Path and Version), or whatever Detail names.
type Subject struct {
	// Serial is the certificate serial in lowercase hex.
	Serial string
	// CertSHA256 is the SHA-256 of the certificate's DER; zero if none.
	CertSHA256 [32]byte
	// Path names a secret or policy; never its value.
	Path string
	// Version is the secret's version, or 0.
	Version int64
	// Detail is free text that carries no secret.
	Detail string
}

// Outcome records whether the action was allowed.
type Outcome struct {
	Denied bool
	// Reason explains a denial, or is empty.
	Reason string
}

// NewIssuance returns the entry for issuing the DER certificate cert with
// the given serial.
func NewIssuance(kind string, now time.Time, actor string, cert []byte, serial string) Entry {
	return Entry{
		Kind:    kind,
		Time:    now,
		Actor:   actor,
		Subject: Subject{Serial: serial, CertSHA256: sha256.Sum256(cert)},
	}
}

// The instants an int64 of unix nanoseconds can hold.
var (
	minEntryTime = time.Unix(0, math.MinInt64)
	maxEntryTime = time.Unix(0, math.MaxInt64)
)

type stringField struct {
	name string
	val  string
	max  int
}

func (e Entry) stringFields() [6]stringField {
	return [6]stringField{
		{"kind", e.Kind, maxKindLen},
		{"actor", e.Actor, maxActorLen},
		{"subject serial", e.Subject.Serial, maxSerialLen},
		{"subject path", e.Subject.Path, maxPathLen},
		{"subject detail", e.Subject.Detail, maxDetailLen},
		{"outcome reason", e.Outcome.Reason, maxReasonLen},
	}
}

// MarshalBinary returns the canonical version 1 encoding of e. It refuses
// a kind that is not a dotted lowercase name, a field over its limit, a
// string that is not UTF-8 and a time outside what int64 nanoseconds hold.
func (e Entry) MarshalBinary() ([]byte, error) {
	if !kindPattern.MatchString(e.Kind) {
		return nil, fmt.Errorf("encoding entry: kind %q is not a dotted lowercase name: %w", e.Kind, ErrMalformedEntry)
	}
	if e.Time.Before(minEntryTime) || e.Time.After(maxEntryTime) {
		return nil, fmt.Errorf("encoding entry: time %s is outside the representable range: %w", e.Time.UTC().Format(time.RFC3339), ErrMalformedEntry)
	}
	size := entryFixedFieldsLen
	for _, f := range e.stringFields() {
		if len(f.val) > f.max {
			return nil, fmt.Errorf("encoding entry: %s is %d bytes, over the limit of %d: %w", f.name, len(f.val), f.max, ErrMalformedEntry)
		}
		if !utf8.ValidString(f.val) {
			return nil, fmt.Errorf("encoding entry: %s is not UTF-8: %w", f.name, ErrMalformedEntry)
		}
		size += uvarintLen(uint64(len(f.val))) + len(f.val)
	}
	if size > MaxEntrySize {
		return nil, fmt.Errorf("encoding entry: %d bytes, over the limit of %d: %w", size, MaxEntrySize, ErrMalformedEntry)
	}
	b := make([]byte, 0, size)
	b = append(b, entryEncodingV1)
	b = appendString(b, e.Kind)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time.UnixNano()))
	b = appendString(b, e.Actor)
	b = appendString(b, e.Subject.Serial)
	b = append(b, e.Subject.CertSHA256[:]...)
	b = appendString(b, e.Subject.Path)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Subject.Version))
	b = appendString(b, e.Subject.Detail)
	if e.Outcome.Denied {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = appendString(b, e.Outcome.Reason)
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// ParseEntry decodes a canonical encoding. It rejects an unknown version,
// a non-minimal length, a field over its limit, invalid UTF-8, a kind
// that MarshalBinary would refuse and trailing bytes, so that every entry
// it accepts re-encodes to exactly b.
func ParseEntry(b []byte) (Entry, error) {
	e, err := parseEntry(b)
	if err != nil {
		return Entry{}, fmt.Errorf("parsing entry: %w", err)
	}
	return e, nil
}

func parseEntry(b []byte) (Entry, error) {
	if len(b) > MaxEntrySize {
		return Entry{}, fmt.Errorf("%d bytes, over the limit of %d: %w", len(b), MaxEntrySize, ErrMalformedEntry)
	}
	r := entryReader{b: b}
	if v := r.byte("version"); r.err == nil && v != entryEncodingV1 {
		return Entry{}, fmt.Errorf("unknown encoding version %d: %w", v, ErrMalformedEntry)
	}
	var e Entry
	e.Kind = r.string("kind", maxKindLen)
	e.Time = time.Unix(0, int64(r.uint64("time"))).UTC()
	e.Actor = r.string("actor", maxActorLen)
	e.Subject.Serial = r.string("subject serial", maxSerialLen)
	copy(e.Subject.CertSHA256[:], r.bytes("subject certificate digest", 32))
	e.Subject.Path = r.string("subject path", maxPathLen)
	e.Subject.Version = int64(r.uint64("subject version"))
	e.Subject.Detail = r.string("subject detail", maxDetailLen)
	switch d := r.byte("outcome denied"); {
	case r.err != nil:
	case d == 1:
		e.Outcome.Denied = true
	case d != 0:
		r.fail(fmt.Errorf("outcome denied is %d, not 0 or 1: %w", d, ErrMalformedEntry))
	}
	e.Outcome.Reason = r.string("outcome reason", maxReasonLen)
	if r.err != nil {
		return Entry{}, r.err
	}
	if len(r.b) != 0 {
		return Entry{}, fmt.Errorf("%d trailing bytes: %w", len(r.b), ErrMalformedEntry)
	}
	if !kindPattern.MatchString(e.Kind) {
		return Entry{}, fmt.Errorf("kind %q is not a dotted lowercase name: %w", e.Kind, ErrMalformedEntry)
	}
	return e, nil
}

// entryReader consumes an encoding field by field; after the first error
// every read returns a zero value and the error is kept.
type entryReader struct {
	b   []byte
	err error
}

func (r *entryReader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *entryReader) bytes(name string, n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.fail(fmt.Errorf("truncated in %s: %w", name, ErrMalformedEntry))
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *entryReader) byte(name string) byte {
	if b := r.bytes(name, 1); b != nil {
		return b[0]
	}
	return 0
}

func (r *entryReader) uint64(name string) uint64 {
	if b := r.bytes(name, 8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *entryReader) string(name string, limit int) string {
	if r.err != nil {
		return ""
	}
	n, k := binary.Uvarint(r.b)
	if k <= 0 {
		r.fail(fmt.Errorf("bad length of %s: %w", name, ErrMalformedEntry))
		return ""
	}
	if k != uvarintLen(n) {
		r.fail(fmt.Errorf("non-minimal length of %s: %w", name, ErrMalformedEntry))
		return ""
	}
	if n > uint64(limit) {
		r.fail(fmt.Errorf("%s is %d bytes, over the limit of %d: %w", name, n, limit, ErrMalformedEntry))
		return ""
	}
	r.b = r.b[k:]
	s := r.bytes(name, int(n))
	if r.err != nil {
		return ""
	}
	if !utf8.Valid(s) {
		r.fail(fmt.Errorf("%s is not UTF-8: %w", name, ErrMalformedEntry))
		return ""
	}
	return string(s)
}
