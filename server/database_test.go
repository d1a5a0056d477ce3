package server

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	vault "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"

	"github.com/sigil-pki/sigil/storage/storagetest"
)

// testMySQLDSN is the machine's MariaDB as root, for the tests.
func testMySQLDSN(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("SIGIL_TEST_MYSQL_DSN")
	if dsn == "" {
		dsn = "root@tcp(127.0.0.1:3306)/"
	}
	db, err := sql.Open("mysql", dsn)
	if err == nil {
		err = db.PingContext(t.Context())
		db.Close()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("MariaDB for tests is unreachable (CI=true requires it): %v", err)
		}
		t.Skipf("MariaDB unreachable: %v", err)
	}
	return dsn
}

func testPostgresAdminDSN(t testing.TB) string {
	t.Helper()
	storagetest.PostgresDSN(t) // fails under CI=true, skips elsewhere, when unreachable
	if dsn := os.Getenv("SIGIL_TEST_POSTGRES_DSN"); dsn != "" {
		return dsn
	}
	return storagetest.DefaultPostgresDSN
}

func randName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// vaultClient is Vault's Go client presenting an SVID for id.
func (r *runningServer) vaultClient(t *testing.T, id string) *vault.Client {
	t.Helper()
	c, _ := r.svidClient(t, id, time.Hour)
	cfg := vault.DefaultConfig()
	cfg.Address = r.adminURL
	cfg.HttpClient = c
	cfg.MaxRetries = 0
	vc, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	vc.ClearToken()
	return vc
}

func (r *runningServer) adminCall(t testing.TB, method, path, body string, want int) string {
	t.Helper()
	code, out := call(t, r.admin, method, r.adminURL+path, body)
	if code != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, code, out, want)
	}
	return out
}

// TestDynamicCredsPostgres: credentials read with Vault's client log in,
// run the granted query, are refused an ungranted table; renewing is
// capped by max_ttl; after the TTL the user is gone from pg_roles.
func TestDynamicCredsPostgres(t *testing.T) {
	admin := testPostgresAdminDSN(t)
	ctx := t.Context()
	pg, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(context.Background())
	granted, hidden := randName("sigil_granted_"), randName("sigil_hidden_")
	for _, tbl := range []string{granted, hidden} {
		if _, err := pg.Exec(ctx, "CREATE TABLE "+tbl+" (v int); INSERT INTO "+tbl+" VALUES (42)"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pg.Exec(context.Background(), "DROP TABLE IF EXISTS "+tbl) })
	}

	r := startRunning(t)
	r.adminCall(t, "POST", "/v1/database/config/pg", fmt.Sprintf(`{"plugin_name":"postgres","connection_url":%q,"allowed_roles":["ro"]}`, admin), http.StatusNoContent)
	r.adminCall(t, "POST", "/v1/database/roles/ro", fmt.Sprintf(`{"db_name":"pg","default_ttl":"3s","max_ttl":"6s",
		"creation_statements":["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON %s TO \"{{name}}\";"]}`, granted), http.StatusNoContent)
	r.putPolicy(t, "db", `
rules:
  - spiffe_id: spiffe://example.org/app
    paths: ["database/creds/ro"]
    capabilities: [read]
`)
	vc := r.vaultClient(t, "spiffe://example.org/app")
	secret, err := vc.Logical().ReadWithContext(ctx, "database/creds/ro")
	if err != nil {
		t.Fatal(err)
	}
	user, pass := secret.Data["username"].(string), secret.Data["password"].(string)
	if user == "" || pass == "" || secret.LeaseID == "" || secret.LeaseDuration != 3 || !secret.Renewable {
		t.Fatalf("creds: %+v", secret)
	}
	if strings.Contains(r.adminCall(t, "GET", "/v1/sys/leases/lookup/database/creds/ro/", "", http.StatusOK), pass) {
		t.Fatal("the lease listing shows the password")
	}
	userConn := func() (*pgx.Conn, error) {
		cfg, err := pgx.ParseConfig(admin)
		if err != nil {
			t.Fatal(err)
		}
		cfg.User, cfg.Password = user, pass
		return pgx.ConnectConfig(ctx, cfg)
	}
	uc, err := userConn()
	if err != nil {
		t.Fatalf("logging in as %s: %v", user, err)
	}
	var v int
	if err := uc.QueryRow(ctx, "SELECT v FROM "+granted).Scan(&v); err != nil || v != 42 {
		t.Errorf("granted query: %d %v", v, err)
	}
	if _, err := uc.Exec(ctx, "SELECT v FROM "+hidden); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("ungranted query: %v", err)
	}
	uc.Close(ctx)

	// Renewal is capped by max_ttl (6 s after issue).
	renewed, err := vc.Sys().RenewWithContext(ctx, secret.LeaseID, 3600)
	if err != nil || renewed.LeaseDuration > 6 || renewed.LeaseDuration < 4 {
		t.Fatalf("renew: %+v %v", renewed, err)
	}
	// Another identity may not renew or revoke it.
	other := r.vaultClient(t, "spiffe://example.org/other")
	if _, err := other.Sys().RenewWithContext(ctx, secret.LeaseID, 10); err == nil {
		t.Error("another identity renewed the lease")
	}

	// After the max TTL the lease manager drops the user.
	deadline := time.Now().Add(6*time.Second + 5*time.Second)
	for {
		var n int
		if err := pg.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", user).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("user %s still exists 5 s after its lease's max TTL", user)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := userConn(); err == nil {
		t.Error("the expired user still logs in")
	}
	if out := r.adminCall(t, "GET", "/v1/sys/leases/lookup/database/creds/ro/", "", http.StatusOK); strings.Contains(out, secret.LeaseID) {
		t.Errorf("the revoked lease is still listed: %s", out)
	}
}

