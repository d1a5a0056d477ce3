package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sigil-pki/sigil/server"
)

// maxPasswordInput bounds an admin password read from a file or stdin.
const maxPasswordInput = 64 << 10

func databaseCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "database",
		Short: "Database credentials: connections and roles (operator), credentials under leases (workload)",
		Long: `The database secrets engine, with Vault's paths and fields.

As the operator (--client-cert/--client-key or SIGIL_CLIENT_CERT/
SIGIL_CLIENT_KEY, like 'sigil entry'):
  config        connections to PostgreSQL or MySQL/MariaDB and their admin user
  role          dynamic roles: statements that create a user for each request
  static-role   static roles: existing users whose password Sigil rotates

As a workload, with an X.509-SVID picked as for 'sigil secret' (--socket,
--cert/--key, SPIFFE_ENDPOINT_SOCKET, SIGIL_CLIENT_CERT/SIGIL_CLIENT_KEY):
  creds         a new user and password under a lease ('sigil lease' renews
                and revokes it)
  static-creds  a static role's current password

Passwords are printed to stdout, and only by creds and static-creds.`,
	}
	cmd.AddCommand(dbConfigCmd(), dbRoleCmd(), dbStaticRoleCmd(), dbCredsCmd(), dbStaticCredsCmd())
	return cmd
}

// escapePath escapes each segment of a slash-separated path.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// dbPath is the API path of a database object: config, roles or
// static-roles, and its name.
func dbPath(kind, name string) string {
	return "/v1/database/" + kind + "/" + url.PathEscape(name)
}

// dbKind names one kind of object of the database engine for the shared
// list, read and delete commands.
type dbKind struct {
	api  string // path segment: config, roles, static-roles
	noun string // for messages: connection, role, static role
}

var (
	kindConfig = dbKind{"config", "connection"}
	kindRole   = dbKind{"roles", "role"}
	kindStatic = dbKind{"static-roles", "static role"}
)

func dbListCmd(cf *clientFlags, k dbKind) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List " + k.noun + " names, one per line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			var out struct {
				Data struct {
					Keys []string `json:"keys"`
				} `json:"data"`
			}
			if err := cf.do(cmd.Context(), "GET", "/v1/database/"+k.api, nil, &out); err != nil {
				return fmt.Errorf("listing %ss: %w", k.noun, err)
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), out.Data.Keys)
			}
			for _, n := range out.Data.Keys {
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "table", "table (one name a line) or json")
	return cmd
}

func dbDeleteCmd(cf *clientFlags, k dbKind, short string) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.do(cmd.Context(), "DELETE", dbPath(k.api, args[0]), nil, nil); err != nil {
				return fmt.Errorf("deleting %s %s: %w", k.noun, args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Deleted %s %s\n", k.noun, args[0])
			return nil
		},
	}
}

// dbReadCmd reads one object into a value of type T and prints it with
// show, or as JSON.
func dbReadCmd[T any](cf *clientFlags, k dbKind, show func(w io.Writer, name string, v T)) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "read NAME",
		Short: "Show a " + k.noun,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			var out struct {
				Data T `json:"data"`
			}
			if err := cf.do(cmd.Context(), "GET", dbPath(k.api, args[0]), nil, &out); err != nil {
				return fmt.Errorf("reading %s %s: %w", k.noun, args[0], err)
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), out.Data)
			}
			show(cmd.OutOrStdout(), args[0], out.Data)
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	return cmd
}

// orNone is s, or "-" when empty.
func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printStatements prints one label line per statement, "-" for none.
func printStatements(w io.Writer, label string, stmts []string) {
	if len(stmts) == 0 {
		fmt.Fprintf(w, "%s-\n", label)
	}
	indent := "\n" + strings.Repeat(" ", len(label))
	for _, s := range stmts {
		fmt.Fprintf(w, "%s%s\n", label, strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", indent))
	}
}

func dbConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Manage connections to databases (operator)",
		Long: `Manage the connections of the database engine (operator identity).

A connection names a database, the admin user Sigil creates users with, and
the roles allowed to use it. The admin password is read from a file or
stdin, never from the command line; write it into the URL as {{password}}
(and the user as {{username}}):

  sigil database config write app-db --plugin mysql \
      --url '{{username}}:{{password}}@tcp(db.internal:3306)/' \
      --username sigil --password-file /run/secrets/db-admin --allowed-roles app-ro`,
	}
	var cf clientFlags
	cf.register(cmd)
	cmd.AddCommand(dbConfigWriteCmd(&cf),
		dbReadCmd(&cf, kindConfig, printConnection),
		dbListCmd(&cf, kindConfig),
		dbDeleteCmd(&cf, kindConfig, "Forget a connection; users created through it stay until their leases end"),
		dbRotateRootCmd(&cf))
	return cmd
}

