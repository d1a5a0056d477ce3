package server

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"io/fs"
	"net"
	"os"
	"time"

	"github.com/sigil-pki/sigil/ca"
	"github.com/sigil-pki/sigil/identity/attest"
	"github.com/sigil-pki/sigil/identity/entry"
	"github.com/sigil-pki/sigil/identity/workload"
	"github.com/sigil-pki/sigil/storage"
)

// listenWorkload binds the Workload API's Unix socket, replacing a stale
// socket file left by a previous run. Any local process may connect: the
// attested selectors decide what it gets.
func (s *Server) listenWorkload() (*net.UnixListener, error) {
	path := s.cfg.Listen.WorkloadSocket
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("listen.workload_socket %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale workload socket: %w", err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen.workload_socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o777); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen.workload_socket %s: %w", path, err)
	}
	return l, nil
}

// workloadAPI builds the Workload API over this server's entries and CA.
func (s *Server) workloadAPI() *workload.Server {
	return workload.New(workload.Config{
		TrustDomain: s.cfg.TrustDomain,
		Attestor:    attest.New(attest.Config{Logger: s.log}),
		Entries:     workloadEntries{s.store},
		Issuer:      workloadIssuer{s},
		Logger:      s.log,
	})
}

// workloadEntries finds the registration entries a workload matches.
type workloadEntries struct{ store storage.Store }

func (w workloadEntries) MatchingEntries(ctx context.Context, selectors []string) ([]entry.Entry, error) {
	var out []entry.Entry
	f := storage.EntryFilter{Limit: 1000}
	for {
		page, err := w.store.ListEntries(ctx, f)
		if err != nil {
			return nil, err
		}
		for _, e := range page {
			if ee := entry.Entry(e); ee.Matches(selectors) {
				out = append(out, ee)
			}
		}
		if len(page) < f.Limit {
			return out, nil
		}
		f.AfterID = page[len(page)-1].ID
	}
}

// workloadIssuer issues SVIDs through the CA, so each is recorded and
// logged before the workload receives it.
type workloadIssuer struct{ s *Server }

func (w workloadIssuer) IssueSVID(ctx context.Context, spiffeID string, dns []string, pub crypto.PublicKey, ttl time.Duration) (*x509.Certificate, []*x509.Certificate, error) {
	auth, err := w.s.Authority()
	if err != nil {
		return nil, nil, err
	}
	iss, err := auth.Issue(context.WithValue(ctx, callerKey{}, spiffeID), ca.Request{
		Profile: ca.ProfileSVID, SPIFFEID: spiffeID, DNSNames: dns, PublicKey: pub, TTL: ttl,
	})
	if err != nil {
		return nil, nil, err
	}
	return iss.Certificate, iss.Chain, nil
}

func (w workloadIssuer) Bundle() []*x509.Certificate {
	auth, err := w.s.Authority()
	if err != nil {
		return nil
	}
	return auth.Roots()
}
