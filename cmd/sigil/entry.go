package main

import (
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sigil-pki/sigil/server"
)

func entryCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "entry", Short: "Manage SPIFFE registration entries: which workloads get which identity"}
	var cf clientFlags
	cf.register(cmd)
	cmd.AddCommand(entryCreateCmd(&cf), entryListCmd(&cf), entryShowCmd(&cf), entryUpdateCmd(&cf), entryDeleteCmd(&cf))
	return cmd
}

// entryFlags are the settable fields of an entry.
type entryFlags struct {
	spiffeID, parent, hint, x509TTL, jwtTTL string
	selectors, dns                          []string
}

func (f *entryFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.spiffeID, "spiffe-id", "", "SPIFFE ID handed to matching workloads, in this trust domain")
	fl.StringArrayVar(&f.selectors, "selector", nil, "selector a workload must have, e.g. unix:uid:1000 (repeatable; all must match)")
	fl.StringVar(&f.x509TTL, "x509-ttl", "", "X.509-SVID lifetime, e.g. 1h (default: the CA's default TTL)")
	fl.StringVar(&f.jwtTTL, "jwt-ttl", "", "JWT-SVID lifetime, e.g. 5m (default 5m)")
	fl.StringArrayVar(&f.dns, "dns", nil, "DNS name added to the X.509-SVID (repeatable)")
	fl.StringVar(&f.hint, "hint", "", "label telling apart several identities of one workload")
	fl.StringVar(&f.parent, "parent", "", "SPIFFE ID of the agent allowed to obtain this identity")
}

func printEntry(w io.Writer, e server.EntryJSON) {
	fmt.Fprintf(w, "Entry ID      %s\nSPIFFE ID     %s\n", e.ID, e.SPIFFEID)
	if e.ParentID != "" {
		fmt.Fprintf(w, "Parent ID     %s\n", e.ParentID)
	}
	for _, s := range e.Selectors {
		fmt.Fprintf(w, "Selector      %s\n", s)
	}
	fmt.Fprintf(w, "X509-SVID TTL %s\nJWT-SVID TTL  %s\n", e.X509SVIDTTL, e.JWTSVIDTTL)
	for _, d := range e.DNSNames {
		fmt.Fprintf(w, "DNS name      %s\n", d)
	}
	if e.Hint != "" {
		fmt.Fprintf(w, "Hint          %s\n", e.Hint)
	}
	fmt.Fprintf(w, "Revision      %d\nUpdated       %s\n", e.Revision, e.UpdatedAt)
}

func entryCreateCmd(cf *clientFlags) *cobra.Command {
	var f entryFlags
	cmd := &cobra.Command{
		Use:   "create --spiffe-id ID --selector S [--selector S ...] [--x509-ttl D] [--jwt-ttl D] [--dns N] [--hint H] [--parent ID]",
		Short: "Create a registration entry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := server.EntryJSON{SPIFFEID: f.spiffeID, ParentID: f.parent, Selectors: f.selectors,
				X509SVIDTTL: f.x509TTL, JWTSVIDTTL: f.jwtTTL, DNSNames: f.dns, Hint: f.hint}
			var out server.EntryJSON
			if err := cf.do(cmd.Context(), "POST", "/v1/entries", req, &out); err != nil {
				return err
			}
			printEntry(cmd.OutOrStdout(), out)
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

func entryListCmd(cf *clientFlags) *cobra.Command {
	var (
		spiffeID, selector, after string
		limit                     int
	)
	cmd := &cobra.Command{
		Use:   "list [--spiffe-id ID] [--selector S] [--limit N] [--after ENTRY-ID]",
		Short: "List registration entries",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			for k, v := range map[string]string{"spiffe_id": spiffeID, "selector": selector, "after": after} {
				if v != "" {
					q.Set(k, v)
				}
			}
			var out struct {
				Entries []server.EntryJSON `json:"entries"`
			}
			if err := cf.do(cmd.Context(), "GET", "/v1/entries?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ENTRY ID\tSPIFFE ID\tSELECTORS\tX509 TTL\tREVISION")
			for _, e := range out.Entries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", e.ID, e.SPIFFEID, strings.Join(e.Selectors, ","), e.X509SVIDTTL, e.Revision)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&spiffeID, "spiffe-id", "", "only entries for this SPIFFE ID")
	cmd.Flags().StringVar(&selector, "selector", "", "only entries with this selector")
	cmd.Flags().StringVar(&after, "after", "", "start after this entry ID (paging)")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many (1-1000)")
	return cmd
}

func entryShowCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "show ENTRY-ID",
		Short: "Show one registration entry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out server.EntryJSON
			if err := cf.do(cmd.Context(), "GET", "/v1/entries/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			printEntry(cmd.OutOrStdout(), out)
			return nil
		},
	}
}

func entryUpdateCmd(cf *clientFlags) *cobra.Command {
	var f entryFlags
	cmd := &cobra.Command{
		Use:   "update ENTRY-ID [--spiffe-id ID] [--selector S ...] [--x509-ttl D] [--jwt-ttl D] [--dns N ...] [--hint H] [--parent ID]",
		Short: "Change a registration entry; flags given replace those fields, the rest stay",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			path := "/v1/entries/" + url.PathEscape(args[0])
			var cur server.EntryJSON
			if err := c.do(cmd.Context(), "GET", path, nil, &cur); err != nil {
				return err
			}
			set := cmd.Flags().Changed
			if set("spiffe-id") {
				cur.SPIFFEID = f.spiffeID
			}
			if set("selector") {
				cur.Selectors = f.selectors
			}
			if set("x509-ttl") {
				cur.X509SVIDTTL = f.x509TTL
			}
			if set("jwt-ttl") {
				cur.JWTSVIDTTL = f.jwtTTL
			}
			if set("dns") {
				cur.DNSNames = f.dns
			}
			if set("hint") {
				cur.Hint = f.hint
			}
			if set("parent") {
				cur.ParentID = f.parent
			}
			cur.ID, cur.CreatedAt, cur.UpdatedAt = "", "", ""
			var out server.EntryJSON
			if err := c.do(cmd.Context(), "PUT", path, cur, &out); err != nil {
				return err
			}
			printEntry(cmd.OutOrStdout(), out)
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

func entryDeleteCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ENTRY-ID",
		Short: "Delete a registration entry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.do(cmd.Context(), "DELETE", "/v1/entries/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Deleted entry %s\n", args[0])
			return nil
		},
	}
}