// connectionJSON is a connection as GET /v1/database/config/NAME shows it.
type connectionJSON struct {
	Plugin       string   `json:"plugin_name"`
	URL          string   `json:"connection_url"`
	Username     string   `json:"username"`
	AllowedRoles []string `json:"allowed_roles"`
	MaxOpenConns int      `json:"max_open_connections"`
}

func printConnection(w io.Writer, name string, c connectionJSON) {
	maxOpen := "driver default"
	if c.MaxOpenConns > 0 {
		maxOpen = fmt.Sprint(c.MaxOpenConns)
	}
	fmt.Fprintf(w, "Connection      %s\nPlugin          %s\nURL             %s\nUsername        %s\nAllowed roles   %s\nMax open conns  %s\n",
		name, c.Plugin, c.URL, orNone(c.Username), orNone(strings.Join(c.AllowedRoles, ",")), maxOpen)
}

func dbConfigWriteCmd(cf *clientFlags) *cobra.Command {
	var (
		req           server.DBConfigRequest
		passwordFile  string
		passwordStdin bool
	)
	cmd := &cobra.Command{
		Use:   "write NAME --plugin postgres|mysql --url URL [--username U] [--password-file F | --password-stdin] --allowed-roles R1,R2",
		Short: "Create or replace a connection; the server connects to check it first",
		Long: `Create or replace a connection. The server connects with it before storing
it, and refuses it if it cannot.

The admin password comes from --password-file F (the whole file, one
trailing newline removed; an empty file is an empty password) or from
stdin with --password-stdin. The URL must then hold {{password}} where the
password goes. A URL with a password written into it is refused: command
lines are visible to every user in ps.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, given, err := readAdminPassword(cmd.InOrStdin(), passwordFile, passwordStdin)
			if err != nil {
				return err
			}
			if inlinePassword(req.URL) {
				return errors.New("--url holds a password; write {{password}} there and give the password with --password-file or --password-stdin")
			}
			if given && !strings.Contains(req.URL, "{{password}}") {
				return errors.New("a password is given but --url has no {{password}} to put it in, e.g. {{username}}:{{password}}@tcp(host:3306)/")
			}
			if req.MaxOpenConns < 0 {
				return errors.New("--max-open-connections is 0 (the driver's default) or more")
			}
			req.Password = pw
			if err := cf.do(cmd.Context(), "POST", dbPath("config", args[0]), req, nil); err != nil {
				return fmt.Errorf("writing connection %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Wrote connection %s\n", args[0])
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&req.Plugin, "plugin", "", "postgres or mysql (MariaDB too)")
	fl.StringVar(&req.URL, "url", "", "connection URL or DSN, with {{username}} and {{password}} for the admin user")
	fl.StringVar(&req.Username, "username", "", "admin user, put in place of {{username}}")
	fl.StringVar(&passwordFile, "password-file", "", "file holding the admin password (may be empty)")
	fl.BoolVar(&passwordStdin, "password-stdin", false, "read the admin password from stdin")
	fl.StringSliceVar(&req.AllowedRoles, "allowed-roles", nil, "roles (dynamic and static) that may use this connection, comma-separated; * for all")
	fl.IntVar(&req.MaxOpenConns, "max-open-connections", 0, "connections the server keeps open at most (0: the driver's default)")
	cmd.MarkFlagRequired("plugin")
	cmd.MarkFlagRequired("url")
	return cmd
}

// readAdminPassword reads the password from file or stdin; given reports
// whether one was (an empty one counts).
func readAdminPassword(stdin io.Reader, file string, fromStdin bool) (pw string, given bool, err error) {
	var r io.Reader
	what := "stdin"
	switch {
	case file != "" && fromStdin:
		return "", false, errors.New("--password-file and --password-stdin each give the password; give one")
	case fromStdin:
		r = stdin
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return "", false, fmt.Errorf("reading the admin password: %w", err)
		}
		defer f.Close()
		r, what = f, file
	default:
		return "", false, nil
	}
	b, err := io.ReadAll(io.LimitReader(r, maxPasswordInput+1))
	if err != nil {
		return "", false, fmt.Errorf("reading the admin password from %s: %w", what, err)
	}
	if len(b) > maxPasswordInput {
		return "", false, fmt.Errorf("the admin password in %s is over %d bytes", what, maxPasswordInput)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	return string(b), true, nil
}

// pwSentinel stands in for {{password}} while a URL is inspected.
const pwSentinel = "SIGILPASSWORDSENTINEL"

var kvPassword = regexp.MustCompile(`(?:^|\s)password\s*=\s*('[^']*'|\S*)`)

// inlinePassword reports whether a connection URL or DSN has a password
// written into it rather than {{password}}: in a URL's user information,
// in a go-sql-driver DSN's user:password@, or in a key=value password=.
func inlinePassword(u string) bool {
	s := strings.NewReplacer("{{username}}", "user", "{{password}}", pwSentinel).Replace(u)
	literal := func(pw string) bool { return pw != "" && pw != pwSentinel && pw != "'"+pwSentinel+"'" }
	switch {
	case strings.Contains(s, "://"):
		p, err := url.Parse(s)
		if err != nil {
			return false
		}
		if q := p.Query(); q.Has("password") && literal(q.Get("password")) {
			return true
		}
		if p.User == nil {
			return false
		}
		pw, ok := p.User.Password()
		return ok && literal(pw)
	case strings.Contains(s, "@"):
		_, pw, ok := strings.Cut(s[:strings.LastIndex(s, "@")], ":")
		return ok && literal(pw)
	}
	m := kvPassword.FindStringSubmatch(s)
	return m != nil && literal(m[1])
}

func dbRotateRootCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rotate-root NAME",
		Short: "Give the connection's admin user a new password that only Sigil knows",
		Long: `Give the connection's admin user a new random password, set in the database
and stored sealed; from then on only Sigil knows it. The URL must hold
{{username}} and {{password}}, and the connection a username.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.do(cmd.Context(), "POST", "/v1/database/rotate-root/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return fmt.Errorf("rotating the admin password of %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Rotated the admin password of connection %s\n", args[0])
			return nil
		},
	}
}

// statementArgs expands statement flags: a value starting with @ names a
// file whose content is the statement.
func statementArgs(flag string, vals []string) ([]string, error) {
	out := make([]string, 0, len(vals))
	for _, v := range vals {
		if name, ok := strings.CutPrefix(v, "@"); ok {
			b, err := os.ReadFile(name)
			if err != nil {
				return nil, fmt.Errorf("--%s: %w", flag, err)
			}
			v = string(b)
		}
		if strings.TrimSpace(v) == "" {
			return nil, fmt.Errorf("--%s: an empty statement", flag)
		}
		out = append(out, v)
	}
	return out, nil
}

// durationFlag checks a duration flag and returns it in Go's form ("" when
// not given).
func durationFlag(cmd *cobra.Command, name, v string) (string, error) {
	if !cmd.Flags().Changed(name) {
		return "", nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", name, err)
	}
	if d < time.Second {
		return "", fmt.Errorf("--%s: %v is under a second", name, d)
	}
	return d.String(), nil
}

func dbRoleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "role",
		Short: "Manage dynamic roles: statements that create a database user per request (operator)",
		Long: `Manage dynamic roles (operator identity). Each 'sigil database creds ROLE'
runs the role's creation statements with a new user name and password, and
starts a lease; when the lease ends, by expiry or revocation, the
revocation statements run (by default MySQL's users are dropped; for
PostgreSQL give revocation statements).

Statements may use {{name}} (or {{username}}), {{password}} and
{{expiration}} (creation and renewal only). A statement flag whose value
starts with @ names a file holding the statement.`,
	}
	var cf clientFlags
	cf.register(cmd)
	cmd.AddCommand(dbRoleWriteCmd(&cf),
		dbReadCmd(&cf, kindRole, printRole),
		dbListCmd(&cf, kindRole),
		dbDeleteCmd(&cf, kindRole, "Delete a dynamic role; its leases stay until they expire or are revoked"))
	return cmd
}

// roleJSON is a dynamic role in the API, in Vault's field names.
type roleJSON struct {
	DB               string   `json:"db_name"`
	Creation         []string `json:"creation_statements"`
	Revocation       []string `json:"revocation_statements,omitempty"`
	Renewal          []string `json:"renew_statements,omitempty"`
	DefaultTTL       string   `json:"default_ttl,omitempty"`
	MaxTTL           string   `json:"max_ttl,omitempty"`
	UsernameTemplate string   `json:"username_template,omitempty"`
}

// ttlText shows a role's TTL, "server default" when unset.
func ttlText(s string) string {
	if d, err := time.ParseDuration(s); s == "" || err == nil && d == 0 {
		return "server default"
	}
	return s
}

func printRole(w io.Writer, name string, r roleJSON) {
	fmt.Fprintf(w, "Role               %s\nConnection         %s\nDefault TTL        %s\nMax TTL            %s\nUsername template  %s\n",
		name, r.DB, ttlText(r.DefaultTTL), ttlText(r.MaxTTL), orNone(r.UsernameTemplate))
	printStatements(w, "Creation           ", r.Creation)
	printStatements(w, "Revocation         ", r.Revocation)
	printStatements(w, "Renewal            ", r.Renewal)
}

func dbRoleWriteCmd(cf *clientFlags) *cobra.Command {
	var (
		r                     roleJSON
		defaultTTL, maxTTL    string
		creation, revoke, ren []string
	)
	cmd := &cobra.Command{
		Use:   "write NAME --db CONN --creation-statement S [...] [--revocation-statement S ...] [--renew-statement S ...] [--default-ttl D] [--max-ttl D] [--username-template T]",
		Short: "Create or replace a dynamic role",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if r.Creation, err = statementArgs("creation-statement", creation); err != nil {
				return err
			}
			if r.Revocation, err = statementArgs("revocation-statement", revoke); err != nil {
				return err
			}
			if r.Renewal, err = statementArgs("renew-statement", ren); err != nil {
				return err
			}
			if r.DefaultTTL, err = durationFlag(cmd, "default-ttl", defaultTTL); err != nil {
				return err
			}
			if r.MaxTTL, err = durationFlag(cmd, "max-ttl", maxTTL); err != nil {
				return err
			}
			if err := cf.do(cmd.Context(), "POST", dbPath("roles", args[0]), r, nil); err != nil {
				return fmt.Errorf("writing role %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Wrote role %s\n", args[0])
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&r.DB, "db", "", "connection the role creates users through")
	fl.StringArrayVar(&creation, "creation-statement", nil, "statement creating the user (repeatable, run in order; @FILE reads a file)")
	fl.StringArrayVar(&revoke, "revocation-statement", nil, "statement dropping the user (repeatable; default for MySQL: drop the user)")
	fl.StringArrayVar(&ren, "renew-statement", nil, "statement run when a lease is renewed (repeatable)")
	fl.StringVar(&defaultTTL, "default-ttl", "", "lease duration, e.g. 1h (default: the server's, 1h)")
	fl.StringVar(&maxTTL, "max-ttl", "", "no renewal goes past this long after the lease began, e.g. 24h (default: the server's, 24h)")
	fl.StringVar(&r.UsernameTemplate, "username-template", "", "Go template of user names, e.g. 'v-{{.RoleName}}-{{random 8}}' (default: the server's)")
	cmd.MarkFlagRequired("db")
	cmd.MarkFlagRequired("creation-statement")
	return cmd
}

func dbStaticRoleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "static-role",
		Short: "Manage static roles: existing database users whose password Sigil rotates (operator)",
		Long: `Manage static roles (operator identity). A static role is an existing
database user; Sigil sets a new random password when the role is written,
every rotation period, and on 'rotate'. Workloads read the current one with
'sigil database static-creds ROLE'. The connection must allow the role.`,
	}
	var cf clientFlags
	cf.register(cmd)
	cmd.AddCommand(dbStaticWriteCmd(&cf),
		dbReadCmd(&cf, kindStatic, printStaticRole),
		dbListCmd(&cf, kindStatic),
		dbDeleteCmd(&cf, kindStatic, "Delete a static role; the user and its current password stay in the database"),
		dbStaticRotateCmd(&cf))
	return cmd
}

// staticRoleJSON is a static role in the API, in Vault's field names.
type staticRoleJSON struct {
	DB             string   `json:"db_name"`
	Username       string   `json:"username"`
	RotationPeriod string   `json:"rotation_period"`
	Rotation       []string `json:"rotation_statements,omitempty"`
}

func printStaticRole(w io.Writer, name string, r staticRoleJSON) {
	fmt.Fprintf(w, "Static role      %s\nConnection       %s\nUsername         %s\nRotation period  %s\n", name, r.DB, r.Username, r.RotationPeriod)
	printStatements(w, "Rotation         ", r.Rotation)
}

func dbStaticWriteCmd(cf *clientFlags) *cobra.Command {
	var (
		r        staticRoleJSON
		period   string
		rotation []string
	)
	cmd := &cobra.Command{
		Use:   "write NAME --db CONN --username U --rotation-period D [--rotation-statement S ...]",
		Short: "Create or replace a static role, and rotate its user's password at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if r.Rotation, err = statementArgs("rotation-statement", rotation); err != nil {
				return err
			}
			if r.RotationPeriod, err = durationFlag(cmd, "rotation-period", period); err != nil {
				return err
			}
			if err := cf.do(cmd.Context(), "POST", dbPath("static-roles", args[0]), r, nil); err != nil {
				return fmt.Errorf("writing static role %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Wrote static role %s; the password of %s is rotated\n", args[0], r.Username)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&r.DB, "db", "", "connection of the user's database")
	fl.StringVar(&r.Username, "username", "", "the existing database user")
	fl.StringVar(&period, "rotation-period", "", "time between rotations, e.g. 24h (at least 5s)")
	fl.StringArrayVar(&rotation, "rotation-statement", nil, "statement setting the password, with {{name}} and {{password}} (repeatable; default: the plugin's; @FILE reads a file)")
	for _, f := range []string{"db", "username", "rotation-period"} {
		cmd.MarkFlagRequired(f)
	}
	return cmd
}

func dbStaticRotateCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rotate NAME",
		Short: "Rotate a static role's password now",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.do(cmd.Context(), "POST", "/v1/database/rotate-role/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return fmt.Errorf("rotating static role %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Rotated the password of static role %s\n", args[0])
			return nil
		},
	}
}

// credsJSON is the answer of GET /v1/database/creds/ROLE, and what
// 'creds --format json' prints (Vault's shape: .data.password).
type credsJSON struct {
	LeaseID       string `json:"lease_id"`
	LeaseDuration int64  `json:"lease_duration"`
	Renewable     bool   `json:"renewable"`
	Data          struct {
		Username string `json:"username"`
		Password string `json:"password"`
	} `json:"data"`
}

func dbCredsCmd() *cobra.Command {
	var (
		sf     secretFlags
		format string
	)
	cmd := &cobra.Command{
		Use:   "creds ROLE [--format table|json]",
		Short: "Get a new database user and password under a lease (workload, with an SVID)",
		Long: `Get a new database user and password for ROLE, as a workload: the policies
must grant read on database/creds/ROLE to the SVID's SPIFFE ID.

The user exists until its lease ends: 'sigil lease renew LEASE_ID' extends
it (up to the role's max TTL), 'sigil lease revoke LEASE_ID' ends it now.
The password is printed to stdout only; --format json prints Vault's shape
(.lease_id, .lease_duration in seconds, .data.username, .data.password).`,
		Args: cobra.ExactArgs(1),
		RunE: withSecrets(&sf, func(ctx context.Context, cmd *cobra.Command, c *secretClient, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			var out credsJSON
			if err := c.call(ctx, "GET", "/v1/database/creds/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return fmt.Errorf("getting credentials of role %s: %w", args[0], err)
			}
			w := cmd.OutOrStdout()
			if format == "json" {
				return printJSON(w, out)
			}
			fmt.Fprintf(w, "Lease ID        %s\nLease duration  %s\nRenewable       %t\nUsername        %s\nPassword        %s\n",
				out.LeaseID, time.Duration(out.LeaseDuration)*time.Second, out.Renewable, out.Data.Username, out.Data.Password)
			return nil
		}),
	}
	sf.register(cmd)
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	return cmd
}

// staticCredsJSON is the data of GET /v1/database/static-creds/ROLE.
type staticCredsJSON struct {
	Username       string `json:"username"`
	Password       string `json:"password"`
	LastRotation   string `json:"last_vault_rotation"`
	RotationPeriod int64  `json:"rotation_period"`
	TTL            int64  `json:"ttl"`
}

func dbStaticCredsCmd() *cobra.Command {
	var (
		sf     secretFlags
		format string
	)
	cmd := &cobra.Command{
		Use:   "static-creds ROLE [--format table|json]",
		Short: "Get a static role's user and current password (workload, with an SVID)",
		Long: `Get a static role's user and current password, as a workload: the policies
must grant read on database/static-creds/ROLE to the SVID's SPIFFE ID. The
password changes at the next rotation, in TTL. The password is printed to
stdout only.`,
		Args: cobra.ExactArgs(1),
		RunE: withSecrets(&sf, func(ctx context.Context, cmd *cobra.Command, c *secretClient, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			var out struct {
				Data staticCredsJSON `json:"data"`
			}
			if err := c.call(ctx, "GET", "/v1/database/static-creds/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return fmt.Errorf("getting credentials of static role %s: %w", args[0], err)
			}
			w := cmd.OutOrStdout()
			d := out.Data
			if format == "json" {
				return printJSON(w, d)
			}
			fmt.Fprintf(w, "Username         %s\nPassword         %s\nLast rotation    %s\nRotation period  %s\nTTL              %s\n",
				d.Username, d.Password, shortTime(d.LastRotation), time.Duration(d.RotationPeriod)*time.Second, time.Duration(d.TTL)*time.Second)
			return nil
		}),
	}
	sf.register(cmd)
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	return cmd
}

func leaseCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lease",
		Short: "List, renew and revoke the leases of database credentials",
		Long: `Leases of database credentials.

list and revoke-prefix use the operator identity (--client-cert/
--client-key or SIGIL_CLIENT_CERT/SIGIL_CLIENT_KEY).

renew and revoke act as the lease's owner, presenting an SVID picked as
for 'sigil secret' (--socket, --cert/--key, SPIFFE_ENDPOINT_SOCKET), or, when
no SVID is given, as the operator (--client-cert/--client-key, else
SIGIL_CLIENT_CERT/SIGIL_CLIENT_KEY), who may renew and revoke any lease.`,
	}
	cmd.AddCommand(leaseListCmd(), leaseRevokePrefixCmd(), leaseRenewCmd(), leaseRevokeCmd())
	return cmd
}

func leaseListCmd() *cobra.Command {
	var (
		cf     clientFlags
		format string
	)
	cmd := &cobra.Command{
		Use:   "list [PREFIX]",
		Short: "List the leases whose ID starts with PREFIX (e.g. database/creds/app-ro/), all by default",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			path := "/v1/sys/leases/lookup"
			if len(args) == 1 && args[0] != "" {
				path += "/" + escapePath(args[0])
			}
			var out struct {
				Data struct {
					Leases []server.LeaseJSON `json:"leases"`
				} `json:"data"`
			}
			if err := cf.do(cmd.Context(), "GET", path, nil, &out); err != nil {
				return fmt.Errorf("listing leases: %w", err)
			}
			w := cmd.OutOrStdout()
			if format == "json" {
				if out.Data.Leases == nil {
					out.Data.Leases = []server.LeaseJSON{}
				}
				return printJSON(w, out.Data.Leases)
			}
			tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "LEASE ID\tOWNER\tEXPIRES\tATTEMPTS\tLAST ERROR")
			for _, l := range out.Data.Leases {
				lastErr := orNone(strings.Join(strings.Fields(l.LastError), " "))
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", l.ID, l.Owner, shortTime(l.ExpiresAt), l.Attempts, lastErr)
			}
			return tw.Flush()
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	return cmd
}

func leaseRevokePrefixCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "revoke-prefix PREFIX",
		Short: "Revoke every lease whose ID starts with PREFIX, e.g. database/creds/app-ro/ (break glass)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.Trim(args[0], "/") == "" {
				return errors.New("an empty prefix would revoke every lease; name one, e.g. database/creds/ROLE/")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			status, b, err := c.exchange(cmd.Context(), "PUT", "/v1/sys/leases/revoke-prefix/"+escapePath(args[0]), nil)
			if err != nil {
				return err
			}
			var out struct {
				Revoked int `json:"revoked"`
			}
			decodeErr := json.Unmarshal(b, &out)
			if status/100 != 2 {
				msg := fmt.Sprintf("server answered HTTP %d", status)
				if msgs := errorMessages(b); len(msgs) > 0 {
					msg = fmt.Sprintf("%s (HTTP %d)", strings.Join(msgs, "; "), status)
				}
				if decodeErr == nil && out.Revoked > 0 {
					return fmt.Errorf("revoked %s under %s, then: %s", plural(out.Revoked, "lease"), args[0], msg)
				}
				return fmt.Errorf("revoking leases under %s: %s", args[0], msg)
			}
			if decodeErr != nil {
				return fmt.Errorf("decoding answer from %s: %w", c.addr, decodeErr)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Revoked %s under %s\n", plural(out.Revoked, "lease"), args[0])
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}

// plural is "1 lease" or "3 leases".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// leaseFlags pick the identity renew and revoke present: an SVID as
// secretFlags do, or else the operator's client certificate.
type leaseFlags struct {
	secretFlags
	clientCert, clientKey string
}

func (f *leaseFlags) register(cmd *cobra.Command) {
	f.secretFlags.register(cmd)
	fl := cmd.PersistentFlags()
	fl.StringVar(&f.clientCert, "client-cert", "", "operator's PEM client certificate, to act on any lease (env SIGIL_CLIENT_CERT when no SVID is given)")
	fl.StringVar(&f.clientKey, "client-key", "", "PEM private key of --client-cert (env SIGIL_CLIENT_KEY)")
}

// connect presents the SVID given, else the operator's certificate (from
// --client-cert/--client-key, or the environment through secretFlags).
func (f *leaseFlags) connect(ctx context.Context) (*secretClient, error) {
	if f.clientCert == "" && f.clientKey == "" {
		return f.secretFlags.connect(ctx)
	}
	if f.socket != "" || f.cert != "" || f.key != "" {
		return nil, errors.New("--client-cert/--client-key (the operator) and --socket or --cert/--key (an SVID) each name an identity to present; give one")
	}
	if f.clientCert == "" || f.clientKey == "" {
		return nil, errors.New("the operator's certificate needs both --client-cert and --client-key")
	}
	sf := f.secretFlags
	sf.cert, sf.key = f.clientCert, f.clientKey
	return sf.connect(ctx)
}

func withLease(lf *leaseFlags, fn func(ctx context.Context, cmd *cobra.Command, c *secretClient, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := lf.connect(cmd.Context())
		if err != nil {
			return err
		}
		defer c.close()
		return fn(cmd.Context(), cmd, c, args)
	}
}

func leaseRenewCmd() *cobra.Command {
	var (
		lf        leaseFlags
		increment time.Duration
	)
	cmd := &cobra.Command{
		Use:   "renew LEASE_ID [--increment 1h]",
		Short: "Extend a lease from now by --increment (default: the role's TTL), never past its max TTL",
		Args:  cobra.ExactArgs(1),
		RunE: withLease(&lf, func(ctx context.Context, cmd *cobra.Command, c *secretClient, args []string) error {
			if increment < 0 || increment > 0 && increment < time.Second {
				return errors.New("--increment is a duration of a second or more, e.g. 1h")
			}
			var out struct {
				LeaseID       string `json:"lease_id"`
				LeaseDuration int64  `json:"lease_duration"`
			}
			req := server.LeaseRequest{LeaseID: args[0], Increment: int64(increment / time.Second)}
			if err := c.call(ctx, "PUT", "/v1/sys/leases/renew", req, &out); err != nil {
				return fmt.Errorf("renewing lease %s: %w", args[0], err)
			}
			d := time.Duration(out.LeaseDuration) * time.Second
			fmt.Fprintf(cmd.OutOrStdout(), "Lease ID        %s\nLease duration  %s\nExpires         %s\n",
				out.LeaseID, d, time.Now().Add(d).UTC().Format(time.RFC3339))
			if increment > 0 && d+time.Second < increment {
				fmt.Fprintf(cmd.ErrOrStderr(), "The lease reaches its max TTL in %s: renewed for less than --increment %s\n", d, increment)
			}
			return nil
		}),
	}
	lf.register(cmd)
	cmd.Flags().DurationVar(&increment, "increment", 0, "how long from now, e.g. 1h (default: the role's TTL)")
	return cmd
}

func leaseRevokeCmd() *cobra.Command {
	var lf leaseFlags
	cmd := &cobra.Command{
		Use:   "revoke LEASE_ID",
		Short: "End a lease now: its database user is dropped",
		Args:  cobra.ExactArgs(1),
		RunE: withLease(&lf, func(ctx context.Context, cmd *cobra.Command, c *secretClient, args []string) error {
			if err := c.call(ctx, "PUT", "/v1/sys/leases/revoke", server.LeaseRequest{LeaseID: args[0]}, nil); err != nil {
				return fmt.Errorf("revoking lease %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Revoked lease %s\n", args[0])
			return nil
		}),
	}
	lf.register(cmd)
	return cmd
}
