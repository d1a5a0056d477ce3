package main

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sigil-pki/sigil/config"
	"github.com/sigil-pki/sigil/server"
)

// devInfo is DIR/dev.json: where everything of a dev server is, as absolute
// paths and URLs, for scripts and tests.
type devInfo struct {
	TrustDomain string `json:"trust_domain"`
	HTTPSURL    string `json:"https_url"`
	HTTPURL     string `json:"http_url"`
	// WorkloadSocket is the SPIFFE Workload API (for SPIFFE_ENDPOINT_SOCKET use unix:// + it).
	WorkloadSocket string `json:"workload_socket"`
	// ACMEDirectory is the ACME directory URL; ACMEHTTPPort and
	// ACMETLSPort are the loopback ports its http-01 and tls-alpn-01
	// validations dial.
	ACMEDirectory string `json:"acme_directory"`
	ACMEHTTPPort  int    `json:"acme_http_port"`
	ACMETLSPort   int    `json:"acme_tls_port"`
	RootCA        string `json:"root_ca"`
	Bundle        string `json:"bundle"`
	OperatorCert  string `json:"operator_cert"`
	OperatorKey   string `json:"operator_key"`
	OperatorID    string `json:"operator_id"`
	LogPublicKey  string `json:"log_public_key"`
	Seal          string `json:"seal"`
	HSM           string `json:"hsm"`
	DataDir       string `json:"data_dir"`
}

func devCmd() *cobra.Command {
	var (
		dataDir, hsmMode, trustDomain, httpsAddr, httpAddr, workloadSocket string
		acmeHTTPPort, acmeTLSPort                                          int
		acmeEAB                                                            bool
		acmeDNSResolver                                                    string
	)
	cmd := &cobra.Command{
		Use:   "dev [--data-dir DIR] [--hsm none|softhsm]",
		Short: "Run everything embedded for development: SQLite, the dev seal (or SoftHSM2), every listener",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			start := time.Now()
			if dataDir == "" {
				home, err := os.UserHomeDir()
				if err != nil {
					return err
				}
				dataDir = filepath.Join(home, ".sigil", "dev")
			}
			abs, err := filepath.Abs(dataDir)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(abs, 0o700); err != nil {
				return err
			}
			var cfg config.Config
			cfg.TrustDomain = trustDomain
			cfg.DataDir = abs
			cfg.Seal.Type = "dev"
			cfg.Listen.HTTPS, cfg.Listen.HTTP = httpsAddr, httpAddr
			cfg.ACME.LoopbackNames = []string{"localhost"}
			cfg.ACME.HTTPPort, cfg.ACME.TLSPort = acmeHTTPPort, acmeTLSPort
			cfg.ACME.EABRequired = acmeEAB
			cfg.ACME.IPRanges = []string{"127.0.0.0/8", "::1/128"}
			cfg.ACME.DNSResolver = acmeDNSResolver
			if workloadSocket != "" {
				if cfg.Listen.WorkloadSocket, err = filepath.Abs(workloadSocket); err != nil {
					return err
				}
			}
			cfg.CA.DNSDomains = []string{"localhost", "test"}
			var pin string
			switch hsmMode {
			case "none":
			case "softhsm":
				cfg.HSM, pin, err = devSoftHSM(abs)
				if err != nil {
					return err
				}
				cfg.Seal.Type = "pkcs11"
			default:
				return fmt.Errorf("--hsm must be none or softhsm, not %q", hsmMode)
			}
			cfg.ApplyDefaults()
			if err := cfg.Validate(); err != nil {
				return err
			}
			log := newLogger(config.Log{Level: "info", Format: "text"})
			srv, err := server.New(cmd.Context(), cfg, server.Options{Logger: log, HSMPIN: pin})
			if err != nil {
				return fmt.Errorf("%w (a data dir keeps the seal it was made with: reuse its --hsm flag or pick a new --data-dir)", err)
			}
			defer srv.Close()
			st, err := srv.Status(cmd.Context())
			if err != nil {
				return err
			}
			if !st.Initialized {
				if _, err := srv.Initialize(cmd.Context(), server.InitOptions{}); err != nil {
					return err
				}
			} else if err := refreshDevOperator(cmd, srv, abs); err != nil {
				return err
			}
			l, err := srv.Listen()
			if err != nil {
				return err
			}
			logKey, err := srv.LogVerifierKey()
			if err != nil {
				return err
			}
			info := devInfo{
				TrustDomain:    cfg.TrustDomain,
				HTTPSURL:       cfg.Listen.HTTPSURL,
				HTTPURL:        cfg.Listen.PublicURL,
				WorkloadSocket: cfg.Listen.WorkloadSocket,
				ACMEDirectory:  cfg.Listen.HTTPSURL + "/acme/directory",
				ACMEHTTPPort:   cfg.ACME.HTTPPort,
				ACMETLSPort:    cfg.ACME.TLSPort,
				RootCA:         filepath.Join(abs, "root.pem"),
				Bundle:         filepath.Join(abs, "bundle.pem"),
				OperatorCert:   filepath.Join(abs, "operator.pem"),
				OperatorKey:    filepath.Join(abs, "operator-key.pem"),
				OperatorID:     srv.OperatorID(),
				LogPublicKey:   logKey,
				Seal:           cfg.Seal.Type,
				HSM:            hsmMode,
				DataDir:        abs,
			}
			b, _ := json.MarshalIndent(info, "", "  ")
			if err := os.WriteFile(filepath.Join(abs, "dev.json"), append(b, '\n'), 0o644); err != nil {
				return err
			}
			printDev(cmd.OutOrStdout(), info, time.Since(start))
			return srv.Serve(cmd.Context(), l)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dataDir, "data-dir", "", "state directory, reused by the next 'sigil dev' (default ~/.sigil/dev)")
	fl.StringVar(&hsmMode, "hsm", "none", "none: root key sealed under the dev seal; softhsm: root key and seal key in a SoftHSM2 token in the data dir")
	fl.StringVar(&trustDomain, "trust-domain", "sigil.test", "SPIFFE trust domain")
	fl.StringVar(&httpsAddr, "https", "127.0.0.1:8443", "HTTPS (mTLS) listener")
	fl.StringVar(&httpAddr, "http", "127.0.0.1:8080", "public HTTP listener")
	fl.StringVar(&workloadSocket, "workload-socket", "", "Workload API socket (default <data-dir>/workload.sock)")
	fl.IntVar(&acmeHTTPPort, "acme-http-port", 5002, "port the ACME server's http-01 validation dials on loopback (certbot --http-01-port, lego --http.port)")
	fl.StringVar(&acmeDNSResolver, "acme-dns-resolver", "", "host:port of the DNS server dns-01 validation asks (default: the system's resolver)")
	fl.BoolVar(&acmeEAB, "acme-eab", false, "require ACME accounts to present an external account binding ('sigil acme eab create')")
	fl.IntVar(&acmeTLSPort, "acme-tls-port", 5001, "port the ACME server's tls-alpn-01 validation dials on loopback (lego --tls.port)")
	return cmd
}

