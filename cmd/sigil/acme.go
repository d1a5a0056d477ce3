package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sigil-pki/sigil/server"
)

func acmeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "acme", Short: "Manage the ACME server (operator)"}
	var cf clientFlags
	cf.register(cmd)
	eab := &cobra.Command{Use: "eab", Short: "External account binding keys"}
	var (
		spiffeID string
		domains  []string
	)
	create := &cobra.Command{
		Use:   "create [--spiffe-id ID] [--domain NAME]...",
		Short: "Make an external account binding key; the HMAC key is shown once (certbot --eab-kid/--eab-hmac-key, lego --eab --kid/--hmac)",
		Long: `Make an external account binding key. With --spiffe-id, accounts created
with it may order the x509-svid profile: certificates carrying that SPIFFE ID
as their URI SAN alongside the order's DNS names. With --domain (repeatable),
accounts created with it may order only those names and the names under them
(each must be inside ca.dns_domains); anything else is refused with
rejectedIdentifier.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var k server.EABKey
			if err := cf.do(cmd.Context(), "POST", "/v1/acme/eab", server.EABRequest{SPIFFEID: spiffeID, Domains: domains}, &k); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Key ID    %s\nHMAC key  %s\n", k.KeyID, k.HMACKey)
			if k.SPIFFEID != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "SPIFFE ID %s\n", k.SPIFFEID)
			}
			if len(k.Domains) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "Domains   %s\n", strings.Join(k.Domains, ", "))
			}
			return nil
		},
	}
	create.Flags().StringVar(&spiffeID, "spiffe-id", "", "bind the key's accounts to this SPIFFE ID (enables the x509-svid profile)")
	create.Flags().StringArrayVar(&domains, "domain", nil, "limit the key's accounts to this domain and the names under it (repeatable)")
	eab.AddCommand(create)
	cmd.AddCommand(eab)
	return cmd
}
