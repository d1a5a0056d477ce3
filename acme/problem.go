package acme

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/sigil-pki/sigil/acme/jws"
)

// The namespace of ACME error types (RFC 8555 §6.7).
const errNS = "urn:ietf:params:acme:error:"

// Problem is an RFC 7807 problem document with an ACME error type.
type Problem struct {
	Type        string    `json:"type"`
	Detail      string    `json:"detail,omitempty"`
	Status      int       `json:"status"`
	Subproblems []Problem `json:"subproblems,omitempty"`
	Identifier  *ID       `json:"identifier,omitempty"`
	Algorithms  []string  `json:"algorithms,omitempty"`
}

func (p *Problem) Error() string { return p.Type + ": " + p.Detail }

func problem(status int, typ, format string, args ...any) *Problem {
	return &Problem{Type: errNS + typ, Detail: fmt.Sprintf(format, args...), Status: status}
}

// One constructor per error type this server answers.
func malformed(format string, args ...any) *Problem {
	return problem(http.StatusBadRequest, "malformed", format, args...)
}
func unauthorized(format string, args ...any) *Problem {
	return problem(http.StatusForbidden, "unauthorized", format, args...)
}
func accountDoesNotExist(format string, args ...any) *Problem {
	return problem(http.StatusBadRequest, "accountDoesNotExist", format, args...)
}
func rejectedIdentifier(format string, args ...any) *Problem {
	return problem(http.StatusBadRequest, "rejectedIdentifier", format, args...)
}
func orderNotReady(format string, args ...any) *Problem {
	return problem(http.StatusForbidden, "orderNotReady", format, args...)
}
func badCSR(format string, args ...any) *Problem {
	return problem(http.StatusBadRequest, "badCSR", format, args...)
}
func notFound(what string) *Problem {
	return &Problem{Type: errNS + "malformed", Detail: what + " not found", Status: http.StatusNotFound}
}
func serverInternal() *Problem {
	return problem(http.StatusInternalServerError, "serverInternal", "the server could not complete the request")
}
func badRevocationReason(format string, args ...any) *Problem {
	return problem(http.StatusBadRequest, "badRevocationReason", format, args...)
}
func alreadyRevoked() *Problem {
	return problem(http.StatusBadRequest, "alreadyRevoked", "the certificate is already revoked")
}
func unsupportedIdentifier(format string, args ...any) *Problem {
	return problem(http.StatusBadRequest, "unsupportedIdentifier", format, args...)
}

// asProblem turns any error into the problem to answer: a *Problem or a
// jws problem as is, anything else serverInternal (its text is logged by
// the caller, not sent).
func asProblem(err error) (*Problem, bool) {
	var p *Problem
	if errors.As(err, &p) {
		return p, true
	}
	var jp *jws.Problem
	if errors.As(err, &jp) {
		return &Problem{Type: errNS + jp.Type, Detail: jp.Detail, Status: jp.Status, Algorithms: jp.Algorithms}, true
	}
	return serverInternal(), false
}

func writeProblem(w http.ResponseWriter, p *Problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	json.NewEncoder(w).Encode(p)
}
