package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sigil-pki/sigil/server"
)

// maxPolicyFile bounds a policy document read from a file or stdin; the
// server refuses much smaller documents with a clear message.
const maxPolicyFile = 4 << 20

func policyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Manage the secret store's access policies: which SPIFFE IDs may do what on which secret paths",
		Long: `Manage the secret store's access policies. A policy is a YAML document of rules:

  rules:
    - spiffe_id: spiffe://example.org/ns/{ns}/sa/*
      paths: ["secret/{ns}/*"]
      capabilities: [read, list]
    - spiffe_id: spiffe://example.org/*
      paths: ["secret/payments/root"]
      capabilities: [deny]

Nothing is allowed unless a rule grants it, and a deny rule always wins.
These commands use the operator identity (--client-cert/--client-key or
SIGIL_CLIENT_CERT/SIGIL_CLIENT_KEY), like 'sigil entry'.`,
	}
	var cf clientFlags
	cf.register(cmd)
	cmd.AddCommand(policyWriteCmd(&cf), policyReadCmd(&cf), policyListCmd(&cf), policyDeleteCmd(&cf), policyCheckCmd(&cf))
	return cmd
}

func policyPath(name string) string { return "/v1/policies/" + url.PathEscape(name) }

func policyWriteCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "write NAME FILE",
		Short: "Create or replace a policy from a YAML file ('-' reads stdin); a document with errors is refused whole",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			doc, err := readPolicyFile(cmd, args[1])
			if err != nil {
				return err
			}
			var out server.PolicyJSON
			if err := cf.do(cmd.Context(), "PUT", policyPath(args[0]), server.PolicyJSON{Policy: doc}, &out); err != nil {
				return fmt.Errorf("writing policy %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Wrote policy %s (revision %d)\n", out.Name, out.Revision)
			return nil
		},
	}
}

// readPolicyFile reads a policy document from path, or stdin for "-".
func readPolicyFile(cmd *cobra.Command, path string) (string, error) {
	var r io.Reader = cmd.InOrStdin()
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxPolicyFile+1))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	if len(b) > maxPolicyFile {
		return "", fmt.Errorf("%s is over %d bytes", path, maxPolicyFile)
	}
	return string(b), nil
}

func policyReadCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "read NAME",
		Short: "Print a policy's YAML document as stored (revision and time go to stderr)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out server.PolicyJSON
			if err := cf.do(cmd.Context(), "GET", policyPath(args[0]), nil, &out); err != nil {
				return fmt.Errorf("reading policy %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "# policy %s, revision %d, updated %s\n", out.Name, out.Revision, out.UpdatedAt)
			w := cmd.OutOrStdout()
			io.WriteString(w, out.Policy)
			if !strings.HasSuffix(out.Policy, "\n") {
				io.WriteString(w, "\n")
			}
			return nil
		},
	}
}

func policyListCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List policy names, one per line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Policies []string `json:"policies"`
			}
			if err := cf.do(cmd.Context(), "GET", "/v1/policies", nil, &out); err != nil {
				return fmt.Errorf("listing policies: %w", err)
			}
			for _, n := range out.Policies {
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return nil
		},
	}
}

func policyDeleteCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a policy; what it granted is no longer granted, what it denied is no longer denied",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.do(cmd.Context(), "DELETE", policyPath(args[0]), nil, nil); err != nil {
				return fmt.Errorf("deleting policy %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Deleted policy %s\n", args[0])
			return nil
		},
	}
}

// exitDenied is the exit status of 'policy check --exit-code' for a
// denial, apart from 1 for a failed request.
const exitDenied = 2

func policyCheckCmd(cf *clientFlags) *cobra.Command {
	var (
		req      server.PolicyCheckRequest
		exitCode bool
	)
	cmd := &cobra.Command{
		Use:   "check --spiffe-id ID --path PATH --capability CAP [--exit-code]",
		Short: "Say whether the policies in force let ID use CAP on PATH, and which rule decided",
		Long: `Ask the server to decide one request against the policies in force and
explain the decision. PATH is a full secret path including the mount
(secret/team-a/db); CAP is read, create, update, delete or list.

Prints "allowed: ..." or "denied: ..." and exits 0 either way, unless
--exit-code is given: then a denial exits with status 2 (1 stays for a
request that failed).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out server.PolicyCheckResponse
			if err := cf.do(cmd.Context(), "POST", "/v1/policies/check", req, &out); err != nil {
				return fmt.Errorf("checking policy: %w", err)
			}
			verdict := "denied"
			if out.Allowed {
				verdict = "allowed"
			}
			// The explanation already starts with the verdict when the
			// server words it that way ("allowed by policy ...").
			expl := out.Explanation
			if !strings.HasPrefix(expl, verdict) {
				expl = verdict + ": " + expl
			}
			fmt.Fprintln(cmd.OutOrStdout(), expl)
			if !out.Allowed && exitCode {
				os.Exit(exitDenied)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&req.SPIFFEID, "spiffe-id", "", "the caller's SPIFFE ID")
	fl.StringVar(&req.Path, "path", "", "secret path including the mount, e.g. secret/team-a/db")
	fl.StringVar(&req.Capability, "capability", "", "read, create, update, delete or list")
	fl.BoolVar(&exitCode, "exit-code", false, "exit with status 2 when denied")
	for _, f := range []string{"spiffe-id", "path", "capability"} {
		cmd.MarkFlagRequired(f)
	}
	return cmd
}