// refreshDevOperator re-issues the dev operator certificate when less than
// half of its life is left, so a reused dev dir keeps working.
func refreshDevOperator(cmd *cobra.Command, srv *server.Server, dir string) error {
	if _, err := srv.Authority(); err != nil {
		return err
	}
	p := filepath.Join(dir, "operator.pem")
	if b, err := os.ReadFile(p); err == nil {
		if c, err := firstCert(b); err == nil {
			life := c.NotAfter.Sub(c.NotBefore)
			if time.Until(c.NotAfter) > life/2 {
				return nil
			}
		}
	}
	return srv.WriteOperatorIdentity(cmd.Context(), dir, &server.InitResult{})
}

func printDev(w io.Writer, i devInfo, took time.Duration) {
	warn := "the dev seal keeps its key in a plain file"
	if i.HSM == "softhsm" {
		warn = "the SoftHSM2 token and its PIN are files in the data dir"
	}
	// Suggest commands with the binary as it was invoked (bin/sigil from
	// make dev), or plain "sigil" when it came from PATH.
	bin := "sigil"
	if strings.Contains(os.Args[0], "/") {
		bin = os.Args[0]
	}
	r := strings.NewReplacer(
		"{took}", took.Round(time.Millisecond).String(), "{warn}", warn, "{bin}", bin,
		"{td}", i.TrustDomain, "{https}", i.HTTPSURL, "{http}", i.HTTPURL, "{dir}", i.DataDir,
		"{root}", i.RootCA, "{cert}", i.OperatorCert, "{key}", i.OperatorKey, "{logkey}", i.LogPublicKey, "{sock}", i.WorkloadSocket,
		"{acme}", i.ACMEDirectory, "{acmehttp}", strconv.Itoa(i.ACMEHTTPPort),
	)
	r.WriteString(w, `
==> Sigil dev server ready in {took}  (UNSAFE FOR PRODUCTION: {warn})

  Trust domain   {td}
  HTTPS (mTLS)   {https}
  Public HTTP    {http}
  Workload API   unix://{sock}
  Data dir       {dir}   (details in dev.json)

Use the operator identity from another shell:

  export SIGIL_ADDR={https}
  export SIGIL_CACERT={root}
  export SIGIL_CLIENT_CERT={cert}
  export SIGIL_CLIENT_KEY={key}
  export SIGIL_LOG_KEY='{logkey}'

Then try:

  {bin} operator status
  {bin} ca issue --spiffe-id spiffe://{td}/demo/web --out-dir /tmp/demo
  openssl verify -CAfile {root} -untrusted /tmp/demo/chain.pem /tmp/demo/cert.pem
  openssl ocsp -issuer /tmp/demo/chain.pem -cert /tmp/demo/cert.pem -url {http}/ocsp -CAfile {root}
  {bin} ca revoke --serial $(openssl x509 -in /tmp/demo/cert.pem -noout -serial | cut -d= -f2) --reason keyCompromise
  {bin} log verify --cert /tmp/demo/cert.pem
  {bin} entry create --spiffe-id spiffe://{td}/me --selector unix:uid:$(id -u)   # then SPIFFE_ENDPOINT_SOCKET=unix://{sock}
  curl -s {http}/healthz; curl -s {http}/metrics | grep ^sigil_

ACME (names under localhost, validated on loopback):

  LEGO_CA_CERTIFICATES={root} lego --server {acme} --accept-tos --email you@example.com \
    --path /tmp/lego --http --http.port 127.0.0.1:{acmehttp} -d web.localhost run

An agent on this machine (its own socket and data dir):

  {bin} agent token create --node-id node1
  {bin} agent --server {https} --ca-cert {root} --trust-domain {td} --join-token TOKEN --data-dir /tmp/agent1
  {bin} entry create --spiffe-id spiffe://{td}/via-agent --parent spiffe://{td}/sigil/agent/node1 --selector unix:uid:$(id -u)

Press Ctrl-C to stop; '{bin} dev --data-dir {dir}' picks up where it left off.
`)
}

