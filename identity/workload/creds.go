package workload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/sigil-pki/sigil/identity/attest"
)

// attestTimeout bounds the attestation of one request's caller.
const attestTimeout = 10 * time.Second

// authType names the AuthInfo produced by unixCreds.
const authType = "sigil-workload-unix"

// unixPeer is the peer AuthInfo of a Workload API connection: the Unix
// connection itself, so that each request can attest its caller.
type unixPeer struct {
	credentials.CommonAuthInfo
	conn *net.UnixConn
}

// AuthType implements credentials.AuthInfo.
func (unixPeer) AuthType() string { return authType }

// unixCreds are transport credentials that add no encryption (the socket
// is local) and keep the *net.UnixConn of every accepted connection in its
// AuthInfo, where the kernel's record of the peer can be read.
type unixCreds struct{}

// ServerHandshake records rawConn; a connection that is not a Unix socket
// is recorded as nil and every request on it is refused.
func (unixCreds) ServerHandshake(rawConn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, _ := rawConn.(*net.UnixConn)
	return rawConn, unixPeer{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, conn: uc}, nil
}

// ClientHandshake is not used: these credentials are for the server only.
func (unixCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("workload: Unix peer credentials are server-side only")
}

// Info implements credentials.TransportCredentials.
func (unixCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: authType}
}

// Clone implements credentials.TransportCredentials.
func (unixCreds) Clone() credentials.TransportCredentials { return unixCreds{} }

// OverrideServerName implements credentials.TransportCredentials; it is
// deprecated upstream and meaningless here.
func (unixCreds) OverrideServerName(string) error { return nil }

func selectorStrings(sels []attest.Selector) []string {
	out := make([]string, len(sels))
	for i, s := range sels {
		out[i] = s.String()
	}
	return out
}

// callerSelectors attests the process at the other end of the connection
// that carries ctx's request, now: a process that called execve(2) since
// it connected is attested as what it runs now.
func (s *Server) callerSelectors(ctx context.Context) ([]string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, errors.New("attesting workload: no peer in the request context")
	}
	info, ok := p.AuthInfo.(unixPeer)
	if !ok || info.conn == nil {
		return nil, fmt.Errorf("attesting workload: the connection is not a Unix socket (%T)", p.AuthInfo)
	}
	ctx, cancel := context.WithTimeout(ctx, attestTimeout)
	defer cancel()
	sels, err := s.attestor.Attest(ctx, info.conn)
	if err != nil {
		return nil, fmt.Errorf("attesting workload: %w", err)
	}
	return selectorStrings(sels), nil
}
