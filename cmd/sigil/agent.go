package main

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sigil-pki/sigil/server"
)

// agentCmd is the agent itself (run with no subcommand) and the
// operator's commands for agents.
func agentCmd() *cobra.Command {
	var f agentRunFlags
	cmd := &cobra.Command{
		Use:   "agent --server URL --ca-cert F (--join-token T | --x509pop-cert F --x509pop-key F) [--data-dir D] [--socket P] [--config F]",
		Short: "Run a Sigil agent: a local Workload API for this node's workloads; or manage agents (token, list, evict)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAgent(cmd, f)
		},
	}
	f.register(cmd)
	var cf clientFlags
	list, evict := agentListCmd(&cf), agentEvictCmd(&cf)
	cf.registerLocal(list)
	cf.registerLocal(evict)
	cmd.AddCommand(agentTokenCmd(&cf), list, evict)
	return cmd
}

func agentTokenCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Join tokens for agents"}
	var (
		nodeID, ttl string
		groups      []string
	)
	create := &cobra.Command{
		Use:   "create [--node-id ID] [--group G ...] [--ttl D]",
		Short: "Make a single-use join token (shown once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out server.JoinTokenResponse
			if err := cf.do(cmd.Context(), "POST", "/v1/agents/join-tokens", server.JoinTokenRequest{NodeID: nodeID, TTL: ttl, Groups: groups}, &out); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			node := out.NodeID
			if node == "" {
				node = "(named by the agent with --node-id)"
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "node %s, single use, expires %s\n", node, out.ExpiresAt)
			return nil
		},
	}
	create.Flags().StringVar(&nodeID, "node-id", "", "the only node this token admits (default: the agent names its node)")
	create.Flags().StringArrayVar(&groups, "group", nil, "node group the agent joins (repeatable): it gets the entries parented to spiffe://<td>/sigil/nodes/group/<name>")
	create.Flags().StringVar(&ttl, "ttl", "", "lifetime, e.g. 30m (default 1h, at most agents.join_token_max_ttl)")
	cf.registerLocal(create)
	cmd.AddCommand(create)
	return cmd
}

func agentListCmd(cf *clientFlags) *cobra.Command {
	var (
		after string
		limit int
	)
	cmd := &cobra.Command{
		Use:   "list [--limit N] [--after NODE]",
		Short: "List attested agents",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			if after != "" {
				q.Set("after", after)
			}
			var out struct {
				Agents []server.AgentJSON `json:"agents"`
			}
			if err := cf.do(cmd.Context(), "GET", "/v1/agents?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tSPIFFE ID\tATTESTATION\tNODE SELECTORS\tSVID EXPIRES\tEVICTED")
			for _, a := range out.Agents {
				ev := "-"
				if a.EvictedAt != "" {
					ev = a.EvictedAt
				}
				sels := strings.Join(a.Selectors, ",")
				if sels == "" {
					sels = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.NodeID, a.SPIFFEID, a.Attestation, sels, a.NotAfter, ev)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&after, "after", "", "start after this node ID (paging)")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many (1-1000)")
	return cmd
}

func agentEvictCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "evict NODE",
		Short: "Evict an agent: its SVID and every certificate signed for its workloads are revoked, its sync stream ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out server.AgentJSON
			if err := cf.do(cmd.Context(), "POST", "/v1/agents/"+url.PathEscape(args[0])+"/evict", struct{}{}, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "evicted %s (%s) at %s\n", out.NodeID, out.SPIFFEID, out.EvictedAt)
			return nil
		},
	}
}
