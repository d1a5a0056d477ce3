// Package agentapi is the protocol between a Sigil agent and the server:
// the JSON bodies of attestation, renewal, signing and JWT requests, the
// error document, the node and agent naming rules, and the entry sync
// stream (one JSON message per line) with the digest both ends compute
// over an agent's entries to notice that they disagree.
//
// It owns the wire forms only. It never does I/O beyond reading and
// writing the stream it is handed, holds no business rule (who may attest,
// which entries an agent gets: that is the server's), and never carries a
// private key: agents send certificate requests, the server returns
// certificates.
package agentapi

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/sigil-pki/sigil/identity/entry"
)

// Paths on the server's HTTPS listener.
const (
	// PathAttest is open: the credential is a join token in the body or a
	// node certificate (x509pop) presented in the TLS handshake.
	PathAttest = "/v1/agent/attest"
	// PathRenew, PathSign, PathJWT and PathSync need the agent's SVID.
	PathRenew = "/v1/agent/renew"
	PathSign  = "/v1/agent/sign"
	PathJWT   = "/v1/agent/jwt"
	PathSync  = "/v1/agent/sync"
)

// AgentPath is the path under which agent SPIFFE IDs live:
// spiffe://<trust domain>/sigil/agent/<node ID>.
const AgentPath = "/sigil/agent/"

// Attestation methods.
const (
	MethodJoinToken = "join_token"
	MethodX509PoP   = "x509pop"
)

// maxNodeIDLen bounds a node ID.
const maxNodeIDLen = 63

// CheckNodeID reports why id cannot name a node, or nil: 1 to 63 of
// lowercase letters, digits, '-', '_' and '.', starting with a letter or
// digit.
func CheckNodeID(id string) error {
	if id == "" || len(id) > maxNodeIDLen {
		return fmt.Errorf("node ID %q must be 1 to %d characters", id, maxNodeIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '-' || c == '_' || c == '.')
		if !ok {
			return fmt.Errorf("node ID %q: character %q at %d not allowed (lowercase letters, digits, and - _ . after the first)", id, c, i)
		}
	}
	return nil
}

// AgentID returns the SPIFFE ID of the agent of node id in trust domain td.
func AgentID(td, id string) string { return "spiffe://" + td + AgentPath + id }

// NodeOf returns the node ID of an agent SPIFFE ID of trust domain td, or
// false when spiffeID is not one.
func NodeOf(td, spiffeID string) (string, bool) {
	id, ok := strings.CutPrefix(spiffeID, "spiffe://"+td+AgentPath)
	if !ok || CheckNodeID(id) != nil {
		return "", false
	}
	return id, true
}

// NodesPath is the path under which node selector parents live: an entry
// whose ParentID is spiffe://<td>/sigil/nodes/<type>/<value...> goes to
// every agent that has the node selector "<type>:<value...>" (the path's
// slashes standing for the selector's colons).
const NodesPath = "/sigil/nodes/"

// Node selector types that attestation produces.
const (
	// SelectorGroup is "group:<name>", from the join token.
	SelectorGroup = "group"
	// SelectorX509PoP is "x509pop:ca:<fingerprint>" (the first 16 bytes of
	// the SHA-256 of the CA certificate that verified the node's, in hex)
	// and "x509pop:ou:<organizational unit>", from the node certificate.
	SelectorX509PoP = "x509pop"
)

// SelectorParent returns the ParentID that names the node selector sel in
// trust domain td, or false when sel cannot be one: every colon-separated
// part must pass CheckNodeID, and there must be at least two.
func SelectorParent(td, sel string) (string, bool) {
	parts := strings.Split(sel, ":")
	if len(parts) < 2 {
		return "", false
	}
	for _, p := range parts {
		if CheckNodeID(p) != nil {
			return "", false
		}
	}
	return "spiffe://" + td + NodesPath + strings.Join(parts, "/"), true
}

