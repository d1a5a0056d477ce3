package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// e2ePostgres connects to the machine's PostgreSQL as its admin
// (SIGIL_TEST_POSTGRES_DSN, default postgres on 127.0.0.1:5432, database
// test). Unreachable, it fails under CI=true and skips elsewhere.
func e2ePostgres(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	dsn := os.Getenv("SIGIL_TEST_POSTGRES_DSN")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL for tests is unreachable (CI=true requires it): %v", err)
		}
		t.Skipf("PostgreSQL unreachable: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return dsn, conn
}

// waitFile polls path until ok accepts its content, for up to within.
func waitFile(t *testing.T, path string, within time.Duration, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, err := os.ReadFile(path)
		if err == nil && ok(string(b)) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after %s: %q (%v)", path, within, b, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func lineCount(path string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte("\n"))
}

// waitRuns polls a hook's log until it has at least n lines.
func waitRuns(t *testing.T, path string, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); lineCount(path) < n; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the command ran %d times, want %d", path, lineCount(path), n)
		}
	}
}

var passwordRE = regexp.MustCompile(`(?m)^PGPASSWORD=(.+)$`)

// TestAgentRendersSecrets: an agent renders dynamic and static PostgreSQL
// credentials and a KV secret into files, as the identity of one of its
// entries: the dynamic file changes when the agent renews the lease, the
// static one when the password rotates, the KV one with a new version,
// each post-render command runs, and no secret reaches a log.
func TestAgentRendersSecrets(t *testing.T) {
	_, pg := e2ePostgres(t)
	tok := e2eToken(t)
	role, static, staticUser := "ag"+tok, "as"+tok, "e2eagent"+tok
	if _, err := pg.Exec(t.Context(), fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD 'initial-static-pw'`, staticUser)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		rows, err := pg.Query(ctx, `SELECT rolname FROM pg_roles WHERE rolname LIKE '%'||$1||'%'`, tok)
		if err != nil {
			return
		}
		var names []string
		for rows.Next() {
			var n string
			if rows.Scan(&n) == nil {
				names = append(names, n)
			}
		}
		rows.Close()
		for _, n := range names {
			pg.Exec(ctx, `DROP ROLE IF EXISTS "`+n+`"`)
		}
	})

	dir := shortDir(t)
	httpsAddr, httpAddr := freePort(t), freePort(t)
	srv := start(t, nil, "dev", "--data-dir", filepath.Join(dir, "server"), "--https", httpsAddr, "--http", httpAddr)
	waitHealth(t, "http://"+httpAddr, http.StatusOK, srv)
	var info devJSON
	getJSONFile(t, filepath.Join(dir, "server", "dev.json"), &info)
	env, bin := append(info.env(), "SPIFFE_ENDPOINT_SOCKET="), sigilBinary(t)
	op := func(args ...string) string { t.Helper(); return run(t, true, env, bin, args...) }

	appID := "spiffe://" + info.TrustDomain + "/app"
	op("entry", "create", "--spiffe-id", appID, "--parent", "spiffe://"+info.TrustDomain+"/sigil/agent/node-s",
		"--selector", "unix:uid:"+strconv.Itoa(os.Getuid()))
	policy := filepath.Join(dir, "p.yaml")
	os.WriteFile(policy, fmt.Appendf(nil, "rules:\n  - spiffe_id: %s\n    paths: [\"database/creds/%s\", \"database/static-creds/%s\", \"secret/app/*\"]\n    capabilities: [read, create, update]\n", appID, role, static), 0o644)
	op("policy", "write", "app", policy)
	emptyPW := filepath.Join(dir, "pw")
	os.WriteFile(emptyPW, nil, 0o600)
	op("database", "config", "write", "pg", "--plugin", "postgres", "--url", "postgres://{{username}}:{{password}}@127.0.0.1:5432/test?sslmode=disable",
		"--username", "postgres", "--password-file", emptyPW, "--allowed-roles", role+","+static)
	op("database", "role", "write", role, "--db", "pg",
		"--creation-statement", `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'`,
		"--revocation-statement", `DROP ROLE IF EXISTS "{{name}}"`,
		"--default-ttl", "10s", "--max-ttl", "1m", "--username-template", "v-{{.RoleName}}-{{random 6}}")
	op("database", "static-role", "write", static, "--db", "pg", "--username", staticUser, "--rotation-period", "1h")

	out := filepath.Join(dir, "out")
	hooks := filepath.Join(dir, "hooks")
	os.MkdirAll(hooks, 0o755)
	hook := func(name string) string {
		return fmt.Sprintf(`["/bin/sh", "-c", "echo ran >> %s"]`, filepath.Join(hooks, name))
	}
	cfg := fmt.Sprintf(`refresh: 1s
secrets:
  - source: database/creds/%s
    spiffe_id: %s
    destination: %s/db.env
    mode: "0640"
    template: |
      PGUSER={{ .Data.username }}
      PGPASSWORD={{ .Data.password }}
      LEASE={{ .LeaseID }} {{ .LeaseExpiry }}
    command: %s
  - source: database/static-creds/%s
    spiffe_id: %s
    destination: %s/static.env
    template: |
      PGUSER={{ .Data.username }}
      PGPASSWORD={{ .Data.password }}
    command: %s
  - source: kv:secret/app/config
    spiffe_id: %s
    destination: %s/app.conf
    template: "colour={{ .Data.colour }} version={{ .Version }}\n"
`, role, appID, out, hook("db"), static, appID, out, hook("static"), appID, out)
	cfgFile := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfgFile, []byte(cfg), 0o600)

	token := strings.Split(op("agent", "token", "create", "--node-id", "node-s"), "\n")[0]
	a := startAgent(t, info, filepath.Join(dir, "a"), "--join-token", token, "--config", cfgFile)

	// KV: written as the app through the agent's own socket.
	workload := append(info.env(), "SPIFFE_ENDPOINT_SOCKET=unix://"+a.socket, "SIGIL_CLIENT_CERT=", "SIGIL_CLIENT_KEY=")
	if _, err := servedIDs(t, a.socket); err != nil {
		t.Fatal(err)
	}
	run(t, true, workload, bin, "secret", "put", "secret/app/config", "colour=blue")
	waitFile(t, filepath.Join(out, "app.conf"), 5*time.Second, func(s string) bool { return s == "colour=blue version=1\n" })
	run(t, true, workload, bin, "secret", "put", "secret/app/config", "colour=green")
	waitFile(t, filepath.Join(out, "app.conf"), 5*time.Second, func(s string) bool { return s == "colour=green version=2\n" })

	// Dynamic credentials: rendered, then re-rendered when the lease is
	// renewed (same user, later expiry), the hook running each time.
	dbFile := filepath.Join(out, "db.env")
	first := waitFile(t, dbFile, 10*time.Second, func(s string) bool { return strings.Contains(s, "PGUSER=v-") })
	if fi, _ := os.Stat(dbFile); fi.Mode().Perm() != 0o640 {
		t.Errorf("db.env mode %v, want 0640", fi.Mode().Perm())
	}
	user := strings.SplitN(strings.TrimPrefix(first, "PGUSER="), "\n", 2)[0]
	renewed := waitFile(t, dbFile, 10*time.Second, func(s string) bool { return s != first })
	if !strings.Contains(renewed, "PGUSER="+user+"\n") {
		t.Errorf("after renewal the user changed:\n%s\nthen\n%s", first, renewed)
	}
	waitRuns(t, filepath.Join(hooks, "db"), 2)
	var exists bool
	if err := pg.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, user).Scan(&exists); err != nil || !exists {
		t.Errorf("the rendered user %s does not exist in PostgreSQL (%v)", user, err)
	}

	// Static credentials: the file follows a rotation.
	stFile := filepath.Join(out, "static.env")
	before := waitFile(t, stFile, 10*time.Second, func(s string) bool { return strings.Contains(s, "PGUSER="+staticUser) })
	hooksBefore := lineCount(filepath.Join(hooks, "static"))
	op("database", "static-role", "rotate", static)
	after := waitFile(t, stFile, 10*time.Second, func(s string) bool { return s != before })
	if passwordRE.FindString(after) == passwordRE.FindString(before) {
		t.Error("the static file changed but not its password")
	}
	waitRuns(t, filepath.Join(hooks, "static"), hooksBefore+1)

	// The server goes away and the agent restarts: the last renders come
	// back from the encrypted cache, and the dynamic credentials are
	// removed once their lease has run out.
	current, _ := os.ReadFile(dbFile)
	last := waitFile(t, dbFile, 10*time.Second, func(s string) bool { return s != string(current) })
	a.p.stop(t)
	srv.stop(t)
	for _, f := range []string{dbFile, filepath.Join(out, "app.conf")} {
		os.Remove(f)
	}
	a2 := startAgent(t, info, a.dir, "--config", cfgFile)
	waitFile(t, dbFile, 5*time.Second, func(s string) bool { return s == last })
	waitFile(t, filepath.Join(out, "app.conf"), 10*time.Second, func(s string) bool { return s == "colour=green version=2\n" })
	m := regexp.MustCompile(`LEASE=\S+ (\S+)`).FindStringSubmatch(last)
	if m == nil {
		t.Fatalf("no lease expiry in %q", last)
	}
	leaseEnd, err := time.Parse(time.RFC3339, m[1])
	if err != nil {
		t.Fatal(err)
	}
	for deadline := leaseEnd.Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(dbFile); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("db.env still there %s after its lease ended at %s", time.Since(leaseEnd), leaseEnd)
		}
	}

	// No password reached the agent's or the server's output.
	for _, s := range []string{first, renewed, before, after} {
		m := passwordRE.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("no password in %q", s)
		}
		for what, log := range map[string]string{"agent": a.p.out.String() + a2.p.out.String(), "server": srv.out.String()} {
			if strings.Contains(log, m[1]) {
				t.Errorf("a password appears in the %s's output", what)
			}
		}
	}
}
