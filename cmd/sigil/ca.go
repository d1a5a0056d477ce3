package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sigil-pki/sigil/server"
)

func caCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Issue, revoke and list certificates"}
	var cf clientFlags
	cf.register(cmd)
	cmd.AddCommand(issueCmd(&cf), revokeCmd(&cf), listCmd(&cf), rotateIntermediateCmd(&cf), rotateJWTCmd(&cf), crossCmd(&cf))
	return cmd
}

func issueCmd(cf *clientFlags) *cobra.Command {
	var (
		spiffeID, csrPath, ttl, outDir, profile string
		dns, ips                                []string
	)
	cmd := &cobra.Command{
		Use:   "issue (--spiffe-id ID | --dns NAME... | --csr FILE) [--ttl D] [--out-dir DIR]",
		Short: "Issue a certificate; without --csr a new P-256 key is made here and never leaves this machine",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if spiffeID == "" && csrPath == "" && len(dns) == 0 && len(ips) == 0 {
				return errors.New("say what to issue for: --spiffe-id, --dns/--ip, or --csr")
			}
			var (
				csrPEM []byte
				keyPEM []byte
			)
			if csrPath != "" {
				b, err := os.ReadFile(csrPath)
				if err != nil {
					return fmt.Errorf("reading CSR: %w", err)
				}
				csrPEM = b
			} else {
				key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				if err != nil {
					return err
				}
				tmpl := &x509.CertificateRequest{}
				if spiffeID != "" {
					u, err := url.Parse(spiffeID)
					if err != nil {
						return fmt.Errorf("--spiffe-id: %w", err)
					}
					tmpl.URIs = []*url.URL{u}
				}
				der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
				if err != nil {
					return err
				}
				csrPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
				kder, err := x509.MarshalPKCS8PrivateKey(key)
				if err != nil {
					return err
				}
				keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
				clear(kder)
			}
			var out server.IssueResponse
			req := server.IssueRequest{CSR: string(csrPEM), SPIFFEID: spiffeID, DNSNames: dns, IPAddresses: ips, Profile: profile, TTL: ttl}
			if err := cf.do(cmd.Context(), "POST", "/v1/ca/issue", req, &out); err != nil {
				return err
			}
			if err := os.MkdirAll(outDir, 0o755); err != nil {
				return err
			}
			files := []struct {
				name string
				data []byte
				mode os.FileMode
			}{
				{"cert.pem", []byte(out.Certificate), 0o644},
				{"chain.pem", []byte(out.Chain), 0o644},
				{"fullchain.pem", []byte(out.Certificate + out.Chain), 0o644},
			}
			if keyPEM != nil {
				files = append(files, struct {
					name string
					data []byte
					mode os.FileMode
				}{"key.pem", keyPEM, 0o600})
			}
			for _, f := range files {
				p := filepath.Join(outDir, f.name)
				if err := os.WriteFile(p, f.data, f.mode); err != nil {
					return fmt.Errorf("writing %s: %w", p, err)
				}
				if err := os.Chmod(p, f.mode); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Serial     %s\nNot after  %s\nWritten    %s/{cert,chain,fullchain%s}.pem\n",
				out.Serial, out.NotAfter, outDir, map[bool]string{true: ",key", false: ""}[keyPEM != nil])
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&spiffeID, "spiffe-id", "", "issue an X.509-SVID for this SPIFFE ID")
	fl.StringSliceVar(&dns, "dns", nil, "DNS name (repeatable); issues a tls-server certificate unless --spiffe-id is set")
	fl.StringSliceVar(&ips, "ip", nil, "IP address (repeatable)")
	fl.StringVar(&csrPath, "csr", "", "PEM CSR whose key and names to use")
	fl.StringVar(&profile, "profile", "", "x509-svid or tls-server (default from the names given)")
	fl.StringVar(&ttl, "ttl", "", "lifetime such as 1h (default: the CA's default TTL)")
	fl.StringVar(&outDir, "out-dir", ".", "directory for cert.pem, chain.pem, fullchain.pem and key.pem")
	return cmd
}