// devSoftHSM prepares a SoftHSM2 token inside the data dir and returns the
// hsm section and the PIN. SoftHSM2 reads SOFTHSM2_CONF when the module
// loads, so it is set for this process.
func devSoftHSM(dir string) (config.HSM, string, error) {
	module := ""
	for _, p := range []string{"/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so"} {
		if _, err := os.Stat(p); err == nil {
			module = p
			break
		}
	}
	util, err := exec.LookPath("softhsm2-util")
	if module == "" || err != nil {
		return config.HSM{}, "", errors.New("--hsm softhsm needs SoftHSM2: apt-get install softhsm2 opensc")
	}
	hdir := filepath.Join(dir, "softhsm")
	tokens := filepath.Join(hdir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return config.HSM{}, "", err
	}
	conf := filepath.Join(hdir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		return config.HSM{}, "", err
	}
	os.Setenv("SOFTHSM2_CONF", conf)
	pinFile := filepath.Join(hdir, "pin")
	pin := ""
	if b, err := os.ReadFile(pinFile); err == nil {
		pin = strings.TrimSpace(string(b))
	} else {
		var r [16]byte
		if _, err := rand.Read(r[:]); err != nil {
			return config.HSM{}, "", err
		}
		pin = hex.EncodeToString(r[:])
		if err := os.WriteFile(pinFile, []byte(pin+"\n"), 0o600); err != nil {
			return config.HSM{}, "", err
		}
	}
	const label = "sigil-dev"
	out, _ := exec.Command(util, "--show-slots").CombinedOutput()
	if !regexp.MustCompile(`(?m)^\s*Label:\s+` + label + `\s*$`).Match(out) {
		so := make([]byte, 16)
		rand.Read(so)
		cmd := exec.Command(util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", hex.EncodeToString(so))
		if out, err := cmd.CombinedOutput(); err != nil {
			return config.HSM{}, "", fmt.Errorf("creating the SoftHSM2 token: %v: %s", err, strings.TrimSpace(string(out)))
		}
	}
	return config.HSM{Module: module, TokenLabel: label, PINFile: pinFile, RootKeyLabel: "sigil-root"}, pin, nil
}

// firstCert parses the first PEM certificate in b.
func firstCert(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}
