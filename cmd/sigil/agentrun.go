package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sigil-pki/sigil/agent"
	"github.com/sigil-pki/sigil/config"
	"github.com/sigil-pki/sigil/identity/workload"
)

// agentRunFlags configure the agent daemon.
type agentRunFlags struct {
	server, caCert, trustDomain, joinToken, nodeID string
	nodeCert, nodeKey, dataDir, socket, sealKey    string
	configFile                                     string
	syncTimeout                                    time.Duration
	noCache                                        bool
}

func (f *agentRunFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", "", "the server's HTTPS URL, e.g. https://sigil.example.org:8443 (env SIGIL_ADDR)")
	fl.StringVar(&f.caCert, "ca-cert", "", "PEM file of the trust domain's roots, which verify the server (env SIGIL_CACERT)")
	fl.StringVar(&f.trustDomain, "trust-domain", "", "the trust domain, e.g. example.org")
	fl.StringVar(&f.joinToken, "join-token", "", "single-use join token from 'sigil agent token create' (env SIGIL_JOIN_TOKEN)")
	fl.StringVar(&f.nodeID, "node-id", "", "this node's ID, when the join token does not name it")
	fl.StringVar(&f.nodeCert, "x509pop-cert", "", "PEM node certificate (and chain) for x509pop attestation")
	fl.StringVar(&f.nodeKey, "x509pop-key", "", "PEM key of the node certificate")
	fl.StringVar(&f.dataDir, "data-dir", "/var/lib/sigil-agent", "the agent's directory: encrypted cache and default socket")
	fl.StringVar(&f.socket, "socket", "", "Workload API socket path (default <data-dir>/workload.sock)")
	fl.StringVar(&f.sealKey, "seal-key", "", "file of the 32-byte key that seals the cache key, created when absent (default <data-dir>/seal.key)")
	fl.DurationVar(&f.syncTimeout, "sync-timeout", agent.DefaultSyncTimeout, "reconnect when the entry sync stream is silent this long (above the server's agents.sync_interval)")
	fl.StringVar(&f.configFile, "config", "", "agent config file: secrets rendered into files (see config/sigil-agent.example.yaml)")
	fl.BoolVar(&f.noCache, "no-cache", false, "keep nothing on disk: after a restart the agent needs the server (and a new join token unless x509pop)")
}

func runAgent(cmd *cobra.Command, f agentRunFlags) error {
	server := strings.TrimRight(envOr(f.server, "SIGIL_ADDR", ""), "/")
	caFile := envOr(f.caCert, "SIGIL_CACERT", "")
	switch {
	case server == "":
		return errors.New("--server is required")
	case caFile == "":
		return errors.New("--ca-cert is required: the roots that verify the server")
	case f.trustDomain == "":
		return errors.New("--trust-domain is required")
	}
	pemRoots, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemRoots) {
		return fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := agent.Config{
		ServerURL: server, ServerRoots: roots, TrustDomain: f.trustDomain,
		JoinToken: envOr(f.joinToken, "SIGIL_JOIN_TOKEN", ""), NodeID: f.nodeID,
		SyncTimeout: f.syncTimeout, Logger: log,
	}
	if f.configFile != "" {
		ac, err := config.LoadAgent(f.configFile)
		if err != nil {
			return err
		}
		cfg.Secrets, cfg.SecretsRefresh = ac.Secrets, ac.Refresh.D()
	}
	if f.nodeCert != "" || f.nodeKey != "" {
		cert, err := tls.LoadX509KeyPair(f.nodeCert, f.nodeKey)
		if err != nil {
			return fmt.Errorf("loading the node certificate: %w", err)
		}
		cfg.NodeCertificate = &cert
	}
	if !f.noCache {
		seal := f.sealKey
		if seal == "" {
			seal = filepath.Join(f.dataDir, "seal.key")
		}
		if cfg.Cache, err = agent.OpenCache(f.dataDir, seal); err != nil {
			return err
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	sock := f.socket
	if sock == "" {
		sock = filepath.Join(f.dataDir, "workload.sock")
	}
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		return err
	}
	l, err := workload.Listen(sock)
	if err != nil {
		return fmt.Errorf("--socket: %w", err)
	}
	return a.Run(cmd.Context(), l)
}
