package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// clientFlags locate the server as Vault's CLI does: flags first, then
// SIGIL_ADDR, SIGIL_CACERT, SIGIL_CLIENT_CERT, SIGIL_CLIENT_KEY,
// SIGIL_SKIP_VERIFY.
type clientFlags struct {
	addr, caCert, clientCert, clientKey string
	skipVerify                          bool
}

func (f *clientFlags) register(cmd *cobra.Command) { f.registerOn(cmd, true) }

// registerLocal adds the flags to cmd alone, for a command whose parent
// has flags of its own.
func (f *clientFlags) registerLocal(cmd *cobra.Command) { f.registerOn(cmd, false) }

func (f *clientFlags) registerOn(cmd *cobra.Command, persistent bool) {
	fl := cmd.Flags()
	if persistent {
		fl = cmd.PersistentFlags()
	}
	fl.StringVar(&f.addr, "address", "", "server URL (env SIGIL_ADDR, default https://127.0.0.1:8443)")
	fl.StringVar(&f.caCert, "ca-cert", "", "PEM file of the CA that signed the server's certificate (env SIGIL_CACERT)")
	fl.StringVar(&f.clientCert, "client-cert", "", "PEM client certificate and chain (env SIGIL_CLIENT_CERT)")
	fl.StringVar(&f.clientKey, "client-key", "", "PEM client private key (env SIGIL_CLIENT_KEY)")
	fl.BoolVar(&f.skipVerify, "tls-skip-verify", false, "do not verify the server's certificate (env SIGIL_SKIP_VERIFY); for a sealed server whose certificate expired")
}

func envOr(flag, env, def string) string {
	if flag != "" {
		return flag
	}
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

type client struct {
	addr string
	http *http.Client
}

func (f *clientFlags) client() (*client, error) {
	addr := strings.TrimRight(envOr(f.addr, "SIGIL_ADDR", "https://127.0.0.1:8443"), "/")
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.skipVerify || os.Getenv("SIGIL_SKIP_VERIFY") == "true" || os.Getenv("SIGIL_SKIP_VERIFY") == "1" {
		tc.InsecureSkipVerify = true
	}
	if p := envOr(f.caCert, "SIGIL_CACERT", ""); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s holds no PEM certificate", p)
		}
		tc.RootCAs = pool
	}
	certPath, keyPath := envOr(f.clientCert, "SIGIL_CLIENT_CERT", ""), envOr(f.clientKey, "SIGIL_CLIENT_KEY", "")
	if certPath != "" || keyPath != "" {
		if certPath == "" || keyPath == "" {
			return nil, errors.New("a client certificate needs both --client-cert and --client-key (SIGIL_CLIENT_CERT, SIGIL_CLIENT_KEY)")
		}
		c, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return &client{addr: addr, http: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true},
	}}, nil
}

// exchange sends in as JSON (when not nil) and returns the answer's status
// and body (at most 16 MiB); err is set only when no answer came.
func (c *client) exchange(ctx context.Context, method, path string, in any) (int, []byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.addr+path, body)
	if err != nil {
		return 0, nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ua := (x509.UnknownAuthorityError{}); errors.As(err, &ua) {
			return 0, nil, fmt.Errorf("contacting %s: %w (give the server's CA with --ca-cert or SIGIL_CACERT)", c.addr, err)
		}
		return 0, nil, fmt.Errorf("contacting %s: %w", c.addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("reading answer from %s: %w", c.addr, err)
	}
	return resp.StatusCode, b, nil
}

// errorMessages returns the messages of a {"errors":[...]} body.
func errorMessages(b []byte) []string {
	var e struct {
		Errors []string `json:"errors"`
	}
	json.Unmarshal(b, &e)
	return e.Errors
}

// do sends in as JSON (when not nil) and decodes a 2xx JSON answer into out.
// A non-2xx answer becomes an error carrying the server's messages.
func (c *client) do(ctx context.Context, method, path string, in, out any) error {
	status, b, err := c.exchange(ctx, method, path, in)
	if err != nil {
		return err
	}
	if status/100 != 2 {
		if msgs := errorMessages(b); len(msgs) > 0 {
			return fmt.Errorf("%s (HTTP %d)", strings.Join(msgs, "; "), status)
		}
		return fmt.Errorf("server answered HTTP %d", status)
	}
	if out == nil || len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decoding answer from %s: %w", c.addr, err)
	}
	return nil
}

// raw GETs path and returns the body of a 2xx answer.
func (c *client) raw(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.addr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("contacting %s: %w", c.addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s: HTTP %d: %s", path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// do makes a client from the flags and sends one request with it, as
// client.do does.
func (f *clientFlags) do(ctx context.Context, method, path string, in, out any) error {
	c, err := f.client()
	if err != nil {
		return err
	}
	return c.do(ctx, method, path, in, out)
}
