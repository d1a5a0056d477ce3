package main

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// workloadCmd is a Workload API client: what a workload on this machine
// gets from the socket, as this process's user and binary.
func workloadCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "workload",
		Short: "Fetch SVIDs and bundles from the Workload API as this process (a workload's view)",
	}
	var socket string
	cmd.PersistentFlags().StringVar(&socket, "socket", "", "Workload API socket path or unix:// address (default $SPIFFE_ENDPOINT_SOCKET)")
	client := func(ctx context.Context) (*workloadapi.Client, error) {
		addr := socket
		if addr == "" {
			addr = os.Getenv("SPIFFE_ENDPOINT_SOCKET")
		}
		if addr == "" {
			return nil, errors.New("no Workload API socket: pass --socket or set SPIFFE_ENDPOINT_SOCKET")
		}
		if !strings.Contains(addr, "://") {
			addr = "unix://" + addr
		}
		return workloadapi.New(ctx, workloadapi.WithAddr(addr))
	}
	cmd.AddCommand(fetchX509Cmd(client), fetchJWTCmd(client), validateJWTCmd(client), watchCmd(client))
	return cmd
}

type clientFunc func(context.Context) (*workloadapi.Client, error)

// workloadTimeout bounds one-shot Workload API calls.
const workloadTimeout = 30 * time.Second

// oneShot makes a command's RunE that calls fn with a Workload API client
// and a context bounded by workloadTimeout.
func oneShot(client clientFunc, fn func(ctx context.Context, cmd *cobra.Command, c *workloadapi.Client) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		ctx, cancel := context.WithTimeout(cmd.Context(), workloadTimeout)
		defer cancel()
		c, err := client(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		return fn(ctx, cmd, c)
	}
}