func revokeCmd(cf *clientFlags) *cobra.Command {
	var serial, reason string
	cmd := &cobra.Command{
		Use:   "revoke --serial S [--reason R]",
		Short: "Revoke a certificate; the CRL and OCSP answer change at once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := server.ParseReason(reason); err != nil {
				return err
			}
			var out server.CertInfo
			if err := cf.do(cmd.Context(), "POST", "/v1/ca/revoke", server.RevokeRequest{Serial: serial, Reason: reason}, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Revoked %s (%s) at %s: %s\n", out.Serial, out.Subject, out.RevokedAt, out.Reason)
			return nil
		},
	}
	cmd.Flags().StringVar(&serial, "serial", "", "serial number in hex (colons allowed)")
	cmd.Flags().StringVar(&reason, "reason", "unspecified", "RFC 5280 reason: keyCompromise, superseded, cessationOfOperation, affiliationChanged, privilegeWithdrawn, ... or its code")
	cmd.MarkFlagRequired("serial")
	return cmd
}

func listCmd(cf *clientFlags) *cobra.Command {
	var (
		revoked bool
		limit   int
		after   int64
	)
	cmd := &cobra.Command{
		Use:   "list [--revoked] [--limit N] [--after SEQ]",
		Short: "List issued certificates, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			q := url.Values{"limit": {strconv.Itoa(limit)}, "after": {strconv.FormatInt(after, 10)}}
			if revoked {
				q.Set("revoked", "true")
			}
			var out struct {
				Certificates []server.CertInfo `json:"certificates"`
			}
			if err := c.do(cmd.Context(), "GET", "/v1/ca/certs?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tSERIAL\tPROFILE\tSUBJECT\tNOT AFTER\tREVOKED")
			for _, c := range out.Certificates {
				rev := "-"
				if c.RevokedAt != "" {
					rev = c.RevokedAt + " " + c.Reason
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", c.Seq, c.Serial, c.Profile, c.Subject, c.NotAfter, rev)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&revoked, "revoked", false, "only revoked certificates")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many (1-1000)")
	cmd.Flags().Int64Var(&after, "after", 0, "start after this sequence number (paging)")
	return cmd
}

func rotateIntermediateCmd(cf *clientFlags) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rotate [--force]",
		Short: "Make a new intermediate when the active one is due (or now, with --force); the old one stays in the bundle until it expires",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Rotated  bool   `json:"rotated"`
				Active   string `json:"active"`
				NotAfter string `json:"not_after"`
			}
			if err := cf.do(cmd.Context(), "POST", "/v1/ca/rotate?force="+strconv.FormatBool(force), nil, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Rotated %t; active intermediate %s until %s\n", out.Rotated, out.Active, out.NotAfter)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "rotate even if the active intermediate is not due")
	return cmd
}

func crossCmd(cf *clientFlags) *cobra.Command {
	cross := &cobra.Command{Use: "cross", Short: "Cross-certificates: other CAs' certificates for Sigil's root"}
	cross.AddCommand(&cobra.Command{
		Use:   "add FILE",
		Short: "Record another CA's certificate for the root (PEM); ACME downloads then offer the chain through it as rel=\"alternate\"",
		Long: `Record a cross-certificate: a CA certificate with the root's subject and key,
issued by another CA (a corporate root, say). Relying parties that trust only
that CA reach Sigil's certificates through it. ACME certificate downloads link
to the chain ending with it (Link: rel="alternate"), which certbot and lego
pick with --preferred-chain "<that CA's common name>".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pemBytes, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			var out server.CrossAdded
			if err := cf.do(cmd.Context(), "POST", "/v1/ca/cross", server.CrossRequest{Certificate: string(pemBytes)}, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Cross-certificate %s from %s, valid until %s\n", out.ID, out.Issuer, out.NotAfter)
			return nil
		},
	})
	return cross
}

func rotateJWTCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rotate-jwt",
		Short: "Make a new JWT-SVID signing key sign from now on; the old key stays in the bundle until its tokens expire",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				KID string `json:"kid"`
			}
			if err := cf.do(cmd.Context(), "POST", "/v1/jwt/rotate", nil, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "JWT-SVID signing key %s signs from now on\n", out.KID)
			return nil
		},
	}
}
