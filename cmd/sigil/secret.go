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
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// maxSecretInput bounds what put reads from stdin or one file; the server
// refuses request bodies over 1 MiB anyway.
const maxSecretInput = 1 << 20

func secretCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Read and write secrets (KV version 2) as a workload, with an X.509-SVID",
		Long: `Read and write secrets in the secret store's KV version 2 mounts, as a
workload: the server identifies the caller by the X.509-SVID it presents and
decides with the access policies ('sigil policy').

PATH starts with the mount: secret/team-a/db is the secret team-a/db of the
mount "secret", as for 'vault kv get secret/team-a/db'.

The SVID presented is, first match wins:
  1. --socket: the Workload API's X.509-SVID (kept current while the command runs);
  2. --cert and --key: PEM files (from 'sigil workload x509 --write DIR', say);
  3. $SPIFFE_ENDPOINT_SOCKET: as --socket;
  4. $SIGIL_CLIENT_CERT and $SIGIL_CLIENT_KEY: as --cert and --key.
--socket with --cert/--key is refused.

The server's certificate is checked against --ca-cert ($SIGIL_CACERT) when
given, else (with the Workload API) against the trust domain's X.509
bundle, else against the system's roots.

Values are printed to stdout only, and only by 'get'.`,
	}
	var sf secretFlags
	sf.register(cmd)
	cmd.AddCommand(secretPutCmd(&sf), secretGetCmd(&sf), secretListCmd(&sf), secretDeleteCmd(&sf),
		secretVersionsCmd(&sf, "undelete", "Restore soft-deleted versions"),
		secretVersionsCmd(&sf, "destroy", "Destroy versions: their data is gone for good, the version numbers stay"),
		secretHistoryCmd(&sf), secretMetadataCmd(&sf))
	return cmd
}

// secretFlags locate the server and the SVID to present.
type secretFlags struct {
	addr, caCert, socket, spiffeID, cert, key string
	skipVerify                                bool
}

func (f *secretFlags) register(cmd *cobra.Command) {
	fl := cmd.PersistentFlags()
	fl.StringVar(&f.addr, "address", "", "server URL (env SIGIL_ADDR, default https://127.0.0.1:8443)")
	fl.StringVar(&f.caCert, "ca-cert", "", "PEM file of the CA that signed the server's certificate (env SIGIL_CACERT; default with the Workload API: the trust domain's bundle)")
	fl.BoolVar(&f.skipVerify, "tls-skip-verify", false, "do not verify the server's certificate (env SIGIL_SKIP_VERIFY)")
	fl.StringVar(&f.socket, "socket", "", "Workload API socket path or unix:// address to get the X.509-SVID from (env SPIFFE_ENDPOINT_SOCKET)")
	fl.StringVar(&f.spiffeID, "spiffe-id", "", "with the Workload API, present the SVID with this SPIFFE ID when there are several (default: the first)")
	fl.StringVar(&f.cert, "cert", "", "PEM X.509-SVID and chain to present (env SIGIL_CLIENT_CERT)")
	fl.StringVar(&f.key, "key", "", "PEM private key of --cert (env SIGIL_CLIENT_KEY)")
}

// secretClient is a client of the secrets API and the identity it
// presents.
type secretClient struct {
	*client
	// id is the SPIFFE ID presented, for messages; empty if unknown.
	id    string
	close func()
}