// TestDynamicCredsMySQL: on MariaDB, which checks passwords: the user logs
// in with its password and no other; revoke and revoke-prefix drop users
// at once; a policy that does not grant the role refuses.
func TestDynamicCredsMySQL(t *testing.T) {
	admin := testMySQLDSN(t)
	ctx := t.Context()
	my, err := sql.Open("mysql", admin)
	if err != nil {
		t.Fatal(err)
	}
	defer my.Close()
	schema := randName("sigil_t_")
	if _, err := my.ExecContext(ctx, "CREATE DATABASE "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { my.Exec("DROP DATABASE IF EXISTS " + schema) })
	for _, q := range []string{"CREATE TABLE " + schema + ".granted (v int)", "INSERT INTO " + schema + ".granted VALUES (7)", "CREATE TABLE " + schema + ".hidden (v int)"} {
		if _, err := my.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}

	r := startRunning(t)
	r.adminCall(t, "POST", "/v1/database/config/my", fmt.Sprintf(`{"plugin_name":"mysql","connection_url":%q,"allowed_roles":["*"]}`, admin), http.StatusNoContent)
	r.adminCall(t, "POST", "/v1/database/roles/reader", fmt.Sprintf(`{"db_name":"my","default_ttl":"1h",
		"creation_statements":["CREATE USER '{{name}}'@'%%' IDENTIFIED BY '{{password}}'; GRANT SELECT ON %s.granted TO '{{name}}'@'%%';"]}`, schema), http.StatusNoContent)
	r.putPolicy(t, "db", `
rules:
  - spiffe_id: spiffe://example.org/app
    paths: ["database/creds/reader"]
    capabilities: [read]
`)
	vc := r.vaultClient(t, "spiffe://example.org/app")
	var leases []string
	var users []string
	for range 3 {
		s, err := vc.Logical().ReadWithContext(ctx, "database/creds/reader")
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, s.LeaseID)
		users = append(users, s.Data["username"].(string))
		if len(users) == 1 {
			login := func(pw string) error {
				db, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(127.0.0.1:3306)/%s", users[0], pw, schema))
				if err != nil {
					return err
				}
				defer db.Close()
				var v int
				return db.QueryRowContext(ctx, "SELECT v FROM granted").Scan(&v)
			}
			if err := login(s.Data["password"].(string)); err != nil {
				t.Fatalf("login with the issued password: %v", err)
			}
			if err := login("wrong-password"); err == nil {
				t.Fatal("login with a wrong password worked")
			}
		}
	}
	exists := func(u string) bool {
		var n int
		if err := my.QueryRowContext(ctx, "SELECT count(*) FROM mysql.user WHERE user = ?", u).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	if err := vc.Sys().RevokeWithContext(ctx, leases[0]); err != nil {
		t.Fatal(err)
	}
	if exists(users[0]) || !exists(users[1]) {
		t.Fatalf("after revoke: %s exists %v, %s exists %v", users[0], exists(users[0]), users[1], exists(users[1]))
	}
	out := r.adminCall(t, "PUT", "/v1/sys/leases/revoke-prefix/database/creds/reader/", "", http.StatusOK)
	if !strings.Contains(out, `"revoked":2`) || exists(users[1]) || exists(users[2]) {
		t.Fatalf("revoke-prefix: %s", out)
	}
	// Not granted by any policy.
	if _, err := r.vaultClient(t, "spiffe://example.org/intruder").Logical().ReadWithContext(ctx, "database/creds/reader"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("creds without a policy: %v", err)
	}
}

