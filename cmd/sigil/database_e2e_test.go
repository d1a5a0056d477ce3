package main

// End-to-end tests of 'sigil database' and 'sigil lease' against the
// machine's MariaDB, which checks passwords: credentials handed out log
// in and run what they were granted, revoked ones are gone from
// mysql.user, and leases that expire while the server is down are revoked
// once it is back.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/sigil-pki/sigil/server"
)

// e2eMySQL opens the machine's MariaDB as an admin (SIGIL_TEST_MYSQL_DSN,
// default root with no password on 127.0.0.1:3306). Unreachable, it fails
// the test under CI=true and skips it elsewhere.
func e2eMySQL(t *testing.T) (*mysql.Config, *sql.DB) {
	t.Helper()
	dsn := os.Getenv("SIGIL_TEST_MYSQL_DSN")
	if dsn == "" {
		dsn = "root@tcp(127.0.0.1:3306)/"
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("SIGIL_TEST_MYSQL_DSN: %v", err)
	}
	db, err := sql.Open("mysql", dsn)
	if err == nil {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		err = db.PingContext(ctx)
		cancel()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("MariaDB for tests is unreachable (CI=true requires it): %v", err)
		}
		t.Skipf("MariaDB unreachable: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return cfg, db
}

// e2eToken is a short random token that names this run's schema, roles
// and users, so that cleanup finds them all.
func e2eToken(t *testing.T) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func mustExec(t *testing.T, db *sql.DB, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := db.ExecContext(t.Context(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// dropUsersOnCleanup drops, when the test ends, every MariaDB user whose
// name contains token.
func dropUsersOnCleanup(t *testing.T, db *sql.DB, token string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		rows, err := db.QueryContext(ctx, "SELECT User, Host FROM mysql.user WHERE User LIKE ?", "%"+token+"%")
		if err != nil {
			t.Errorf("listing the test's users: %v", err)
			return
		}
		var accounts []string
		for rows.Next() {
			var u, h string
			if rows.Scan(&u, &h) == nil {
				accounts = append(accounts, fmt.Sprintf("'%s'@'%s'", u, h))
			}
		}
		rows.Close()
		for _, a := range accounts {
			if _, err := db.ExecContext(ctx, "DROP USER IF EXISTS "+a); err != nil {
				t.Errorf("dropping %s: %v", a, err)
			}
		}
	})
}

// usersLike counts the MariaDB users whose name matches the LIKE pattern.
func usersLike(t *testing.T, db *sql.DB, pattern string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM mysql.user WHERE User LIKE ?", pattern).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// login connects to MariaDB as user with password and returns the
// connection, or the server's refusal.
func login(t *testing.T, admin *mysql.Config, user, password string) (*sql.DB, error) {
	t.Helper()
	cfg := admin.Clone()
	cfg.User, cfg.Passwd, cfg.DBName = user, password, ""
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// wantLogin fails unless user logs in with password and reads 42 from
// table.
func wantLogin(t *testing.T, admin *mysql.Config, what, user, password, table string) {
	t.Helper()
	db, err := login(t, admin, user, password)
	if err != nil {
		t.Fatalf("%s: %s cannot log in: %v", what, user, err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRowContext(t.Context(), "SELECT v FROM "+table).Scan(&v); err != nil || v != 42 {
		t.Fatalf("%s: SELECT v FROM %s as %s: %d, %v", what, table, user, v, err)
	}
}

// wantRefused fails unless MariaDB refuses user with password (error
// 1045, access denied).
func wantRefused(t *testing.T, admin *mysql.Config, what, user, password string) {
	t.Helper()
	db, err := login(t, admin, user, password)
	if err == nil {
		db.Close()
		t.Fatalf("%s: %s still logs in", what, user)
	}
	// MariaDB answers a login as a dropped user with 1045, or with 1698
	// when it switched the client to another authentication plugin first;
	// both are "access denied".
	if me := (*mysql.MySQLError)(nil); !errors.As(err, &me) || (me.Number != 1045 && me.Number != 1698) {
		t.Fatalf("%s: want access denied (1045 or 1698) for %s, got %v", what, user, err)
	}
}

// connectionURL is the admin DSN with {{username}} and {{password}} in
// place of its user and password, and those two.
func connectionURL(admin *mysql.Config) (url, user, password string) {
	cfg := admin.Clone()
	cfg.User, cfg.Passwd = "{{username}}", "{{password}}"
	return cfg.FormatDSN(), admin.User, admin.Passwd
}

// TestDatabaseCLI walks through 'sigil database' as the operator
// (connections, roles, static roles, rotate-root) and as a workload with
// its SVID from the Workload API (creds, static-creds, lease renew and
// revoke), checking every password against MariaDB.
func TestDatabaseCLI(t *testing.T) {
	admin, my := e2eMySQL(t)
	tok := e2eToken(t)
	schema := "sigil_e2e_" + tok
	granted, hidden := schema+".granted", schema+".hidden"
	mustExec(t, my, "CREATE DATABASE "+schema)
	t.Cleanup(func() { my.Exec("DROP DATABASE IF EXISTS " + schema) })
	mustExec(t, my, "CREATE TABLE "+granted+" (v INT)", "INSERT INTO "+granted+" VALUES (42)", "CREATE TABLE "+hidden+" (v INT)")
	dropUsersOnCleanup(t, my, tok)

	dir := t.TempDir()
	p, info := startDev(t, dir)
	bin := sigilBinary(t)
	op := append(info.env(), "SPIFFE_ENDPOINT_SOCKET=")
	operator := func(wantOK bool, args ...string) string {
		t.Helper()
		return run(t, wantOK, op, bin, args...)
	}
	role, static := "ro"+tok, "st"+tok
	var secrets []string // every password seen, none of which may reach the server's log

	// A connection as root, whose empty password comes from an empty file.
	url, adminUser, adminPW := connectionURL(admin)
	pwFile := filepath.Join(dir, "admin-password")
	if err := os.WriteFile(pwFile, []byte(adminPW), 0o600); err != nil {
		t.Fatal(err)
	}
	wantLine(t, "config write", operator(true, "database", "config", "write", "mdb", "--plugin", "mysql", "--url", url,
		"--username", adminUser, "--password-file", pwFile, "--allowed-roles", role+","+static), `Wrote connection mdb`)
	out := operator(true, "database", "config", "read", "mdb")
	wantLine(t, "config read", out, `Plugin\s+mysql`)
	wantLine(t, "config read", out, `URL\s+`+regexp.QuoteMeta(url))
	wantLine(t, "config read", out, `Allowed roles\s+`+role+","+static)
	if out := operator(true, "database", "config", "list"); out != "mdb\n" {
		t.Fatalf("config list: %q", out)
	}
	// A password on the command line is refused before anything is sent;
	// a wrong one is refused by the server, and not repeated.
	const inline, wrong = "hunter2-inline-pw", "wrong-e2e-admin-pw"
	secrets = append(secrets, inline, wrong)
	out = operator(false, "database", "config", "write", "bad", "--plugin", "mysql", "--url", "root:"+inline+"@tcp(127.0.0.1:3306)/", "--allowed-roles", "x")
	wantError(t, "inline password", out, "--url holds a password")
	code, out := runExit(t, op, wrong+"\n", bin, "database", "config", "write", "bad", "--plugin", "mysql", "--url", url,
		"--username", adminUser, "--password-stdin", "--allowed-roles", "x")
	if code == 0 {
		t.Fatalf("a wrong admin password was accepted: %s", out)
	}
	wantError(t, "wrong admin password", out, "writing connection bad")
	if strings.Contains(out, wrong) {
		t.Fatalf("the error repeats the password: %s", out)
	}

	// A dynamic role granting SELECT on one table.
	creation := []string{"CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'", "GRANT SELECT ON " + granted + " TO '{{name}}'@'%'"}
	wantLine(t, "role write", operator(true, "database", "role", "write", role, "--db", "mdb",
		"--creation-statement", creation[0], "--creation-statement", creation[1],
		"--default-ttl", "1h", "--max-ttl", "2h", "--username-template", "{{.RoleName}}-{{random 8}}"), `Wrote role `+role)
	out = operator(true, "database", "role", "read", role)
	wantLine(t, "role read", out, `Connection\s+mdb`)
	wantLine(t, "role read", out, `Default TTL\s+1h0m0s`)
	wantLine(t, "role read", out, `Max TTL\s+2h0m0s`)
	wantLine(t, "role read", out, `Creation\s+`+regexp.QuoteMeta(creation[1]))
	if out := operator(true, "database", "role", "list"); out != role+"\n" {
		t.Fatalf("role list: %q", out)
	}

	// The workload: this test process, through the Workload API.
	const workloadID = "spiffe://sigil.test/e2e/db"
	pf := filepath.Join(dir, "db.yaml")
	policy := fmt.Sprintf("rules:\n  - spiffe_id: %s\n    paths: [\"database/creds/%s\", \"database/static-creds/%s\"]\n    capabilities: [read]\n", workloadID, role, static)
	if err := os.WriteFile(pf, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	operator(true, "policy", "write", "db", pf)
	operator(true, "entry", "create", "--spiffe-id", workloadID, "--selector", "unix:uid:"+strconv.Itoa(os.Getuid()))
	ws := []string{"SIGIL_ADDR=" + info.HTTPSURL, "SPIFFE_ENDPOINT_SOCKET=unix://" + devSocket(t, dir),
		"SIGIL_CACERT=", "SIGIL_CLIENT_CERT=", "SIGIL_CLIENT_KEY="}
	workload := func(wantOK bool, args ...string) string {
		t.Helper()
		return run(t, wantOK, ws, bin, args...)
	}

	var creds credsJSON
	if err := json.Unmarshal([]byte(workload(true, "database", "creds", role, "--format", "json")), &creds); err != nil {
		t.Fatal(err)
	}
	user, pass, lease := creds.Data.Username, creds.Data.Password, creds.LeaseID
	secrets = append(secrets, pass)
	if !strings.HasPrefix(user, role+"-") || pass == "" || !strings.HasPrefix(lease, "database/creds/"+role+"/") || creds.LeaseDuration != 3600 || !creds.Renewable {
		t.Fatalf("creds: %+v", creds)
	}
	wantLogin(t, admin, "dynamic creds", user, pass, granted)
	wantRefused(t, admin, "dynamic creds with a wrong password", user, pass+"x")
	if db, err := login(t, admin, user, pass); err == nil {
		var v int
		err := db.QueryRowContext(t.Context(), "SELECT v FROM "+hidden).Scan(&v)
		db.Close()
		if err == nil {
			t.Fatalf("%s reads %s, which it was not granted", user, hidden)
		}
	}
	out = workload(true, "database", "creds", role)
	wantLine(t, "creds table", out, `Lease duration\s+1h0m0s`)
	wantLine(t, "creds table", out, `Username\s+`+role+`-\S+`)
	m := regexp.MustCompile(`(?m)^Lease ID\s+(\S+)$`).FindStringSubmatch(out)
	pm := regexp.MustCompile(`(?m)^Password\s+(\S+)$`).FindStringSubmatch(out)
	if m == nil || pm == nil {
		t.Fatalf("creds table:\n%s", out)
	}
	lease2 := m[1]
	secrets = append(secrets, pm[1])
	wantError(t, "creds of a role the policy does not grant", workload(false, "database", "creds", "other"+tok),
		"permission denied for "+workloadID, "database/creds/other"+tok)

	// Leases: listed without passwords, renewed by the owner and the
	// operator, capped at the max TTL, revoked.
	out = operator(true, "lease", "list", "database/creds/"+role+"/")
	wantLine(t, "lease list", out, `LEASE ID\s+OWNER\s+EXPIRES\s+ATTEMPTS\s+LAST ERROR`)
	wantLine(t, "lease list", out, regexp.QuoteMeta(lease)+`\s+`+regexp.QuoteMeta(workloadID)+`\s+\S+Z\s+0\s+-`)
	if strings.Contains(out, pass) || strings.Contains(out, user) {
		t.Fatalf("lease list shows the credentials:\n%s", out)
	}
	wantLine(t, "lease renew", workload(true, "lease", "renew", lease, "--increment", "30m"), `Lease duration\s+(29m59s|30m0s)`)
	wantLine(t, "lease renew as the operator", operator(true, "lease", "renew", lease, "--increment", "45m"), `Lease duration\s+(44m59s|45m0s)`)
	workload(true, "lease", "renew", lease, "--increment", "5h")
	var leases []server.LeaseJSON
	if err := json.Unmarshal([]byte(operator(true, "lease", "list", "database/creds/"+role+"/", "--format", "json")), &leases); err != nil {
		t.Fatal(err)
	}
	if len(leases) != 2 {
		t.Fatalf("lease list: %+v", leases)
	}
	for _, l := range leases {
		if l.ID == lease && l.ExpiresAt != l.MaxExpiry {
			t.Fatalf("renewed past its max TTL? expires %s, max %s", l.ExpiresAt, l.MaxExpiry)
		}
	}
	wantLine(t, "lease revoke", workload(true, "lease", "revoke", lease), `Revoked lease `+regexp.QuoteMeta(lease))
	if n := usersLike(t, my, user); n != 0 {
		t.Fatalf("%s still in mysql.user after its lease was revoked", user)
	}
	wantRefused(t, admin, "revoked creds", user, pass)
	wantError(t, "revoke twice", workload(false, "lease", "revoke", lease), "revoking lease "+lease, "not found")
	wantLine(t, "revoke-prefix", operator(true, "lease", "revoke-prefix", "database/creds/"+role+"/"), `Revoked 1 lease under database/creds/`+role+`/`)
	if n := usersLike(t, my, role+"-%"); n != 0 {
		t.Fatalf("%d users of %s left after revoke-prefix (lease %s)", n, role, lease2)
	}
	if out := operator(true, "lease", "list", "database/creds/"+role+"/"); strings.Count(out, "\n") != 1 {
		t.Fatalf("leases left after revoke-prefix:\n%s", out)
	}

	// A static role on an existing user: its password is rotated at once,
	// then on demand.
	staticUser := "e2es" + tok
	const initial = "initial-e2e-static-pw"
	secrets = append(secrets, initial)
	mustExec(t, my, "CREATE USER '"+staticUser+"'@'%' IDENTIFIED BY '"+initial+"'", "GRANT SELECT ON "+granted+" TO '"+staticUser+"'@'%'")
	wantLogin(t, admin, "static user before the role", staticUser, initial, granted)
	operator(true, "database", "static-role", "write", static, "--db", "mdb", "--username", staticUser, "--rotation-period", "24h")
	wantRefused(t, admin, "the initial password after the role is written", staticUser, initial)
	out = operator(true, "database", "static-role", "read", static)
	wantLine(t, "static-role read", out, `Username\s+`+staticUser)
	wantLine(t, "static-role read", out, `Rotation period\s+24h0m0s`)
	if out := operator(true, "database", "static-role", "list"); out != static+"\n" {
		t.Fatalf("static-role list: %q", out)
	}
	staticCreds := func() staticCredsJSON {
		t.Helper()
		var sc staticCredsJSON
		if err := json.Unmarshal([]byte(workload(true, "database", "static-creds", static, "--format", "json")), &sc); err != nil {
			t.Fatal(err)
		}
		if sc.Username != staticUser || sc.Password == "" || sc.RotationPeriod != 86400 {
			t.Fatalf("static-creds: %+v", sc)
		}
		secrets = append(secrets, sc.Password)
		return sc
	}
	pw1 := staticCreds().Password
	wantLogin(t, admin, "static creds", staticUser, pw1, granted)
	wantLine(t, "static-creds table", workload(true, "database", "static-creds", static), `Password\s+`+regexp.QuoteMeta(pw1))
	wantLine(t, "static-role rotate", operator(true, "database", "static-role", "rotate", static), `Rotated the password of static role `+static)
	pw2 := staticCreds().Password
	if pw2 == pw1 {
		t.Fatal("static-role rotate kept the password")
	}
	wantRefused(t, admin, "the static password before the rotation", staticUser, pw1)
	wantLogin(t, admin, "the rotated static password", staticUser, pw2, granted)

	// rotate-root on an admin user of our own (never on root): the
	// password given on stdin stops working, Sigil's keeps working.
	adminUser2 := "e2ea" + tok
	const adminPW2 = "initial-e2e-admin-pw"
	secrets = append(secrets, adminPW2)
	mustExec(t, my, "CREATE USER '"+adminUser2+"'@'%' IDENTIFIED BY '"+adminPW2+"'",
		"GRANT CREATE USER ON *.* TO '"+adminUser2+"'@'%'", "GRANT SELECT ON mysql.* TO '"+adminUser2+"'@'%'")
	code, out = runExit(t, op, adminPW2+"\n", bin, "database", "config", "write", "adm", "--plugin", "mysql", "--url", url,
		"--username", adminUser2, "--password-stdin")
	if code != 0 {
		t.Fatalf("config write --password-stdin: %s", out)
	}
	wantLine(t, "rotate-root", operator(true, "database", "config", "rotate-root", "adm"), `Rotated the admin password of connection adm`)
	wantRefused(t, admin, "the admin password before rotate-root", adminUser2, adminPW2)
	wantLine(t, "config read after rotate-root", operator(true, "database", "config", "read", "adm"), `Username\s+`+adminUser2)
	wantLine(t, "config delete", operator(true, "database", "config", "delete", "adm"), `Deleted connection adm`)
	if out := operator(true, "database", "config", "list"); out != "mdb\n" {
		t.Fatalf("config list after delete: %q", out)
	}

	wantLine(t, "role delete", operator(true, "database", "role", "delete", role), `Deleted role `+role)
	wantLine(t, "static-role delete", operator(true, "database", "static-role", "delete", static), `Deleted static role `+static)
	if out := operator(true, "database", "role", "list") + operator(true, "database", "static-role", "list"); out != "" {
		t.Fatalf("roles left after delete: %q", out)
	}

	for _, s := range secrets {
		if strings.Contains(p.out.String(), s) {
			t.Fatalf("the server logged the password %q", s)
		}
	}
}

// TestDatabaseLeasesSurviveKill9: 100 leases of 3 s, kill -9 the server,
// let them expire while it is down, restart: within 10 s every one of the
// 100 users is gone from mysql.user.
func TestDatabaseLeasesSurviveKill9(t *testing.T) {
	admin, my := e2eMySQL(t)
	tok := e2eToken(t)
	dropUsersOnCleanup(t, my, tok)
	dir := t.TempDir()
	p, info := startDev(t, dir)
	bin := sigilBinary(t)
	op := append(info.env(), "SPIFFE_ENDPOINT_SOCKET=")
	role := "bu" + tok
	const workloadID = "spiffe://sigil.test/e2e/burst"

	url, adminUser, adminPW := connectionURL(admin)
	code, out := runExit(t, op, adminPW, bin, "database", "config", "write", "mdb", "--plugin", "mysql", "--url", url,
		"--username", adminUser, "--password-stdin", "--allowed-roles", role)
	if code != 0 {
		t.Fatalf("config write: %s", out)
	}
	run(t, true, op, bin, "database", "role", "write", role, "--db", "mdb", "--creation-statement", "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'",
		"--default-ttl", "3s", "--max-ttl", "1m", "--username-template", "{{.RoleName}}-{{random 10}}")
	pf := filepath.Join(dir, "burst.yaml")
	if err := os.WriteFile(pf, []byte(fmt.Sprintf("rules:\n  - spiffe_id: %s\n    paths: [\"database/creds/%s\"]\n    capabilities: [read]\n", workloadID, role)), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, true, op, bin, "policy", "write", "burst", pf)

	// The workload's SVID, issued by the operator.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := issueOne(t.Context(), devClient(t, info), info.HTTPSURL, key, workloadID)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := os.ReadFile(info.RootCA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	wl := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, RootCAs: roots},
		MaxIdleConnsPerHost: 16,
	}}
	defer wl.CloseIdleConnections()

	const n = 100
	var (
		mu    sync.Mutex
		users []string
		errs  []error
		wg    sync.WaitGroup
		jobs  = make(chan struct{})
	)
	for range 16 {
		wg.Go(func() {
			for range jobs {
				c, err := getCreds(t.Context(), wl, info.HTTPSURL+"/v1/database/creds/"+role)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					users = append(users, c.Data.Username)
				}
				mu.Unlock()
			}
		})
	}
	began := time.Now()
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d creds requests failed; first: %v", len(errs), n, errs[0])
	}
	present := usersLike(t, my, role+"-%")
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	t.Logf("%d leases issued in %v; %d of their users in mysql.user at kill -9", n, time.Since(began).Round(time.Millisecond), present)
	if present == 0 {
		t.Fatal("every user was gone before the kill: nothing left for the restarted server to do")
	}

	// The leases expire while nothing runs: this wait is the scenario,
	// not a poll.
	time.Sleep(4 * time.Second)
	_, info = startDev(t, dir)
	restarted := time.Now()
	deadline := restarted.Add(10 * time.Second)
	for {
		left := usersLike(t, my, role+"-%")
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the %d users still in mysql.user 10 s after the restart; leases:\n%s", left, n,
				run(t, true, info.env(), bin, "lease", "list", "database/creds/"+role+"/"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("every user dropped %v after the restart", time.Since(restarted).Round(time.Millisecond))
	for _, u := range users {
		if usersLike(t, my, u) != 0 {
			t.Fatalf("%s still exists", u)
		}
	}
	if out := run(t, true, info.env(), bin, "lease", "list", "database/creds/"+role+"/"); strings.Count(out, "\n") != 1 {
		t.Fatalf("leases left after their users were dropped:\n%s", out)
	}
}

// getCreds GETs dynamic credentials with the workload's client.
func getCreds(ctx context.Context, c *http.Client, u string) (credsJSON, error) {
	var out credsJSON
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return out, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return out, err
	}
	if out.Data.Username == "" || out.LeaseID == "" {
		return out, fmt.Errorf("no credentials in %s", b)
	}
	return out, nil
}

// TestInlinePassword: 'database config write' refuses a password written
// into --url, in each form the plugins take, and accepts {{password}}.
func TestInlinePassword(t *testing.T) {
	for _, tc := range []struct {
		name, url string
		want      bool
	}{
		{"dsn template", "{{username}}:{{password}}@tcp(127.0.0.1:3306)/", false},
		{"dsn without password", "root@tcp(127.0.0.1:3306)/", false},
		{"dsn without user", "tcp(127.0.0.1:3306)/app", false},
		{"dsn password", "root:s3cret@tcp(127.0.0.1:3306)/", true},
		{"dsn empty password", "root:@tcp(127.0.0.1:3306)/", false},
		{"url template", "postgres://{{username}}:{{password}}@db:5432/app?sslmode=disable", false},
		{"url password", "postgres://app:s3cret@db:5432/app", true},
		{"url query password", "postgres://db/app?user=app&password=s3cret", true},
		{"url query template", "postgres://db/app?password={{password}}", false},
		{"mysql url password", "mysql://root:s3cret@127.0.0.1/", true},
		{"key value template", "host=db user={{username}} password={{password}}", false},
		{"key value quoted template", "host=db password='{{password}}'", false},
		{"key value password", "host=db user=app password=s3cret", true},
		{"key value no password", "host=/var/run/postgresql dbname=app", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := inlinePassword(tc.url); got != tc.want {
				t.Errorf("inlinePassword(%q) = %v, want %v", tc.url, got, tc.want)
			}
		})
	}
}