// connect picks the SVID as secretCmd's help describes and returns a
// client presenting it. The caller must call close.
func (f *secretFlags) connect(ctx context.Context) (*secretClient, error) {
	if f.socket != "" && (f.cert != "" || f.key != "") {
		return nil, errors.New("--socket and --cert/--key each name an identity to present; give one")
	}
	socket := f.socket
	if socket == "" && f.cert == "" && f.key == "" {
		socket = os.Getenv("SPIFFE_ENDPOINT_SOCKET")
	}
	if socket != "" {
		return f.viaWorkloadAPI(ctx, socket)
	}
	certPath, keyPath := envOr(f.cert, "SIGIL_CLIENT_CERT", ""), envOr(f.key, "SIGIL_CLIENT_KEY", "")
	if certPath == "" && keyPath == "" {
		return nil, errors.New("no X.509-SVID to present: pass --socket (or set SPIFFE_ENDPOINT_SOCKET), or --cert and --key")
	}
	if certPath == "" || keyPath == "" {
		return nil, errors.New("an SVID from files needs both --cert and --key (SIGIL_CLIENT_CERT, SIGIL_CLIENT_KEY)")
	}
	cf := clientFlags{addr: f.addr, caCert: f.caCert, clientCert: certPath, clientKey: keyPath, skipVerify: f.skipVerify}
	c, err := cf.client()
	if err != nil {
		return nil, err
	}
	sc := &secretClient{client: c, close: func() {}}
	if b, err := os.ReadFile(certPath); err == nil {
		if leaf, err := firstCert(b); err == nil {
			if id, err := x509svid.IDFromCert(leaf); err == nil {
				sc.id = id.String()
			}
		}
	}
	return sc, nil
}

// viaWorkloadAPI fetches the X.509-SVIDs once, so that a workload without
// an identity fails at once with the server's reason, then keeps an
// X509Source so that the SVID presented is always the current one.
func (f *secretFlags) viaWorkloadAPI(ctx context.Context, addr string) (*secretClient, error) {
	if !strings.Contains(addr, "://") {
		addr = "unix://" + addr
	}
	ctx, cancel := context.WithTimeout(ctx, workloadTimeout)
	defer cancel()
	wc, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return nil, fmt.Errorf("connecting to the Workload API at %s: %w", addr, err)
	}
	xc, err := wc.FetchX509Context(ctx)
	if err != nil {
		wc.Close()
		return nil, fmt.Errorf("fetching an X.509-SVID from %s: %w", addr, err)
	}
	var want spiffeid.ID
	if f.spiffeID != "" {
		if want, err = spiffeid.FromString(f.spiffeID); err != nil {
			wc.Close()
			return nil, fmt.Errorf("--spiffe-id: %w", err)
		}
		if !slices.ContainsFunc(xc.SVIDs, func(s *x509svid.SVID) bool { return s.ID == want }) {
			wc.Close()
			return nil, fmt.Errorf("the Workload API has no SVID for %s for this process (it has %s)", want, svidIDs(xc.SVIDs))
		}
	}
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClient(wc),
		workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
			for _, s := range svids {
				if want.IsZero() || s.ID == want {
					return s
				}
			}
			return nil
		}))
	if err != nil {
		wc.Close()
		return nil, fmt.Errorf("watching X.509-SVIDs from %s: %w", addr, err)
	}
	closeAll := func() { src.Close(); wc.Close() }
	svid, err := src.GetX509SVID()
	if err != nil {
		closeAll()
		return nil, err
	}
	tc := &tls.Config{
		MinVersion:           tls.VersionTLS12,
		GetClientCertificate: tlsconfig.GetClientCertificate(src),
		InsecureSkipVerify:   f.skipVerify || os.Getenv("SIGIL_SKIP_VERIFY") == "true" || os.Getenv("SIGIL_SKIP_VERIFY") == "1",
	}
	if p := envOr(f.caCert, "SIGIL_CACERT", ""); p != "" {
		if tc.RootCAs, err = loadPool(p); err != nil {
			closeAll()
			return nil, err
		}
	} else {
		b, err := src.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("no X.509 bundle for %s to check the server with: %w", svid.ID.TrustDomain(), err)
		}
		tc.RootCAs = x509.NewCertPool()
		for _, c := range b.X509Authorities() {
			tc.RootCAs.AddCert(c)
		}
	}
	c := &client{
		addr: strings.TrimRight(envOr(f.addr, "SIGIL_ADDR", "https://127.0.0.1:8443"), "/"),
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}},
	}
	return &secretClient{client: c, id: svid.ID.String(), close: closeAll}, nil
}