// TestStaticRoleRotationMySQL: an existing user's password is rotated; the
// old one stops working, the new one works, and a reader gets the new one
// on its next read.
func TestStaticRoleRotationMySQL(t *testing.T) {
	admin := testMySQLDSN(t)
	ctx := t.Context()
	my, err := sql.Open("mysql", admin)
	if err != nil {
		t.Fatal(err)
	}
	defer my.Close()
	user := randName("st_")
	if _, err := my.ExecContext(ctx, "CREATE USER '"+user+"'@'%' IDENTIFIED BY 'initial-pw-123'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { my.Exec("DROP USER IF EXISTS '" + user + "'@'%'") })
	login := func(pw string) error {
		db, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(127.0.0.1:3306)/", user, pw))
		if err != nil {
			return err
		}
		defer db.Close()
		return db.PingContext(ctx)
	}
	r := startRunning(t)
	r.adminCall(t, "POST", "/v1/database/config/my", fmt.Sprintf(`{"plugin_name":"mysql","connection_url":%q,"allowed_roles":["app"]}`, admin), http.StatusNoContent)
	r.adminCall(t, "POST", "/v1/database/static-roles/app", fmt.Sprintf(`{"db_name":"my","username":%q,"rotation_period":"1h"}`, user), http.StatusNoContent)
	if err := login("initial-pw-123"); err == nil {
		t.Fatal("the password from before Sigil took the user over still works")
	}
	r.putPolicy(t, "db", `
rules:
  - spiffe_id: spiffe://example.org/app
    paths: ["database/static-creds/app"]
    capabilities: [read]
`)
	vc := r.vaultClient(t, "spiffe://example.org/app")
	read := func() (string, int64) {
		s, err := vc.Logical().ReadWithContext(ctx, "database/static-creds/app")
		if err != nil {
			t.Fatal(err)
		}
		ttl, _ := s.Data["ttl"].(json.Number).Int64()
		return s.Data["password"].(string), ttl
	}
	first, ttl := read()
	if err := login(first); err != nil || ttl < 3500 || ttl > 3600 {
		t.Fatalf("first password: login %v, ttl %d", err, ttl)
	}
	r.adminCall(t, "POST", "/v1/database/rotate-role/app", "", http.StatusNoContent)
	second, _ := read()
	if second == first {
		t.Fatal("rotation kept the password")
	}
	if err := login(first); err == nil {
		t.Error("the old password still works after rotation")
	}
	if err := login(second); err != nil {
		t.Errorf("the new password: %v", err)
	}
}

// tcpProxy forwards a loopback port to a database; Stop cuts it (as a
// database going away would), Start brings it back on the same port.
type tcpProxy struct {
	t      *testing.T
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{t: t, target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.Stop)
	return p
}

func (p *tcpProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
}

func (p *tcpProxy) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *tcpProxy) Start() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.serve(ln)
}

