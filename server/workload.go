package server

import (
	"fmt"
	"io/fs"
	"net"
	"os"

	"github.com/sigil-pki/sigil/identity/attest"
	"github.com/sigil-pki/sigil/identity/workload"
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