func svidIDs(svids []*x509svid.SVID) string {
	if len(svids) == 0 {
		return "none"
	}
	ids := make([]string, len(svids))
	for i, s := range svids {
		ids[i] = s.ID.String()
	}
	return strings.Join(ids, ", ")
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// apiError is a non-2xx answer of the secrets API.
type apiError struct {
	status   int
	messages []string
	body     []byte
	// as is the SPIFFE ID the request was made as, when known.
	as string
}

func (e *apiError) Error() string {
	switch {
	case e.status == http.StatusForbidden && len(e.messages) > 0 && e.messages[0] == "permission denied":
		msg := "permission denied"
		if e.as != "" {
			msg += " for " + e.as
		}
		if len(e.messages) > 1 {
			msg += ": " + strings.Join(e.messages[1:], "; ")
		}
		return msg
	case e.status == http.StatusUnauthorized:
		msg := "the server did not accept the client certificate"
		if len(e.messages) > 0 {
			msg += ": " + strings.Join(e.messages, "; ")
		}
		return msg
	case len(e.messages) > 0:
		return fmt.Sprintf("%s (HTTP %d)", strings.Join(e.messages, "; "), e.status)
	case e.status == http.StatusNotFound:
		return "not found"
	}
	return fmt.Sprintf("server answered HTTP %d", e.status)
}

// notFound reports whether err is a 404 without a message: nothing at
// that path (or a deleted version, whose metadata the body holds).
func notFound(err error) (*apiError, bool) {
	var ae *apiError
	if errors.As(err, &ae) && ae.status == http.StatusNotFound && len(ae.messages) == 0 {
		return ae, true
	}
	return nil, false
}

// call sends in as JSON (when not nil) and decodes a 2xx JSON answer into
// out; any other answer is an *apiError.
func (c *secretClient) call(ctx context.Context, method, path string, in, out any) error {
	status, b, err := c.exchange(ctx, method, path, in)
	if err != nil {
		return err
	}
	if status/100 != 2 {
		return &apiError{status: status, messages: errorMessages(b), body: b, as: c.id}
	}
	if out == nil || len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decoding answer from %s: %w", c.addr, err)
	}
	return nil
}

// withSecrets makes a RunE that connects, runs fn, and disconnects.
func withSecrets(sf *secretFlags, fn func(ctx context.Context, cmd *cobra.Command, c *secretClient, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := sf.connect(cmd.Context())
		if err != nil {
			return err
		}
		defer c.close()
		return fn(cmd.Context(), cmd, c, args)
	}
}

// secretPath is a CLI path split into its mount and the path inside it.
type secretPath struct{ mount, path string }

// parseSecretPath splits mount/path; dir allows the mount alone (for list).
func parseSecretPath(s string, dir bool) (secretPath, error) {
	s = strings.Trim(s, "/")
	mount, rest, _ := strings.Cut(s, "/")
	if mount == "" {
		return secretPath{}, errors.New("a secret path starts with its mount, e.g. secret/team-a/db")
	}
	if rest == "" && !dir {
		return secretPath{}, fmt.Errorf("%q names only a mount; a secret path looks like %s/team-a/db", s, mount)
	}
	if rest != "" {
		for _, seg := range strings.Split(rest, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return secretPath{}, fmt.Errorf("secret path %q has an empty, . or .. segment", s)
			}
		}
	}
	return secretPath{mount: mount, path: rest}, nil
}

func (p secretPath) String() string {
	if p.path == "" {
		return p.mount
	}
	return p.mount + "/" + p.path
}

