package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/sigil-pki/sigil/server"
	"github.com/sigil-pki/sigil/tlog"
)

// entriesPerBundle is the width of a full entry bundle (tlog-tiles).
const entriesPerBundle = 256

func logCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "log", Short: "Read and verify the transparency log"}
	var cf clientFlags
	cf.register(cmd)
	cmd.AddCommand(logKeyCmd(&cf), logVerifyCmd(&cf), logShowCmd(&cf))
	return cmd
}

func logKeyCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "key",
		Short: "Print the note verifier key of the log's checkpoints",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			b, err := c.raw(cmd.Context(), "/log/key")
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), string(b))
			return nil
		},
	}
}

// logState is what `sigil log verify` remembers between runs: the last
// checkpoint it verified.
type logState struct {
	Origin string `json:"origin"`
	Size   int64  `json:"size"`
	Root   []byte `json:"root"`
}

func logVerifyCmd(cf *clientFlags) *cobra.Command {
	var (
		key, keyFile, statePath, certPath string
		index                             int64
	)
	cmd := &cobra.Command{
		Use:   "verify [--cert leaf.pem | --index I] [--state FILE]",
		Short: "Verify the checkpoint's signature, its consistency with the last one seen, and an entry's inclusion",
		Long: `Fetches the latest checkpoint and checks its signature with the verifier key,
then proves it consistent with the checkpoint kept in the state file (a fork
or a rollback fails), then, with --cert or --index, proves that entry included.
Proofs are checked with transparency-dev/merkle's verifier, independently of
the code that built the tree.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			verifier, err := logVerifier(key, keyFile)
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			text, err := c.raw(ctx, "/log/checkpoint")
			if err != nil {
				return err
			}
			cp, err := tlog.VerifyCheckpoint(text, verifier)
			if err != nil {
				return fmt.Errorf("checkpoint does not verify with the log key: %w", err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Checkpoint    %s, size %d, root %s (signature OK)\n", cp.Origin, cp.Size, base64.StdEncoding.EncodeToString(cp.Root[:]))

			var prev logState
			if statePath != "" {
				if b, err := os.ReadFile(statePath); err == nil {
					if err := json.Unmarshal(b, &prev); err != nil {
						return fmt.Errorf("state file %s: %w", statePath, err)
					}
				} else if !errors.Is(err, os.ErrNotExist) {
					return err
				}
			}
			if prev.Size > 0 {
				if err := checkConsistency(cmd, c, prev, cp); err != nil {
					return err
				}
				fmt.Fprintf(out, "Consistent    with size %d seen before\n", prev.Size)
			}

			if certPath != "" || cmd.Flags().Changed("index") {
				var entry []byte
				if certPath != "" {
					index, entry, err = findCertEntry(cmd, c, certPath, cp.Size)
				} else {
					entry, err = fetchEntry(cmd, c, index, cp.Size)
				}
				if err != nil {
					return err
				}
				leaf := rfc6962.DefaultHasher.HashLeaf(entry)
				var pr server.ProofResponse
				if err := c.do(ctx, "GET", fmt.Sprintf("/log/proof/inclusion?index=%d&size=%d", index, cp.Size), nil, &pr); err != nil {
					return fmt.Errorf("entry %d: fetching its inclusion proof: %w", index, err)
				}
				hashes, err := decodeHashes(pr.Hashes)
				if err != nil {
					return fmt.Errorf("entry %d: %w", index, err)
				}
				if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(index), uint64(cp.Size), leaf, hashes, cp.Root[:]); err != nil {
					return fmt.Errorf("entry %d is not included in the tree of size %d: its proof does not lead to the signed root (the entry or a tile was altered)", index, cp.Size)
				}
				e, err := tlog.ParseEntry(entry)
				if err != nil {
					return fmt.Errorf("entry %d does not decode: %w", index, err)
				}
				fmt.Fprintf(out, "Included      entry %d: %s\n", index, describeEntry(e))
			}
			if statePath != "" {
				b, _ := json.MarshalIndent(logState{Origin: cp.Origin, Size: cp.Size, Root: cp.Root[:]}, "", "  ")
				if err := os.MkdirAll(filepath.Dir(statePath), 0o700); err != nil {
					return err
				}
				if err := os.WriteFile(statePath, append(b, '\n'), 0o600); err != nil {
					return fmt.Errorf("saving state: %w", err)
				}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&key, "key", "", "note verifier key of the log (env SIGIL_LOG_KEY; print it with 'sigil log key')")
	fl.StringVar(&keyFile, "key-file", "", "file holding the verifier key")
	fl.StringVar(&statePath, "state", defaultStatePath(), "file keeping the last verified checkpoint ('' to keep none)")
	fl.StringVar(&certPath, "cert", "", "PEM certificate whose issuance entry must be in the log")
	fl.Int64Var(&index, "index", 0, "index of an entry that must be in the log")
	return cmd
}

func defaultStatePath() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".sigil", "log-state.json")
}

func logVerifier(key, keyFile string) (note.Verifier, error) {
	if key == "" && keyFile != "" {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, err
		}
		key = strings.TrimSpace(string(b))
	}
	if key == "" {
		key = os.Getenv("SIGIL_LOG_KEY")
	}
	if key == "" {
		return nil, errors.New("need the log's verifier key: --key, --key-file or SIGIL_LOG_KEY (dev.json's log_public_key, or 'sigil log key')")
	}
	v, err := note.NewVerifier(key)
	if err != nil {
		return nil, fmt.Errorf("verifier key: %w", err)
	}
	return v, nil
}

func checkConsistency(cmd *cobra.Command, c *client, prev logState, cp tlog.Checkpoint) error {
	switch {
	case prev.Origin != cp.Origin:
		return fmt.Errorf("the checkpoint is for log %q, the state file for %q", cp.Origin, prev.Origin)
	case cp.Size < prev.Size:
		return fmt.Errorf("the log shrank from size %d to %d: rollback or fork", prev.Size, cp.Size)
	case cp.Size == prev.Size:
		if !bytes.Equal(prev.Root, cp.Root[:]) {
			return fmt.Errorf("fork: two different roots for size %d", cp.Size)
		}
		return nil
	}
	var pr server.ProofResponse
	if err := c.do(cmd.Context(), "GET", fmt.Sprintf("/log/proof/consistency?from=%d&to=%d", prev.Size, cp.Size), nil, &pr); err != nil {
		return fmt.Errorf("fetching the consistency proof from %d to %d: %w", prev.Size, cp.Size, err)
	}
	hashes, err := decodeHashes(pr.Hashes)
	if err != nil {
		return err
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(prev.Size), uint64(cp.Size), hashes, prev.Root, cp.Root[:]); err != nil {
		return fmt.Errorf("fork: the tree of size %d does not extend the tree of size %d seen before", cp.Size, prev.Size)
	}
	return nil
}

func decodeHashes(in []string) ([][]byte, error) {
	out := make([][]byte, len(in))
	for i, h := range in {
		b, err := base64.StdEncoding.DecodeString(h)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("proof hash %d is not a base64 SHA-256", i)
		}
		out[i] = b
	}
	return out, nil
}

// fetchBundle returns the entries of bundle n of a tree of the given size.
func fetchBundle(cmd *cobra.Command, c *client, n, size int64) ([][]byte, error) {
	width := min(size-n*entriesPerBundle, entriesPerBundle)
	p := tlog.TilePath{Entries: true, Index: n}
	if width < entriesPerBundle {
		p.Width = int(width)
	}
	b, err := c.raw(cmd.Context(), "/log/"+p.String())
	if err != nil {
		return nil, fmt.Errorf("fetching entries %d to %d: %w", n*entriesPerBundle, n*entriesPerBundle+width-1, err)
	}
	var entries [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, fmt.Errorf("entry bundle %d is truncated", n)
		}
		l := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+l {
			return nil, fmt.Errorf("entry bundle %d is truncated", n)
		}
		entries = append(entries, b[2:2+l])
		b = b[2+l:]
	}
	if int64(len(entries)) != width {
		return nil, fmt.Errorf("entry bundle %d holds %d entries, want %d", n, len(entries), width)
	}
	return entries, nil
}

func fetchEntry(cmd *cobra.Command, c *client, index, size int64) ([]byte, error) {
	if index < 0 || index >= size {
		return nil, fmt.Errorf("entry %d is beyond the log (size %d)", index, size)
	}
	entries, err := fetchBundle(cmd, c, index/entriesPerBundle, size)
	if err != nil {
		return nil, err
	}
	return entries[index%entriesPerBundle], nil
}

// findCertEntry scans the log from its end for the issuance of the
// certificate in certPath.
func findCertEntry(cmd *cobra.Command, c *client, certPath string, size int64) (int64, []byte, error) {
	b, err := os.ReadFile(certPath)
	if err != nil {
		return 0, nil, err
	}
	cert, err := firstCert(b)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", certPath, err)
	}
	want := sha256.Sum256(cert.Raw)
	for n := (size - 1) / entriesPerBundle; n >= 0 && size > 0; n-- {
		entries, err := fetchBundle(cmd, c, n, size)
		if err != nil {
			return 0, nil, err
		}
		for i := len(entries) - 1; i >= 0; i-- {
			e, err := tlog.ParseEntry(entries[i])
			if err != nil {
				return 0, nil, fmt.Errorf("entry %d does not decode: %w", n*entriesPerBundle+int64(i), err)
			}
			if e.Subject.CertSHA256 == want && strings.HasSuffix(e.Kind, ".issue") {
				return n*entriesPerBundle + int64(i), entries[i], nil
			}
		}
	}
	return 0, nil, fmt.Errorf("no issuance of %s (SHA-256 %s) in the log of size %d", certPath, hex.EncodeToString(want[:]), size)
}

func describeEntry(e tlog.Entry) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s by %s", e.Time.UTC().Format("2006-01-02T15:04:05.000Z"), e.Kind, e.Actor)
	s := e.Subject
	if s.Serial != "" {
		fmt.Fprintf(&b, " serial=%s", s.Serial)
	}
	if s.CertSHA256 != ([32]byte{}) {
		fmt.Fprintf(&b, " cert_sha256=%s", hex.EncodeToString(s.CertSHA256[:]))
	}
	if s.Path != "" {
		fmt.Fprintf(&b, " path=%s", s.Path)
	}
	if s.Version != 0 {
		fmt.Fprintf(&b, " version=%d", s.Version)
	}
	if s.Detail != "" {
		fmt.Fprintf(&b, " (%s)", s.Detail)
	}
	if e.Outcome.Denied {
		fmt.Fprintf(&b, " DENIED: %s", e.Outcome.Reason)
	}
	return b.String()
}

func logShowCmd(cf *clientFlags) *cobra.Command {
	var (
		from, limit int64
		kind        string
	)
	cmd := &cobra.Command{
		Use:   "show [--from I] [--kind K] [--limit N]",
		Short: "Print decoded log entries",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			text, err := c.raw(cmd.Context(), "/log/checkpoint")
			if err != nil {
				return err
			}
			// Only the size is needed here; verify checks the signature.
			body, _, _ := bytes.Cut(text, []byte("\n\n"))
			cp, err := tlog.ParseCheckpoint(append(body, '\n'))
			if err != nil {
				return fmt.Errorf("checkpoint: %w", err)
			}
			shown := int64(0)
			for i := from; i < cp.Size && (limit <= 0 || shown < limit); {
				n := i / entriesPerBundle
				entries, err := fetchBundle(cmd, c, n, cp.Size)
				if err != nil {
					return err
				}
				for ; i < (n+1)*entriesPerBundle && i < cp.Size && (limit <= 0 || shown < limit); i++ {
					e, err := tlog.ParseEntry(entries[i%entriesPerBundle])
					if err != nil {
						return fmt.Errorf("entry %d does not decode: %w", i, err)
					}
					if kind != "" && e.Kind != kind {
						continue
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%d\t%s\n", i, describeEntry(e))
					shown++
				}
			}
			return nil
		},
	}
	cmd.Flags().Int64Var(&from, "from", 0, "first index")
	cmd.Flags().Int64Var(&limit, "limit", 0, "at most this many entries (0: all)")
	cmd.Flags().StringVar(&kind, "kind", "", "only entries of this kind, e.g. x509.issue")
	return cmd
}
