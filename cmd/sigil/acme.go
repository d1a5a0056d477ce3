package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sigil-pki/sigil/server"
)

func acmeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "acme", Short: "Manage the ACME server (operator)"}
	var cf clientFlags
	cf.register(cmd)
	eab := &cobra.Command{Use: "eab", Short: "External account binding keys"}
	eab.AddCommand(&cobra.Command{
		Use:   "create",
		Short: "Make an external account binding key; the HMAC key is shown once (certbot --eab-kid/--eab-hmac-key, lego --eab --kid/--hmac)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var k server.EABKey
			if err := c.do(cmd.Context(), "POST", "/v1/acme/eab", nil, &k); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Key ID    %s\nHMAC key  %s\n", k.KeyID, k.HMACKey)
			return nil
		},
	})
	cmd.AddCommand(eab)
	return cmd
}
