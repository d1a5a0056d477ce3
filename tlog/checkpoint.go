package tlog

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// ErrMalformedCheckpoint is returned for checkpoint text that is not a
// canonical C2SP checkpoint body.
var ErrMalformedCheckpoint = errors.New("tlog: malformed checkpoint")

// Checkpoint is the body of a C2SP signed-note checkpoint: the log's
// origin, its size and the RFC 6962 root hash of the tree of that size.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   [32]byte
}

// String returns the checkpoint body: "<origin>\n<size>\n<base64 root>\n".
func (c Checkpoint) String() string {
	return c.Origin + "\n" + strconv.FormatInt(c.Size, 10) + "\n" + base64.StdEncoding.EncodeToString(c.Root[:]) + "\n"
}

// GenerateKey returns a new Ed25519 note signer key and its verifier key,
// both named origin, in the golang.org/x/mod/sumdb/note text forms.
// The signer key is a secret.
func GenerateKey(origin string) (skey, vkey string, err error) {
	skey, vkey, err = note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return "", "", fmt.Errorf("generating log key for %q: %w", origin, err)
	}
	return skey, vkey, nil
}

// ParseCheckpoint parses a checkpoint body, strictly: exactly three lines,
// each ending in a newline, a non-empty origin, a canonical decimal size
// and the standard base64 of exactly 32 bytes. Extension lines are not
// accepted: Sigil writes none.
func ParseCheckpoint(text []byte) (Checkpoint, error) {
	c, err := parseCheckpoint(string(text))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("parsing checkpoint: %w", err)
	}
	return c, nil
}

func parseCheckpoint(s string) (Checkpoint, error) {
	if !strings.HasSuffix(s, "\n") {
		return Checkpoint{}, fmt.Errorf("no final newline: %w", ErrMalformedCheckpoint)
	}
	lines := strings.Split(s[:len(s)-1], "\n")
	if len(lines) != 3 {
		return Checkpoint{}, fmt.Errorf("%d lines, want 3: %w", len(lines), ErrMalformedCheckpoint)
	}
	var c Checkpoint
	c.Origin = lines[0]
	if c.Origin == "" || strings.ContainsAny(c.Origin, "\x00\r") {
		return Checkpoint{}, fmt.Errorf("bad origin line: %w", ErrMalformedCheckpoint)
	}
	size, err := parseDecimal(lines[1], 1<<63-1)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("size %q is not a canonical decimal: %w", lines[1], ErrMalformedCheckpoint)
	}
	c.Size = size
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != 32 || base64.StdEncoding.EncodeToString(root) != lines[2] {
		return Checkpoint{}, fmt.Errorf("root is not the base64 of 32 bytes: %w", ErrMalformedCheckpoint)
	}
	copy(c.Root[:], root)
	return c, nil
}

// VerifyCheckpoint opens a signed note with verifier and parses its body.
// The note must carry a valid signature by verifier, and the checkpoint's
// origin must be the verifier's name.
func VerifyCheckpoint(noteText []byte, verifier note.Verifier) (Checkpoint, error) {
	n, err := note.Open(noteText, note.VerifierList(verifier))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("verifying checkpoint signature: %w", err)
	}
	c, err := ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Origin != verifier.Name() {
		return Checkpoint{}, fmt.Errorf("verifying checkpoint: origin %q is not the verifier's name %q: %w", c.Origin, verifier.Name(), ErrMalformedCheckpoint)
	}
	return c, nil
}

// signCheckpoint returns the signed note text of c.
func signCheckpoint(c Checkpoint, signer note.Signer) ([]byte, error) {
	msg, err := note.Sign(&note.Note{Text: c.String()}, signer)
	if err != nil {
		return nil, fmt.Errorf("signing checkpoint at size %d: %w", c.Size, err)
	}
	return msg, nil
}
