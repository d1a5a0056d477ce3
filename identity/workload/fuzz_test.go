package workload

import (
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FuzzValidateJWT feeds arbitrary tokens and audiences to the
// ValidateJWTSVID check. It must never panic; a refusal is InvalidArgument;
// an acceptance names a SPIFFE ID of the trust domain, since the bundle
// holds only its keys.
func FuzzValidateJWT(f *testing.F) {
	ca := newTestCA(f)
	token, _, err := ca.jwt.Mint(f.Context(), "spiffe://example.org/web", []string{"db"}, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	bundle := jwtbundle.FromJWTAuthorities(spiffeid.RequireTrustDomainFromString(testTD), ca.jwt.PublicKeys())
	f.Add(token, "db")
	f.Add(token, "other")
	f.Add(token[:len(token)-2], "db")
	f.Add(strings.Replace(token, ".", "..", 1), "db")
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy93ZWIifQ.", "db")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, tok, aud string) {
		resp, err := validateJWT(bundle, tok, aud)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("refusal with code %v: %v", status.Code(err), err)
			}
			return
		}
		id, err := spiffeid.FromString(resp.SpiffeId)
		if err != nil || id.TrustDomain().Name() != testTD {
			t.Fatalf("accepted a token for %q", resp.SpiffeId)
		}
	})
}