// ParentSelector is the inverse of SelectorParent.
func ParentSelector(td, parentID string) (string, bool) {
	rest, ok := strings.CutPrefix(parentID, "spiffe://"+td+NodesPath)
	if !ok {
		return "", false
	}
	sel := strings.ReplaceAll(rest, "/", ":")
	if p, ok := SelectorParent(td, sel); !ok || p != parentID {
		return "", false
	}
	return sel, true
}

// Error codes in ErrorDocument.Code that an agent acts on.
const (
	// CodeEvicted: the agent was evicted; it must stop serving and forget
	// its cache.
	CodeEvicted = "evicted"
	// CodeUnauthenticated: no usable credential; an agent re-attests.
	CodeUnauthenticated = "unauthenticated"
	// CodeNotParent: the entry is not this agent's (or no longer exists).
	CodeNotParent = "not_parent"
	// CodeBadRequest: the request is malformed; retrying will not help.
	CodeBadRequest = "bad_request"
	// CodeUnavailable: the server cannot answer now (sealed, storage or
	// log down); retry later.
	CodeUnavailable = "unavailable"
)

// ErrorDocument is every error answer: the Vault-shaped errors list and a
// code from the Code* constants.
type ErrorDocument struct {
	Errors []string `json:"errors"`
	Code   string   `json:"code"`
}

// AttestRequest is the body of PathAttest. With a join token, JoinToken is
// set; NodeID names the node when the token does not. With x509pop both
// are empty and the node certificate is the TLS client certificate.
type AttestRequest struct {
	JoinToken string `json:"join_token,omitempty"`
	NodeID    string `json:"node_id,omitempty"`
	// CSR is the DER certificate request for the agent SVID; its key stays
	// on the node.
	CSR []byte `json:"csr"`
}

// SVIDResponse answers PathAttest and PathRenew: the agent SVID and what
// to trust.
type SVIDResponse struct {
	NodeID   string `json:"node_id"`
	SPIFFEID string `json:"spiffe_id"`
	// Chain is the leaf, then the intermediates, in DER.
	Chain [][]byte `json:"chain"`
	// Roots are the trust domain's X.509 roots, in DER.
	Roots [][]byte `json:"roots"`
}

// RenewRequest is the body of PathRenew.
type RenewRequest struct {
	CSR []byte `json:"csr"`
}

// SignRequest is the body of PathSign: certificate requests for
// registration entries parented to the calling agent.
type SignRequest struct {
	Requests []CSRForEntry `json:"requests"`
}

// CSRForEntry asks for an X.509-SVID of one entry. The identity, DNS
// names and lifetime come from the entry; only the key comes from CSR.
type CSRForEntry struct {
	EntryID string `json:"entry_id"`
	CSR     []byte `json:"csr"`
}

// MaxSignRequests bounds the requests of one SignRequest.
const MaxSignRequests = 256

// SignResponse answers PathSign, one SVID per request, in order.
type SignResponse struct {
	SVIDs []SignedSVID `json:"svids"`
}

// SignedSVID is an issued X.509-SVID: leaf then intermediates, in DER.
type SignedSVID struct {
	EntryID string   `json:"entry_id"`
	Chain   [][]byte `json:"chain"`
}

// JWTRequest is the body of PathJWT.
type JWTRequest struct {
	EntryID  string   `json:"entry_id"`
	Audience []string `json:"audience"`
}

// JWTResponse answers PathJWT.
type JWTResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Entry is a registration entry on the wire.
type Entry struct {
	ID        string   `json:"id"`
	SPIFFEID  string   `json:"spiffe_id"`
	ParentID  string   `json:"parent_id"`
	Selectors []string `json:"selectors"`
	// X509SVIDTTL and JWTSVIDTTL are in nanoseconds.
	X509SVIDTTL int64     `json:"x509_svid_ttl"`
	JWTSVIDTTL  int64     `json:"jwt_svid_ttl"`
	DNSNames    []string  `json:"dns_names,omitempty"`
	Hint        string    `json:"hint,omitempty"`
	UpdatedAt   time.Time `json:"updated_at"`
	Revision    int64     `json:"revision"`
}