// TestExpiryRetriedWhileDatabaseDown: a lease expires while its database
// is unreachable; the lease manager keeps it, records the failures, and
// drops the user once the database is back.
func TestExpiryRetriedWhileDatabaseDown(t *testing.T) {
	admin := testMySQLDSN(t)
	ctx := t.Context()
	my, err := sql.Open("mysql", admin)
	if err != nil {
		t.Fatal(err)
	}
	defer my.Close()
	proxy := newTCPProxy(t, "127.0.0.1:3306")
	viaProxy := strings.Replace(admin, "127.0.0.1:3306", proxy.addr, 1)
	if viaProxy == admin {
		t.Skip("SIGIL_TEST_MYSQL_DSN does not name 127.0.0.1:3306")
	}
	r := startRunning(t)
	r.adminCall(t, "POST", "/v1/database/config/my", fmt.Sprintf(`{"plugin_name":"mysql","connection_url":%q,"allowed_roles":["*"]}`, viaProxy), http.StatusNoContent)
	r.adminCall(t, "POST", "/v1/database/roles/short", `{"db_name":"my","default_ttl":"2s","max_ttl":"2s",
		"creation_statements":["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'"]}`, http.StatusNoContent)
	code, body := call(t, r.admin, "GET", r.adminURL+"/v1/database/creds/short", "")
	if code != http.StatusOK {
		t.Fatalf("creds: %d %s", code, body)
	}
	var creds struct {
		LeaseID string `json:"lease_id"`
		Data    struct {
			Username string `json:"username"`
		} `json:"data"`
	}
	json.Unmarshal([]byte(body), &creds)
	user := creds.Data.Username
	exists := func() bool {
		var n int
		if err := my.QueryRowContext(ctx, "SELECT count(*) FROM mysql.user WHERE user = ?", user).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	if !exists() {
		t.Fatal("the user was not created")
	}
	proxy.Stop()
	time.Sleep(5 * time.Second)
	if !exists() {
		t.Fatal("the user vanished while its database was unreachable")
	}
	out := r.adminCall(t, "GET", "/v1/sys/leases/lookup/database/creds/short/", "", http.StatusOK)
	if !strings.Contains(out, creds.LeaseID) || !strings.Contains(out, "revoke_attempts") {
		t.Fatalf("the lease is not kept with its failed attempts: %s", out)
	}
	proxy.Start()
	deadline := time.Now().Add(20 * time.Second)
	for exists() {
		if time.Now().After(deadline) {
			t.Fatalf("the user still exists 20 s after the database came back; leases: %s",
				r.adminCall(t, "GET", "/v1/sys/leases/lookup/database/creds/short/", "", http.StatusOK))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestLeaseManagerTakeover: two servers on one PostgreSQL database; the
// node running the lease manager stops, and the other takes the lock and
// revokes the lease on time.
func TestLeaseManagerTakeover(t *testing.T) {
	mysqlDSN := testMySQLDSN(t)
	a, b := startTwoNodes(t)
	// Whichever node holds the lock now, stop A; if B held it, nothing
	// changes, if A held it, B must take over.
	a.adminCall(t, "POST", "/v1/database/config/my", fmt.Sprintf(`{"plugin_name":"mysql","connection_url":%q,"allowed_roles":["*"]}`, mysqlDSN), http.StatusNoContent)
	a.adminCall(t, "POST", "/v1/database/roles/short", `{"db_name":"my","default_ttl":"3s","max_ttl":"3s",
		"creation_statements":["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'"]}`, http.StatusNoContent)
	code, body := call(t, a.admin, "GET", a.adminURL+"/v1/database/creds/short", "")
	if code != http.StatusOK {
		t.Fatalf("creds: %d %s", code, body)
	}
	var creds struct {
		Data struct {
			Username string `json:"username"`
		} `json:"data"`
	}
	json.Unmarshal([]byte(body), &creds)
	if b.barrier.Sealed() {
		t.Fatal("node B is sealed and cannot take over")
	}
	issued := time.Now()
	a.Close()
	my, err := sql.Open("mysql", mysqlDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer my.Close()
	for {
		var n int
		if err := my.QueryRowContext(t.Context(), "SELECT count(*) FROM mysql.user WHERE user = ?", creds.Data.Username).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Logf("revoked by the surviving node %v after issue (TTL 3s)", time.Since(issued).Round(100*time.Millisecond))
			break
		}
		if time.Since(issued) > 3*time.Second+5*time.Second {
			t.Fatal("the surviving node did not revoke the lease within 5 s of its TTL")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
