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

// attestTimeout bounds the attestation of one connection.
const attestTimeout = 10 * time.Second

// authType names the AuthInfo produced by attestingCreds.
const authType = "sigil-workload-attestation"

// attestedInfo is the peer AuthInfo of a Workload API connection: the
// selectors attestation found, or why it failed.
type attestedInfo struct {
	credentials.CommonAuthInfo
	selectors []string
	err       error
}

// AuthType implements credentials.AuthInfo.
func (attestedInfo) AuthType() string { return authType }

// attestingCreds are transport credentials that add no encryption (the
// socket is local) but attest the peer of every accepted connection during
// the handshake, while the *net.UnixConn is still at hand.
type attestingCreds struct {
	ctx      context.Context
	attestor Attestor
}

// ServerHandshake attests the peer of rawConn. A failed attestation does
// not fail the handshake: it is recorded in the AuthInfo so that every RPC
// on the connection gets a clear status instead of a dropped connection.
func (c *attestingCreds) ServerHandshake(rawConn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	info := attestedInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}
	uc, ok := rawConn.(*net.UnixConn)
	if !ok {
		info.err = fmt.Errorf("attesting workload: connection is a %T, not a Unix socket", rawConn)
		return rawConn, info, nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, attestTimeout)
	defer cancel()
	sels, err := c.attestor.Attest(ctx, uc)
	if err != nil {
		info.err = fmt.Errorf("attesting workload: %w", err)
		return rawConn, info, nil
	}
	info.selectors = selectorStrings(sels)
	return rawConn, info, nil
}

// ClientHandshake is not used: these credentials are for the server only.
func (c *attestingCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("workload: attesting credentials are server-side only")
}

// Info implements credentials.TransportCredentials.
func (c *attestingCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: authType}
}

// Clone implements credentials.TransportCredentials.
func (c *attestingCreds) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}

// OverrideServerName implements credentials.TransportCredentials; it is
// deprecated upstream and meaningless here.
func (c *attestingCreds) OverrideServerName(string) error { return nil }

func selectorStrings(sels []attest.Selector) []string {
	out := make([]string, len(sels))
	for i, s := range sels {
		out[i] = s.String()
	}
	return out
}

// callerSelectors returns the selectors attested for the connection that
// carries ctx's RPC.
func callerSelectors(ctx context.Context) ([]string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, errors.New("attesting workload: no peer in the request context")
	}
	info, ok := p.AuthInfo.(attestedInfo)
	if !ok {
		return nil, fmt.Errorf("attesting workload: peer auth info is %T", p.AuthInfo)
	}
	if info.err != nil {
		return nil, info.err
	}
	return info.selectors, nil
}