// FromEntry converts an entry to its wire form.
func FromEntry(e entry.Entry) Entry {
	return Entry{
		ID: e.ID, SPIFFEID: e.SPIFFEID, ParentID: e.ParentID, Selectors: e.Selectors,
		X509SVIDTTL: int64(e.X509SVIDTTL), JWTSVIDTTL: int64(e.JWTSVIDTTL),
		DNSNames: e.DNSNames, Hint: e.Hint, UpdatedAt: e.UpdatedAt, Revision: e.Revision,
	}
}

// Entry converts the wire form back.
func (w Entry) Entry() entry.Entry {
	return entry.Entry{
		ID: w.ID, SPIFFEID: w.SPIFFEID, ParentID: w.ParentID, Selectors: w.Selectors,
		X509SVIDTTL: time.Duration(w.X509SVIDTTL), JWTSVIDTTL: time.Duration(w.JWTSVIDTTL),
		DNSNames: w.DNSNames, Hint: w.Hint, UpdatedAt: w.UpdatedAt, Revision: w.Revision,
	}
}

// Kinds of SyncMessage.
const (
	// KindFull replaces the agent's whole entry set with Upserts; it is
	// the first message of every stream.
	KindFull = "full"
	// KindDelta adds or replaces Upserts and removes Deleted.
	KindDelta = "delta"
	// KindReconcile changes nothing; the agent compares Digest with its
	// own and reconnects for a full set when they differ.
	KindReconcile = "reconcile"
	// KindTrust carries a new Trust.
	KindTrust = "trust"
	// KindEvicted ends the stream: the agent has been evicted.
	KindEvicted = "evicted"
)

// SyncMessage is one line of the sync stream.
type SyncMessage struct {
	Kind    string   `json:"kind"`
	Upserts []Entry  `json:"upserts,omitempty"`
	Deleted []string `json:"deleted,omitempty"`
	// Digest is the digest of the agent's whole entry set once this
	// message is applied (Digest of the entries); empty on KindTrust and
	// KindEvicted.
	Digest string `json:"digest,omitempty"`
	// Trust is set on KindTrust, and on KindFull.
	Trust *Trust `json:"trust,omitempty"`
	// Parents, on KindFull only, are the ParentIDs whose entries the
	// agent receives: its own SPIFFE ID and its node selector parents.
	Parents []string `json:"parents,omitempty"`
}

// Trust is what workloads trust: the X.509 roots (DER), the JWT keys (a
// JWKS document as go-spiffe's jwtbundle marshals it) and the name of the
// intermediate that signs now.
type Trust struct {
	X509Roots  [][]byte        `json:"x509_roots"`
	JWTBundle  json.RawMessage `json:"jwt_bundle"`
	X509Signer string          `json:"x509_signer"`
}

// MaxLine bounds one line of the sync stream.
const MaxLine = 16 << 20

// ErrMalformed is wrapped by every decoding error of the stream.
var ErrMalformed = errors.New("agentapi: malformed sync message")

// Encoder writes sync messages, one JSON object per line.
type Encoder struct {
	w io.Writer
}

// NewEncoder returns an Encoder writing to w.
func NewEncoder(w io.Writer) *Encoder { return &Encoder{w: w} }

// Encode writes m and a newline in one Write.
func (e *Encoder) Encode(m *SyncMessage) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding sync message: %w", err)
	}
	if len(b) >= MaxLine {
		return fmt.Errorf("encoding sync message: %d bytes, at most %d", len(b), MaxLine-1)
	}
	if _, err := e.w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("writing sync message: %w", err)
	}
	return nil
}

// Decoder reads sync messages from an untrusted stream.
type Decoder struct {
	r *bufio.Reader
}

// NewDecoder returns a Decoder reading from r.
func NewDecoder(r io.Reader) *Decoder { return &Decoder{r: bufio.NewReaderSize(r, 64<<10)} }

// Decode reads the next message. It returns io.EOF at a clean end, and an
// error wrapping ErrMalformed for a line that is too long, is not one JSON
// object of known fields, has an unknown kind, or carries fields its kind
// does not allow.
func (d *Decoder) Decode() (*SyncMessage, error) {
	line, err := d.readLine()
	if err != nil {
		return nil, err
	}
	return ParseMessage(line)
}

