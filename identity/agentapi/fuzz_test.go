package agentapi_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sigil-pki/sigil/identity/agentapi"
)

// FuzzParseMessage: a line either is refused with ErrMalformed, or parses
// into a message that re-encodes into a line that parses to the same
// message (the server's stream is untrusted input to the agent).
func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{
		`{"kind":"evicted"}`,
		`{"kind":"reconcile","digest":"d"}`,
		`{"kind":"delta","deleted":["e2"],"digest":"d"}`,
		`{"kind":"trust","trust":{"x509_roots":["AQI="],"jwt_bundle":{"keys":[]},"x509_signer":"ab"}}`,
		`{"kind":"full","upserts":[{"id":"e1","spiffe_id":"spiffe://td/w","parent_id":"p","selectors":["unix:uid:1"],"x509_svid_ttl":1,"jwt_svid_ttl":1,"updated_at":"2026-01-01T00:00:00Z","revision":1}],"digest":"d","parents":["p"],"trust":{"x509_roots":["AQI="],"jwt_bundle":{"keys":[]},"x509_signer":""}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := agentapi.ParseMessage(line)
		if err != nil {
			if !errors.Is(err, agentapi.ErrMalformed) {
				t.Fatalf("error not wrapping ErrMalformed: %v", err)
			}
			return
		}
		var buf bytes.Buffer
		if err := agentapi.NewEncoder(&buf).Encode(m); err != nil {
			t.Fatalf("re-encoding an accepted message: %v", err)
		}
		again, err := agentapi.NewDecoder(&buf).Decode()
		if err != nil {
			t.Fatalf("re-encoded message refused: %v\n%s", err, buf.String())
		}
		if diff := cmp.Diff(m, again); diff != "" {
			t.Fatalf("round trip changed the message (-first +second):\n%s", diff)
		}
	})
}