// url is the API path of operation op (data, metadata, delete, ...).
func (p secretPath) url(op string) string {
	segs := strings.Split(p.path, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return "/v1/" + url.PathEscape(p.mount) + "/" + op + "/" + strings.Join(segs, "/")
}

// versionMeta is a version's metadata in the API's answers.
type versionMeta struct {
	Version        int64             `json:"version"`
	CreatedTime    string            `json:"created_time"`
	DeletionTime   string            `json:"deletion_time"`
	Destroyed      bool              `json:"destroyed"`
	CustomMetadata map[string]string `json:"custom_metadata"`
}

// shortTime shows an API time to the second, "-" for none.
func shortTime(s string) string {
	if s == "" {
		return "-"
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return s
	}
	return t.UTC().Format(time.RFC3339)
}

func secretPutCmd(sf *secretFlags) *cobra.Command {
	var cas int64
	cmd := &cobra.Command{
		Use:   "put PATH key=value|key=@FILE|key=-|- [...]",
		Short: "Write a new version of a secret",
		Long: `Write a new version of the secret at PATH, replacing all its keys.

  key=value   a string value (beware: command lines are visible to other users in ps)
  key=@FILE   the content of FILE, exactly (UTF-8 text)
  key=-       a value read from stdin, one trailing newline removed
  -           a JSON object read from stdin, its keys merged with the others

With --cas N the write happens only if the current version is N (0: only
if the secret does not exist yet).`,
		Args: cobra.MinimumNArgs(2),
		RunE: withSecrets(sf, func(ctx context.Context, cmd *cobra.Command, c *secretClient, args []string) error {
			p, err := parseSecretPath(args[0], false)
			if err != nil {
				return err
			}
			data, err := parseSecretData(cmd.InOrStdin(), args[1:])
			if err != nil {
				return err
			}
			req := map[string]any{"data": data}
			if cmd.Flags().Changed("cas") {
				if cas < 0 {
					return errors.New("--cas is a version number, 0 or more")
				}
				req["options"] = map[string]any{"cas": cas}
			}
			var out struct {
				Data versionMeta `json:"data"`
			}
			if err := c.call(ctx, "POST", p.url("data"), req, &out); err != nil {
				return fmt.Errorf("writing %s: %w", p, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Path     %s\nVersion  %d\nCreated  %s\n", p, out.Data.Version, shortTime(out.Data.CreatedTime))
			return nil
		}),
	}
	cmd.Flags().Int64Var(&cas, "cas", 0, "write only if the current version is this (0: only if absent)")
	return cmd
}

// parseSecretData builds the data of a put from its arguments. Error
// messages name arguments by position and keys by name, never values.
func parseSecretData(stdin io.Reader, args []string) (map[string]json.RawMessage, error) {
	data := map[string]json.RawMessage{}
	stdinUsed := false
	readStdin := func(what string) ([]byte, error) {
		if stdinUsed {
			return nil, errors.New("stdin can be read once: use '-' or one key=- , not both")
		}
		stdinUsed = true
		b, err := io.ReadAll(io.LimitReader(stdin, maxSecretInput+1))
		if err != nil {
			return nil, fmt.Errorf("reading %s from stdin: %w", what, err)
		}
		if len(b) > maxSecretInput {
			return nil, fmt.Errorf("%s on stdin is over %d bytes", what, maxSecretInput)
		}
		return b, nil
	}
	set := func(k string, v json.RawMessage) error {
		if _, dup := data[k]; dup {
			return fmt.Errorf("key %q is given twice", k)
		}
		data[k] = v
		return nil
	}
	for i, a := range args {
		if a == "-" {
			b, err := readStdin("a JSON object")
			if err != nil {
				return nil, err
			}
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(b, &obj); err != nil || obj == nil {
				return nil, errors.New("stdin does not hold a JSON object")
			}
			for k, v := range obj {
				if err := set(k, v); err != nil {
					return nil, err
				}
			}
			continue
		}
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("argument %d is not key=value, key=@FILE, key=- or -", i+2)
		}
		switch {
		case v == "-":
			b, err := readStdin("the value of " + k)
			if err != nil {
				return nil, err
			}
			b = bytes.TrimSuffix(b, []byte("\n"))
			b = bytes.TrimSuffix(b, []byte("\r"))
			v = string(b)
		case strings.HasPrefix(v, "@"):
			name := v[1:]
			b, err := os.ReadFile(name)
			if err != nil {
				return nil, fmt.Errorf("value of %s: %w", k, err)
			}
			if len(b) > maxSecretInput {
				return nil, fmt.Errorf("value of %s: %s is over %d bytes", k, name, maxSecretInput)
			}
			v = string(b)
		}
		if !utf8.ValidString(v) {
			return nil, fmt.Errorf("value of %s is not UTF-8 text; store binary data base64-encoded", k)
		}
		enc, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		if err := set(k, enc); err != nil {
			return nil, err
		}
	}
	return data, nil
}

// valueText is a value as printed: a string as is, anything else as JSON.
func valueText(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	var buf bytes.Buffer
	if json.Compact(&buf, v) == nil {
		return buf.String()
	}
	return string(v)
}

func checkFormat(format string) error {
	if format != "table" && format != "json" {
		return fmt.Errorf("--format is table or json, not %q", format)
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

func secretGetCmd(sf *secretFlags) *cobra.Command {
	var (
		version       int64
		field, format string
	)
	cmd := &cobra.Command{
		Use:   "get PATH [--version N] [--field KEY] [--format table|json]",
		Short: "Print a secret's keys and values (the latest version unless --version)",
		Long: `Print a secret's keys and values and its version's metadata.

--field KEY prints only that value, as is (a string without quotes, other
JSON values as JSON), with no newline added unless stdout is a terminal:
for scripts, e.g. PGPASSWORD=$(sigil secret get secret/team-a/db --field password).`,
		Args: cobra.ExactArgs(1),
		RunE: withSecrets(sf, func(ctx context.Context, cmd *cobra.Command, c *secretClient, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			p, err := parseSecretPath(args[0], false)
			if err != nil {
				return err
			}
			u := p.url("data")
			what := p.String()
			if version != 0 {
				if version < 0 {
					return errors.New("--version is a version number, 1 or more")
				}
				u += "?version=" + strconv.FormatInt(version, 10)
				what = fmt.Sprintf("version %d of %s", version, p)
			}
			var out struct {
				Data struct {
					Data     map[string]json.RawMessage `json:"data"`
					Metadata versionMeta                `json:"metadata"`
				} `json:"data"`
			}
			if err := c.call(ctx, "GET", u, nil, &out); err != nil {
				if ae, ok := notFound(err); ok {
					return absentVersion(ae, p, version)
				}
				return fmt.Errorf("reading %s: %w", what, err)
			}
			w := cmd.OutOrStdout()
			d := out.Data
			if field != "" {
				v, ok := d.Data[field]
				if !ok {
					return fmt.Errorf("version %d of %s has no key %q", d.Metadata.Version, p, field)
				}
				text := valueText(v)
				if format == "json" {
					text = string(v)
				}
				io.WriteString(w, text)
				if isTerminal(w) {
					io.WriteString(w, "\n")
				}
				return nil
			}
			if format == "json" {
				return printJSON(w, map[string]any{"data": d.Data, "metadata": d.Metadata})
			}
			fmt.Fprintf(w, "Path     %s\nVersion  %d\nCreated  %s\n", p, d.Metadata.Version, shortTime(d.Metadata.CreatedTime))
			printCustom(w, "Custom   ", d.Metadata.CustomMetadata)
			fmt.Fprintln(w)
			tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tVALUE")
			keys := make([]string, 0, len(d.Data))
			for k := range d.Data {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(tw, "%s\t%s\n", k, valueText(d.Data[k]))
			}
			return tw.Flush()
		}),
	}
	fl := cmd.Flags()
	fl.Int64Var(&version, "version", 0, "version to read (default: the latest)")
	fl.StringVar(&field, "field", "", "print only this key's value, raw")
	fl.StringVar(&format, "format", "table", "table or json")
	return cmd
}

// absentVersion explains a 404 of a read of version (0: the latest): a
// deleted or destroyed version (the body carries its metadata), or
// nothing there.
func absentVersion(ae *apiError, p secretPath, version int64) error {
	var body struct {
		Data struct {
			Metadata *versionMeta `json:"metadata"`
		} `json:"data"`
	}
	if json.Unmarshal(ae.body, &body) == nil && body.Data.Metadata != nil && body.Data.Metadata.Version != 0 {
		m := body.Data.Metadata
		if m.Destroyed {
			return fmt.Errorf("version %d of %s is destroyed: its data is gone", m.Version, p)
		}
		return fmt.Errorf("version %d of %s was deleted at %s; 'sigil secret undelete %s --versions %d' restores it",
			m.Version, p, shortTime(m.DeletionTime), p, m.Version)
	}
	if version != 0 {
		return fmt.Errorf("%s has no version %d", p, version)
	}
	return fmt.Errorf("no secret at %s", p)
}

// printCustom prints custom metadata sorted by key, one label line each.
func printCustom(w io.Writer, label string, custom map[string]string) {
	keys := make([]string, 0, len(custom))
	for k := range custom {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s%s=%s\n", label, k, custom[k])
	}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func secretListCmd(sf *secretFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "list DIR",
		Short: "List the names under DIR (a mount, or a directory in it); sub-directories end in /",
		Args:  cobra.ExactArgs(1),
		RunE: withSecrets(sf, func(ctx context.Context, cmd *cobra.Command, c *secretClient, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			p, err := parseSecretPath(args[0], true)
			if err != nil {
				return err
			}
			var out struct {
				Data struct {
					Keys []string `json:"keys"`
				} `json:"data"`
			}
			if err := c.call(ctx, "GET", p.url("metadata")+"?list=true", nil, &out); err != nil {
				if _, ok := notFound(err); ok {
					return fmt.Errorf("nothing under %s", p)
				}
				return fmt.Errorf("listing %s: %w", p, err)
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), out.Data.Keys)
			}
			for _, k := range out.Data.Keys {
				fmt.Fprintln(cmd.OutOrStdout(), k)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&format, "format", "table", "table (one name a line) or json")
	return cmd
}

// versionList is "version 1" or "versions 1,2".
func versionList(vs []int64) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = strconv.FormatInt(v, 10)
	}
	if len(s) == 1 {
		return "version " + s[0]
	}
	return "versions " + strings.Join(s, ",")
}

func checkVersions(vs []int64) error {
	for _, v := range vs {
		if v <= 0 {
			return fmt.Errorf("--versions: %d is not a version number", v)
		}
	}
	return nil
}

func secretDeleteCmd(sf *secretFlags) *cobra.Command {
	var versions []int64
	cmd := &cobra.Command{
		Use:   "delete PATH [--versions N,M]",
		Short: "Soft-delete the latest version, or the versions given; 'undelete' restores them",
		Args:  cobra.ExactArgs(1),
		RunE: withSecrets(sf, func(ctx context.Context, cmd *cobra.Command, c *secretClient, args []string) error {
			p, err := parseSecretPath(args[0], false)
			if err != nil {
				return err
			}
			if err := checkVersions(versions); err != nil {
				return err
			}
			if len(versions) == 0 {
				if err := c.call(ctx, "DELETE", p.url("data"), nil, nil); err != nil {
					if _, ok := notFound(err); ok {
						return fmt.Errorf("no secret at %s", p)
					}
					return fmt.Errorf("deleting %s: %w", p, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted the latest version of %s\n", p)
				return nil
			}
			if err := c.call(ctx, "POST", p.url("delete"), map[string]any{"versions": versions}, nil); err != nil {
				if _, ok := notFound(err); ok {
					return fmt.Errorf("no secret at %s", p)
				}
				return fmt.Errorf("deleting %s of %s: %w", versionList(versions), p, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Deleted %s of %s\n", versionList(versions), p)
			return nil
		}),
	}
	cmd.Flags().Int64SliceVar(&versions, "versions", nil, "versions to delete, e.g. 1,2 (default: the latest)")
	return cmd
}

// secretVersionsCmd is undelete or destroy: an operation on named versions.
func secretVersionsCmd(sf *secretFlags, op, short string) *cobra.Command {
	var versions []int64
	past := map[string]string{"undelete": "Undeleted", "destroy": "Destroyed"}[op]
	cmd := &cobra.Command{
		Use:   op + " PATH --versions N,M",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: withSecrets(sf, func(ctx context.Context, cmd *cobra.Command, c *secretClient, args []string) error {
			p, err := parseSecretPath(args[0], false)
			if err != nil {
				return err
			}
			if err := checkVersions(versions); err != nil {
				return err
			}
			if err := c.call(ctx, "POST", p.url(op), map[string]any{"versions": versions}, nil); err != nil {
				if _, ok := notFound(err); ok {
					return fmt.Errorf("no secret at %s", p)
				}
				return fmt.Errorf("%s %s of %s: %w", op, versionList(versions), p, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s of %s\n", past, versionList(versions), p)
			return nil
		}),
	}
	cmd.Flags().Int64SliceVar(&versions, "versions", nil, "versions, e.g. 1,2")
	cmd.MarkFlagRequired("versions")
	return cmd
}

// secretMetadata is GET /v1/<mount>/metadata/<path>.
type secretMetadata struct {
	CurrentVersion     int64             `json:"current_version"`
	OldestVersion      int64             `json:"oldest_version"`
	CreatedTime        string            `json:"created_time"`
	UpdatedTime        string            `json:"updated_time"`
	MaxVersions        int               `json:"max_versions"`
	CASRequired        bool              `json:"cas_required"`
	DeleteVersionAfter string            `json:"delete_version_after"`
	CustomMetadata     map[string]string `json:"custom_metadata"`
	Versions           map[string]struct {
		CreatedTime  string `json:"created_time"`
		DeletionTime string `json:"deletion_time"`
		Destroyed    bool   `json:"destroyed"`
	} `json:"versions"`
}

func secretHistoryCmd(sf *secretFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "history PATH [--format table|json]",
		Short: "Show a secret's metadata and versions: created, deleted, destroyed",
		Args:  cobra.ExactArgs(1),
		RunE: withSecrets(sf, func(ctx context.Context, cmd *cobra.Command, c *secretClient, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			p, err := parseSecretPath(args[0], false)
			if err != nil {
				return err
			}
			var out struct {
				Data secretMetadata `json:"data"`
			}
			if err := c.call(ctx, "GET", p.url("metadata"), nil, &out); err != nil {
				if _, ok := notFound(err); ok {
					return fmt.Errorf("no secret at %s", p)
				}
				return fmt.Errorf("reading the metadata of %s: %w", p, err)
			}
			w := cmd.OutOrStdout()
			m := out.Data
			if format == "json" {
				return printJSON(w, m)
			}
			maxV := "server default"
			if m.MaxVersions > 0 {
				maxV = strconv.Itoa(m.MaxVersions)
			}
			fmt.Fprintf(w, "Path              %s\nCurrent version   %d\nOldest version    %d\nCreated           %s\nUpdated           %s\n",
				p, m.CurrentVersion, m.OldestVersion, shortTime(m.CreatedTime), shortTime(m.UpdatedTime))
			fmt.Fprintf(w, "Max versions      %s\nCAS required      %t\nDelete after      %s\n", maxV, m.CASRequired, showDeleteAfter(m.DeleteVersionAfter))
			printCustom(w, "Custom            ", m.CustomMetadata)
			fmt.Fprintln(w)
			nums := make([]int64, 0, len(m.Versions))
			for k := range m.Versions {
				if n, err := strconv.ParseInt(k, 10, 64); err == nil {
					nums = append(nums, n)
				}
			}
			slices.Sort(nums)
			tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tCREATED\tDELETED\tDESTROYED")
			for _, n := range nums {
				v := m.Versions[strconv.FormatInt(n, 10)]
				fmt.Fprintf(tw, "%d\t%s\t%s\t%t\n", n, shortTime(v.CreatedTime), shortTime(v.DeletionTime), v.Destroyed)
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	return cmd
}

// showDeleteAfter shows delete_version_after, a Go duration where 0s
// means never.
func showDeleteAfter(s string) string {
	if d, err := time.ParseDuration(s); s == "" || err == nil && d == 0 {
		return "never"
	}
	return s
}

func secretMetadataCmd(sf *secretFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "metadata",
		Short: "Change a secret's settings, or remove the secret with all its versions",
	}
	cmd.AddCommand(secretMetadataPutCmd(sf), secretMetadataDeleteCmd(sf))
	return cmd
}

func secretMetadataPutCmd(sf *secretFlags) *cobra.Command {
	var (
		maxVersions int
		casRequired bool
		deleteAfter string
		custom      []string
	)
	cmd := &cobra.Command{
		Use:   "put PATH [--max-versions N] [--cas-required] [--delete-version-after D] [--custom k=v ...]",
		Short: "Change a secret's settings; only the flags given change (--custom replaces all custom metadata)",
		Args:  cobra.ExactArgs(1),
		RunE: withSecrets(sf, func(ctx context.Context, cmd *cobra.Command, c *secretClient, args []string) error {
			p, err := parseSecretPath(args[0], false)
			if err != nil {
				return err
			}
			set := cmd.Flags().Changed
			req := map[string]any{}
			if set("max-versions") {
				if maxVersions < 0 {
					return errors.New("--max-versions is 0 (server default) or more")
				}
				req["max_versions"] = maxVersions
			}
			if set("cas-required") {
				req["cas_required"] = casRequired
			}
			if set("delete-version-after") {
				if _, err := time.ParseDuration(deleteAfter); err != nil {
					return fmt.Errorf("--delete-version-after: %w", err)
				}
				req["delete_version_after"] = deleteAfter
			}
			if set("custom") {
				m := map[string]string{}
				for _, kv := range custom {
					k, v, ok := strings.Cut(kv, "=")
					if !ok || k == "" {
						return fmt.Errorf("--custom %q is not key=value", kv)
					}
					m[k] = v
				}
				req["custom_metadata"] = m
			}
			if len(req) == 0 {
				return errors.New("nothing to change: give --max-versions, --cas-required, --delete-version-after or --custom")
			}
			if err := c.call(ctx, "POST", p.url("metadata"), req, nil); err != nil {
				return fmt.Errorf("writing the metadata of %s: %w", p, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Updated the metadata of %s\n", p)
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.IntVar(&maxVersions, "max-versions", 0, "versions kept; older ones are removed (0: the server's default)")
	fl.BoolVar(&casRequired, "cas-required", false, "every write must give --cas (--cas-required=false to lift)")
	fl.StringVar(&deleteAfter, "delete-version-after", "", "soft-delete each version this long after it is written, e.g. 720h (0s: never)")
	fl.StringArrayVar(&custom, "custom", nil, "custom metadata key=value (repeatable); replaces all custom metadata")
	return cmd
}

func secretMetadataDeleteCmd(sf *secretFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete PATH",
		Short: "Remove a secret with all its versions and metadata, for good",
		Args:  cobra.ExactArgs(1),
		RunE: withSecrets(sf, func(ctx context.Context, cmd *cobra.Command, c *secretClient, args []string) error {
			p, err := parseSecretPath(args[0], false)
			if err != nil {
				return err
			}
			if err := c.call(ctx, "DELETE", p.url("metadata"), nil, nil); err != nil {
				if _, ok := notFound(err); ok {
					return fmt.Errorf("no secret at %s", p)
				}
				return fmt.Errorf("removing %s: %w", p, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Removed %s and all its versions\n", p)
			return nil
		}),
	}
}