func (d *Decoder) readLine() ([]byte, error) {
	var line []byte
	for {
		chunk, err := d.r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxLine {
			return nil, fmt.Errorf("%w: line longer than %d bytes", ErrMalformed, MaxLine)
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, fmt.Errorf("%w: stream ended inside a message", ErrMalformed)
		default:
			return nil, err
		}
	}
}

// ParseMessage decodes one line (with or without its newline).
func ParseMessage(line []byte) (*SyncMessage, error) {
	dec := json.NewDecoder(strings.NewReader(string(line)))
	dec.DisallowUnknownFields()
	var m SyncMessage
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: more than one value on a line", ErrMalformed)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return &m, nil
}

// check enforces what each kind may carry.
func (m *SyncMessage) check() error {
	hasEntries := len(m.Upserts) > 0 || len(m.Deleted) > 0
	switch m.Kind {
	case KindFull:
		if len(m.Deleted) > 0 || m.Trust == nil || m.Digest == "" || len(m.Parents) == 0 {
			return errors.New("full: needs trust, parents and digest, and no deletions")
		}
	case KindDelta:
		if !hasEntries || m.Digest == "" || m.Trust != nil {
			return errors.New("delta: needs changes and a digest, and no trust")
		}
	case KindReconcile:
		if hasEntries || m.Digest == "" || m.Trust != nil {
			return errors.New("reconcile: carries only a digest")
		}
	case KindTrust:
		if hasEntries || m.Trust == nil || m.Digest != "" {
			return errors.New("trust: carries only trust")
		}
	case KindEvicted:
		if hasEntries || m.Trust != nil || m.Digest != "" {
			return errors.New("evicted: carries nothing")
		}
	default:
		return fmt.Errorf("unknown kind %q", m.Kind)
	}
	if m.Kind != KindFull && len(m.Parents) > 0 {
		return errors.New("only a full set carries parents")
	}
	if m.Trust != nil {
		if err := m.Trust.check(); err != nil {
			return err
		}
	}
	seen := make(map[string]bool, len(m.Upserts)+len(m.Deleted))
	for i, e := range m.Upserts {
		if e.ID == "" || e.SPIFFEID == "" || e.Revision < 1 {
			return fmt.Errorf("upserts[%d]: id, spiffe_id and a positive revision are required", i)
		}
		if seen[e.ID] {
			return fmt.Errorf("upserts[%d]: entry %s appears twice", i, e.ID)
		}
		seen[e.ID] = true
	}
	for i, id := range m.Deleted {
		if id == "" || seen[id] {
			return fmt.Errorf("deleted[%d]: empty or repeated entry ID %q", i, id)
		}
		seen[id] = true
	}
	return nil
}

// check requires at least one root and a JWT bundle that is a JSON
// object, which it compacts, so that a Trust has one spelling.
func (t *Trust) check() error {
	if len(t.X509Roots) == 0 {
		return errors.New("trust: no X.509 root")
	}
	if len(t.JWTBundle) == 0 || t.JWTBundle[0] != '{' {
		return errors.New("trust: the JWT bundle is not a JSON object")
	}
	var b bytes.Buffer
	if err := json.Compact(&b, t.JWTBundle); err != nil {
		return fmt.Errorf("trust: JWT bundle: %v", err)
	}
	t.JWTBundle = b.Bytes()
	return nil
}

// Digest returns the digest of an entry set: the hex SHA-256, over the
// entries in ID order, of each ID's length (4 bytes, big-endian), the ID
// and the revision (8 bytes, big-endian). Both ends compute it; equal
// digests mean the agent holds every entry at the server's revision.
func Digest(revisions map[string]int64) string {
	ids := make([]string, 0, len(revisions))
	for id := range revisions {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	h := sha256.New()
	var buf []byte
	for _, id := range ids {
		buf = binary.BigEndian.AppendUint32(buf[:0], uint32(len(id)))
		buf = append(buf, id...)
		buf = binary.BigEndian.AppendUint64(buf, uint64(revisions[id]))
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil))
}
