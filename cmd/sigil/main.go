// Command sigil is Sigil's single binary: the server, the dev mode, and the
// client commands an operator uses against a running server. It is the only
// place that reads flags, environment variables and the config file.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sigil-pki/sigil/config"
	"github.com/sigil-pki/sigil/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error: "+oneLine(err))
		os.Exit(1)
	}
}

// oneLine keeps an error to a single line for the terminal.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "sigil",
		Short:         "Sigil: certificate authority, SPIFFE identities, secrets, one audit trail",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.AddCommand(serverCmd(), devCmd(), operatorCmd(), caCmd(), entryCmd(), logCmd(), workloadCmd(), secretCmd(), policyCmd(), databaseCmd(), leaseCmd(), acmeCmd(), agentCmd())
	return root
}

func serverCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "server --config FILE",
		Short: "Run a Sigil server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			srv, cfg, err := openServer(cmd, path)
			if err != nil {
				return err
			}
			defer srv.Close()
			st, err := srv.Status(cmd.Context())
			if err != nil {
				return err
			}
			if !st.Initialized {
				newLogger(cfg.Log).Warn("Sigil is not initialised: stop it and run 'sigil operator init --config " + path + "'")
			}
			l, err := srv.Listen()
			if err != nil {
				return err
			}
			return srv.Serve(cmd.Context(), l)
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "path to the YAML config file (see config/sigil.example.yaml)")
	cmd.MarkFlagRequired("config")
	return cmd
}

// openServer loads the config file, reads the secrets it names and opens
// the server (storage, token, seal) without listening.
func openServer(cmd *cobra.Command, path string) (*server.Server, config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, cfg, err
	}
	opts, err := resolveOptions(cfg, newLogger(cfg.Log))
	if err != nil {
		return nil, cfg, err
	}
	srv, err := server.New(cmd.Context(), cfg, opts)
	return srv, cfg, err
}

// resolveOptions reads the secrets the config refers to.
func resolveOptions(cfg config.Config, log *slog.Logger) (server.Options, error) {
	opts := server.Options{Logger: log}
	if cfg.HSM.Module != "" {
		switch {
		case cfg.HSM.PINFile != "":
			b, err := os.ReadFile(cfg.HSM.PINFile)
			if err != nil {
				return opts, fmt.Errorf("hsm.pin_file: %w", err)
			}
			opts.HSMPIN = strings.TrimSpace(string(b))
		case cfg.HSM.PINEnv != "":
			opts.HSMPIN = os.Getenv(cfg.HSM.PINEnv)
			if opts.HSMPIN == "" {
				return opts, fmt.Errorf("hsm.pin_env: environment variable %s is empty", cfg.HSM.PINEnv)
			}
		}
	}
	if f := cfg.Storage.Postgres.PasswordFile; cfg.Storage.Type == "postgres" && f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return opts, fmt.Errorf("storage.postgres.password_file: %w", err)
		}
		opts.PostgresPassword = strings.TrimSpace(string(b))
	}
	return opts, nil
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		level = slog.LevelInfo
	}
	ho := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, ho))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, ho))
}
