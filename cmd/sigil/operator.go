package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/sigil-pki/sigil/config"
	"github.com/sigil-pki/sigil/server"
)

func operatorCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "operator", Short: "Initialise, unseal, seal and rotate a Sigil server"}
	var cf clientFlags
	cf.register(cmd)
	cmd.AddCommand(initCmd(), unsealCmd(&cf), rotateCmd(&cf),
		sealStatusCmd(&cf, "seal", "Seal the server now: every key leaves memory; nothing is signed or served until unsealed", "PUT", "/v1/sys/seal"),
		sealStatusCmd(&cf, "status", "Show whether the server is initialised and sealed", "GET", "/v1/sys/seal-status"))
	return cmd
}

// sealStatus mirrors the server's seal-status JSON.
type sealStatus struct {
	Initialized bool   `json:"initialized"`
	Sealed      bool   `json:"sealed"`
	Type        string `json:"type"`
	Threshold   int    `json:"t"`
	Shares      int    `json:"n"`
	Progress    int    `json:"progress"`
	KeyTerm     uint32 `json:"key_term"`
	TrustDomain string `json:"trust_domain"`
}

func (s sealStatus) print(w io.Writer) {
	fmt.Fprintf(w, "Initialized   %t\nSealed        %t\nSeal type     %s\n", s.Initialized, s.Sealed, s.Type)
	if s.Type == "shamir" {
		fmt.Fprintf(w, "Threshold     %d\nShares        %d\nProgress      %d/%d\n", s.Threshold, s.Shares, s.Progress, s.Threshold)
	}
	if s.KeyTerm != 0 {
		fmt.Fprintf(w, "Key term      %d\n", s.KeyTerm)
	}
	fmt.Fprintf(w, "Trust domain  %s\n", s.TrustDomain)
}

// initCmd initialises storage directly (the server need not run): barrier
// and seal, root and intermediate, the HTTPS certificate and the operator
// identity. Shamir shares are shown once.
func initCmd() *cobra.Command {
	var (
		path              string
		shares, threshold int
		outDir            string
	)
	cmd := &cobra.Command{
		Use:   "init --config FILE",
		Short: "Initialise Sigil: seal, root CA, intermediate and operator identity (run once, before the first start)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			srv, cfg, err := openServer(cmd, path)
			if err != nil {
				return err
			}
			defer srv.Close()
			res, err := srv.Initialize(cmd.Context(), server.InitOptions{Shares: shares, Threshold: threshold, OutDir: outDir})
			if err != nil {
				return err
			}
			printInit(cmd.OutOrStdout(), cfg, res)
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "path to the YAML config file")
	cmd.Flags().IntVar(&shares, "shares", 0, "shamir: number of unseal shares (default seal.shamir.shares)")
	cmd.Flags().IntVar(&threshold, "threshold", 0, "shamir: shares needed to unseal (default seal.shamir.threshold)")
	cmd.Flags().StringVar(&outDir, "out-dir", "", "where to write root.pem, bundle.pem and the operator certificate (default data_dir)")
	cmd.MarkFlagRequired("config")
	return cmd
}

func printInit(w io.Writer, cfg config.Config, res *server.InitResult) {
	if len(res.Shares) > 0 {
		fmt.Fprintf(w, "Unseal shares (shown once; %d of %d unseal Sigil; give each to a different person):\n\n", res.Threshold, len(res.Shares))
		for i, s := range res.Shares {
			fmt.Fprintf(w, "  Share %d: %s\n", i+1, hex.EncodeToString(s))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Root CA:          %s\nTrust bundle:     %s\nOperator cert:    %s\nOperator key:     %s\nOperator ID:      %s\n\n",
		res.RootCA, res.Bundle, res.OperatorCert, res.OperatorKey, res.OperatorID)
	fmt.Fprintf(w, "Start the server with 'sigil server --config ...', then:\n\n")
	fmt.Fprintf(w, "  export SIGIL_ADDR=%s\n  export SIGIL_CACERT=%s\n  export SIGIL_CLIENT_CERT=%s\n  export SIGIL_CLIENT_KEY=%s\n",
		cfg.Listen.HTTPSURL, res.RootCA, res.OperatorCert, res.OperatorKey)
	if len(res.Shares) > 0 {
		fmt.Fprintf(w, "  sigil operator unseal    # %d times, one share each\n", res.Threshold)
	}
}

func unsealCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "unseal [SHARE]",
		Short: "Give one unseal share to a shamir-sealed server (prompted for when not given)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			share := ""
			if len(args) == 1 {
				share = args[0]
			} else {
				var err error
				if share, err = readSecret(cmd, "Unseal share: "); err != nil {
					return err
				}
			}
			var st sealStatus
			if err := cf.do(cmd.Context(), "PUT", "/v1/sys/unseal", server.UnsealRequest{Key: share}, &st); err != nil {
				return err
			}
			st.print(cmd.OutOrStdout())
			return nil
		},
	}
}

// readSecret reads one line without echo from a terminal, or plainly from a pipe.
func readSecret(cmd *cobra.Command, prompt string) (string, error) {
	if f, ok := cmd.InOrStdin().(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(cmd.ErrOrStderr(), prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		return strings.TrimSpace(string(b)), err
	}
	line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("reading share from standard input: %w", err)
	}
	return strings.TrimSpace(line), nil
}

// sealStatusCmd sends one request whose answer is the seal status, and prints it.
func sealStatusCmd(cf *clientFlags, use, short, method, path string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st sealStatus
			if err := cf.do(cmd.Context(), method, path, nil, &st); err != nil {
				return err
			}
			st.print(cmd.OutOrStdout())
			return nil
		},
	}
}

func rotateCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rotate",
		Short: "Add a new barrier keyring term; new writes use it, old data stays readable",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Term uint32 `json:"term"`
			}
			if err := cf.do(cmd.Context(), "PUT", "/v1/sys/rotate", nil, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Keyring rotated; new writes use key term %d\n", out.Term)
			return nil
		},
	}
}
