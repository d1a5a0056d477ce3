package acme

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"time"
)

// Statuses of ACME resources (RFC 8555 §7.1.6).
const (
	statusPending     = "pending"
	statusReady       = "ready"
	statusProcessing  = "processing"
	statusValid       = "valid"
	statusInvalid     = "invalid"
	statusDeactivated = "deactivated"
	statusExpired     = "expired"
	statusRevoked     = "revoked"
)

// ID is an ACME identifier.
type ID struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

func (i ID) key() string { return i.Type + ":" + i.Value }

// account is a stored account.
type account struct {
	Status    string          `json:"status"`
	Contact   []string        `json:"contact,omitempty"`
	Key       json.RawMessage `json:"key"`
	CreatedAt time.Time       `json:"createdAt"`
	// TermsAgreed is recorded when the client agreed.
	TermsAgreed bool `json:"termsOfServiceAgreed,omitempty"`
	// EABKeyID is the external account binding key the account was
	// created with.
	EABKeyID string `json:"eabKeyID,omitempty"`
}

// order is a stored order.
type order struct {
	AccountID   string    `json:"accountID"`
	Status      string    `json:"status"`
	Identifiers []ID      `json:"identifiers"`
	Authzs      []string  `json:"authzs"`
	Expires     time.Time `json:"expires"`
	Error       *Problem  `json:"error,omitempty"`
	CertSerial  string    `json:"certSerial,omitempty"`
	Profile     string    `json:"profile,omitempty"`
	// Replaces is the RFC 9773 identifier of the certificate this order
	// renews.
	Replaces string `json:"replaces,omitempty"`
}

// authz is a stored authorization with its challenges.
type authz struct {
	AccountID  string    `json:"accountID"`
	Identifier ID        `json:"identifier"`
	Status     string    `json:"status"`
	Expires    time.Time `json:"expires"`
	Wildcard   bool      `json:"wildcard,omitempty"`
	Challenges []chall   `json:"challenges"`
}

// challenge is one way to prove control of an authorization's identifier.
type chall struct {
	Type      string    `json:"type"`
	Token     string    `json:"token"`
	Status    string    `json:"status"`
	Validated time.Time `json:"validated,omitzero"`
	Error     *Problem  `json:"error,omitempty"`
}

// newID returns 16 random bytes, base64url: resource IDs and tokens.
func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// newToken returns a challenge token: 32 random bytes, base64url (RFC
// 8555 §8.3 asks for at least 128 bits).
func newToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
