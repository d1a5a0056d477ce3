package jws

import (
	"errors"
	"fmt"
	"net/http"
)

// ACME error types this package reports (RFC 8555 §6.7), without the
// "urn:ietf:params:acme:error:" prefix.
const (
	TypeMalformed             = "malformed"
	TypeBadNonce              = "badNonce"
	TypeBadSignatureAlgorithm = "badSignatureAlgorithm"
	TypeBadPublicKey          = "badPublicKey"
	TypeAccountDoesNotExist   = "accountDoesNotExist"
	TypeUnauthorized          = "unauthorized"
	TypeServerInternal        = "serverInternal"
)

// ErrNotFound is what the injected lookups return (or wrap) when the
// account or EAB key asked for does not exist.
var ErrNotFound = errors.New("jws: not found")

// Problem is an ACME error for a request that failed authentication.
//
// Type, Detail, Status and Algorithms are safe to send to the client. An
// internal cause (a lookup that failed) is reachable only through Error and
// Unwrap, for the log.
type Problem struct {
	// Type is the ACME error type without its URN prefix, one of the Type
	// constants.
	Type string
	// Detail is human-readable text for the client.
	Detail string
	// Status is the HTTP status to answer with.
	Status int
	// Algorithms lists the acceptable "alg" values; set on
	// badSignatureAlgorithm, where RFC 8555 §6.2 requires it.
	Algorithms []string

	cause error
}

// Error is for logs: it includes the internal cause, which Detail never does.
func (p *Problem) Error() string {
	if p.cause != nil {
		return fmt.Sprintf("%s: %s: %v", p.Type, p.Detail, p.cause)
	}
	return p.Type + ": " + p.Detail
}

// Unwrap returns the internal cause, if any.
func (p *Problem) Unwrap() error { return p.cause }

// One constructor per error type.

func malformed(format string, args ...any) *Problem {
	return &Problem{Type: TypeMalformed, Detail: fmt.Sprintf(format, args...), Status: http.StatusBadRequest}
}

// within prefixes p's detail with what the problem was found in, for
// problems in a nested JWS.
func within(what string, p *Problem) *Problem {
	p.Detail = what + ": " + p.Detail
	return p
}

// signatureInvalid is malformed, as Boulder and Pebble answer; go-jose's
// reason is kept for the log.
func signatureInvalid(what string, cause error) *Problem {
	p := malformed("%s signature invalid", what)
	p.cause = cause
	return p
}

// badNonce is 400 (RFC 8555 §6.5); clients retry it with the fresh nonce
// the HTTP layer puts in the response.
func badNonce(format string, args ...any) *Problem {
	return &Problem{Type: TypeBadNonce, Detail: fmt.Sprintf(format, args...), Status: http.StatusBadRequest}
}

func badSignatureAlgorithm(format string, args ...any) *Problem {
	return &Problem{
		Type:       TypeBadSignatureAlgorithm,
		Detail:     fmt.Sprintf(format, args...),
		Status:     http.StatusBadRequest,
		Algorithms: Algorithms(),
	}
}

func badPublicKey(format string, args ...any) *Problem {
	return &Problem{Type: TypeBadPublicKey, Detail: fmt.Sprintf(format, args...), Status: http.StatusBadRequest}
}

func accountDoesNotExist(format string, args ...any) *Problem {
	return &Problem{Type: TypeAccountDoesNotExist, Detail: fmt.Sprintf(format, args...), Status: http.StatusBadRequest}
}

func unauthorized(format string, args ...any) *Problem {
	return &Problem{Type: TypeUnauthorized, Detail: fmt.Sprintf(format, args...), Status: http.StatusForbidden}
}

// serverInternal hides cause from the client and keeps it for the log.
func serverInternal(cause error) *Problem {
	return &Problem{
		Type:   TypeServerInternal,
		Detail: "the server could not authenticate the request",
		Status: http.StatusInternalServerError,
		cause:  cause,
	}
}