func fetchX509Cmd(client clientFunc) *cobra.Command {
	var write string
	cmd := &cobra.Command{
		Use:   "x509 [--write DIR]",
		Short: "Fetch this workload's X.509-SVIDs; with --write, store svid.N.pem, svid.N.key and bundle.pem in DIR",
		Args:  cobra.NoArgs,
		RunE: oneShot(client, func(ctx context.Context, cmd *cobra.Command, c *workloadapi.Client) error {
			xc, err := c.FetchX509Context(ctx)
			if err != nil {
				return fmt.Errorf("fetching X.509-SVIDs: %w", err)
			}
			w := cmd.OutOrStdout()
			for i, s := range xc.SVIDs {
				printX509SVID(w, i, s)
				if write == "" {
					continue
				}
				certs, key, err := s.Marshal()
				if err != nil {
					return err
				}
				if err := writeFiles(write, map[string][]byte{
					"svid." + strconv.Itoa(i) + ".pem": certs,
					"svid." + strconv.Itoa(i) + ".key": key,
				}); err != nil {
					return err
				}
			}
			if write != "" {
				td := xc.SVIDs[0].ID.TrustDomain()
				b, err := xc.Bundles.GetX509BundleForTrustDomain(td)
				if err != nil {
					return err
				}
				var out []byte
				for _, c := range b.X509Authorities() {
					out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
				}
				if err := writeFiles(write, map[string][]byte{"bundle.pem": out}); err != nil {
					return err
				}
				fmt.Fprintf(w, "Written to %s\n", write)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&write, "write", "", "directory to write the SVIDs, keys (mode 0600) and bundle to")
	return cmd
}

func printX509SVID(w io.Writer, i int, s *x509svid.SVID) {
	leaf := s.Certificates[0]
	fmt.Fprintf(w, "SVID %d  %s\n  serial  %s\n  expires %s (in %s)\n", i, s.ID,
		leaf.SerialNumber.Text(16), leaf.NotAfter.UTC().Format(time.RFC3339), time.Until(leaf.NotAfter).Round(time.Second))
	if s.Hint != "" {
		fmt.Fprintf(w, "  hint    %s\n", s.Hint)
	}
}

func writeFiles(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, data := range files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".key") {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, mode); err != nil {
			return err
		}
	}
	return nil
}

func fetchJWTCmd(client clientFunc) *cobra.Command {
	var (
		audience []string
		spiffeID string
	)
	cmd := &cobra.Command{
		Use:   "jwt --audience AUD [--audience AUD...] [--spiffe-id ID]",
		Short: "Fetch JWT-SVIDs for an audience; prints one token per line",
		Args:  cobra.NoArgs,
		RunE: oneShot(client, func(ctx context.Context, cmd *cobra.Command, c *workloadapi.Client) error {
			if len(audience) == 0 {
				return errors.New("--audience is required: a JWT-SVID is only ever for named relying parties")
			}
			var err error
			params := jwtsvid.Params{Audience: audience[0], ExtraAudiences: audience[1:]}
			if spiffeID != "" {
				if params.Subject, err = spiffeid.FromString(spiffeID); err != nil {
					return fmt.Errorf("--spiffe-id: %w", err)
				}
			}
			svids, err := c.FetchJWTSVIDs(ctx, params)
			if err != nil {
				return fmt.Errorf("fetching JWT-SVIDs: %w", err)
			}
			for _, s := range svids {
				fmt.Fprintln(cmd.OutOrStdout(), s.Marshal())
				fmt.Fprintf(cmd.ErrOrStderr(), "%s, expires %s\n", s.ID, s.Expiry.UTC().Format(time.RFC3339))
			}
			return nil
		}),
	}
	cmd.Flags().StringSliceVar(&audience, "audience", nil, "audience (repeatable)")
	cmd.Flags().StringVar(&spiffeID, "spiffe-id", "", "only this identity, when the workload has several")
	return cmd
}

func validateJWTCmd(client clientFunc) *cobra.Command {
	var audience, token string
	cmd := &cobra.Command{
		Use:   "validate --audience AUD --svid TOKEN",
		Short: "Validate a JWT-SVID as a relying party for AUD; prints its SPIFFE ID",
		Args:  cobra.NoArgs,
		RunE: oneShot(client, func(ctx context.Context, cmd *cobra.Command, c *workloadapi.Client) error {
			if audience == "" || token == "" {
				return errors.New("--audience and --svid are required")
			}
			s, err := c.ValidateJWTSVID(ctx, token, audience)
			if err != nil {
				return fmt.Errorf("JWT-SVID is not valid: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Valid JWT-SVID for %s, audience %s, expires %s\n", s.ID, strings.Join(s.Audience, ","), s.Expiry.UTC().Format(time.RFC3339))
			return nil
		}),
	}
	cmd.Flags().StringVar(&audience, "audience", "", "the audience this relying party answers to")
	cmd.Flags().StringVar(&token, "svid", "", "the token")
	return cmd
}

// watchCmd prints every X.509 update the stream pushes until interrupted.
func watchCmd(client clientFunc) *cobra.Command {
	return &cobra.Command{
		Use:   "watch",
		Short: "Print every X.509-SVID update the Workload API pushes, until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			w := cmd.OutOrStdout()
			err = c.WatchX509Context(cmd.Context(), watchPrinter{w: w})
			if cmd.Context().Err() != nil {
				return nil
			}
			return err
		},
	}
}

type watchPrinter struct{ w io.Writer }

func (p watchPrinter) OnX509ContextUpdate(c *workloadapi.X509Context) {
	fmt.Fprintf(p.w, "%s  update: %d SVIDs\n", time.Now().UTC().Format(time.RFC3339Nano), len(c.SVIDs))
	for i, s := range c.SVIDs {
		printX509SVID(p.w, i, s)
	}
}

func (p watchPrinter) OnX509ContextWatchError(err error) {
	fmt.Fprintf(p.w, "%s  error: %v\n", time.Now().UTC().Format(time.RFC3339Nano), err)
}
