package server

import (
	"fmt"
	"net"

	"github.com/sigil-pki/sigil/identity/attest"
	"github.com/sigil-pki/sigil/identity/workload"
)

// listenWorkload binds the Workload API's Unix socket.
func (s *Server) listenWorkload() (*net.UnixListener, error) {
	l, err := workload.Listen(s.cfg.Listen.WorkloadSocket)
	if err != nil {
		return nil, fmt.Errorf("listen.workload_socket: %w", err)
	}
	return l, nil
}

// workloadAPI builds the Workload API over this server's entries, CA and
// JWT keys.
func (s *Server) workloadAPI() *workload.Server {
	return workload.New(workload.Config{
		TrustDomain: s.cfg.TrustDomain,
		Attestor:    attest.New(attest.Config{Logger: s.log}),
		Entries:     workloadEntries{s},
		Authority:   workloadAuthority{s},
		Updates:     &s.ids.updates,
		RotateAt:    s.cfg.WorkloadAPI.RotateAt,
		Clock:       s.clock,
		Logger:      s.log,
	})
}
