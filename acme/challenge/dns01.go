package challenge

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
)

// DNS01 validates a dns-01 challenge (RFC 8555 §8.4): one of the TXT records
// at _acme-challenge.<name> (a wildcard's "*." removed) must be the
// unpadded base64url SHA-256 digest of keyAuthorization, exactly. A record
// made of several strings counts as their concatenation. IP identifiers
// cannot use dns-01 (RFC 8738 §7). It returns nil when the challenge is met.
func (v *Validator) DNS01(ctx context.Context, id Identifier, keyAuthorization string) *Problem {
	if id.Type == "ip" {
		return problemf(ProblemUnsupportedIdentifier, nil, "dns-01 cannot validate IP identifiers (RFC 8738 §7)")
	}
	t, p := v.parseIdentifier(id, true)
	if p != nil {
		return p
	}
	ctx, cancel := v.withTimeout(ctx)
	defer cancel()

	name := "_acme-challenge." + t.host
	txts, err := v.lookupTXT(ctx, name)
	if err != nil {
		return v.problem(ctx, "looking up TXT for "+name, err)
	}
	if len(txts) == 0 {
		return problemf(ProblemUnauthorized, nil, "no TXT record found at %s", name)
	}
	want := DNS01Digest(keyAuthorization)
	for _, txt := range txts {
		if txt == want {
			return nil
		}
	}
	return problemf(ProblemIncorrectResponse, nil, "none of the %d TXT records at %s is the key authorization's digest", len(txts), name)
}

// DNS01Digest is the TXT value that meets a dns-01 challenge for
// keyAuthorization: base64url(SHA-256(keyAuthorization)), unpadded.
func DNS01Digest(keyAuthorization string) string {
	sum := sha256.Sum256([]byte(keyAuthorization))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
