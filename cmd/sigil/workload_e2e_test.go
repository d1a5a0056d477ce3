package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// Environment of the test binary when it runs as a workload of its own
// (see runTestWorkload).
const (
	envWorkloadMode = "SIGIL_TEST_WORKLOAD"
	envSocket       = "SIGIL_TEST_SOCKET"
	envDialAddr     = "SIGIL_TEST_DIAL"
	envServerID     = "SIGIL_TEST_SERVER_ID"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envWorkloadMode); mode != "" {
		os.Exit(runTestWorkload(mode))
	}
	os.Exit(m.Run())
}

// runTestWorkload is a second workload: it gets its SVIDs from the socket,
// prints their IDs, then calls the mTLS server at envDialAddr, which must
// present envServerID, and prints the answer. Exit 2: no SVID; exit 3: the
// mTLS call failed.
func runTestWorkload(mode string) int {
	if mode != "dial" {
		fmt.Fprintln(os.Stderr, "unknown mode", mode)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+os.Getenv(envSocket))))
	if err != nil {
		fmt.Fprintln(os.Stderr, "X509Source:", err)
		return 2
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		fmt.Fprintln(os.Stderr, "SVID:", err)
		return 2
	}
	fmt.Println("svid", svid.ID)
	serverID, err := spiffeid.FromString(os.Getenv(envServerID))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(serverID)),
	}}
	resp, err := client.Get("https://" + os.Getenv(envDialAddr) + "/")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mTLS call:", err)
		return 3
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	return 0
}

// needRoot: switching to other uids needs root; CI runs as root and must
// not skip.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test runs workloads as other users and needs root; CI=true forbids skipping")
	}
	t.Skip("needs root to run workloads as other users")
}

// sharedTempDir is a temp dir other users can traverse, removed at the end
// of the test.
func sharedTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sigil-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// asUser runs a command as uid:gid (same number) and returns its exit
// code, stdout and stderr.
func asUser(t *testing.T, uid int, env []string, name string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=/"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %s as uid %d: %v", name, uid, err)
	}
	return code, out.String(), errOut.String()
}

// copyExecutable copies the running test binary where other users can
// run it.
func copyExecutable(t *testing.T, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "workload.test")
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestWorkloadsMTLS: three workloads, told apart only by the kernel's
// record of who they are. A (this process, root) serves mTLS and accepts
// only B; B (uid 4101) gets its SVID and is let in; C (uid 4102) gets its
// own SVID and is refused by tlsconfig.AuthorizeID; uid 4103 has no entry
// and gets PermissionDenied from 'sigil workload x509'; the sigil binary run as uid 4101 matches an
// extra entry that names its path, which the test binary as 4101 does not.
func TestWorkloadsMTLS(t *testing.T) {
	needRoot(t)
	shared := sharedTempDir(t)
	sock := filepath.Join(shared, "workload.sock")
	dir := t.TempDir()
	_, info := startDev(t, dir, "--workload-socket", sock)
	env := info.env()
	bin := sigilBinary(t)
	worker := copyExecutable(t, shared)

	for _, e := range [][]string{
		{"--spiffe-id", "spiffe://sigil.test/a", "--selector", "unix:uid:0"},
		{"--spiffe-id", "spiffe://sigil.test/b", "--selector", "unix:uid:4101"},
		{"--spiffe-id", "spiffe://sigil.test/c", "--selector", "unix:uid:4102"},
		{"--spiffe-id", "spiffe://sigil.test/b-cli", "--selector", "unix:uid:4101", "--selector", "unix:path:" + bin},
	} {
		run(t, true, env, bin, append([]string{"entry", "create"}, e...)...)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+sock)))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	own, err := src.GetX509SVID()
	if err != nil || own.ID.String() != "spiffe://sigil.test/a" {
		t.Fatalf("A's SVID: %v %v", own, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused syncBuffer
	srv := &http.Server{
		TLSConfig: tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://sigil.test/b"))),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
			if err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			fmt.Fprintf(w, "hello %s from A", id)
		}),
		ErrorLog: log.New(&refused, "", 0),
	}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()

	workerEnv := []string{envWorkloadMode + "=dial", envSocket + "=" + sock, envDialAddr + "=" + ln.Addr().String(), envServerID + "=spiffe://sigil.test/a"}

	code, out, errOut := asUser(t, 4101, workerEnv, worker)
	if code != 0 || !strings.Contains(out, "svid spiffe://sigil.test/b\n") || !strings.Contains(out, "hello spiffe://sigil.test/b from A") {
		t.Fatalf("B (uid 4101): exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = asUser(t, 4102, workerEnv, worker)
	if code != 3 || !strings.Contains(out, "svid spiffe://sigil.test/c\n") {
		t.Fatalf("C (uid 4102): exit %d, want 3 (refused)\n%s%s", code, out, errOut)
	}
	// The server logs the failed handshake on its own goroutine, maybe
	// after C has exited.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(refused.String(), "unexpected ID \"spiffe://sigil.test/c\""); {
		if time.Now().After(deadline) {
			t.Errorf("A did not refuse C through AuthorizeID; server log:\n%s", refused.String())
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	code, out, errOut = asUser(t, 4103, []string{"SPIFFE_ENDPOINT_SOCKET=unix://" + sock}, bin, "workload", "x509")
	if code == 0 || !strings.Contains(errOut, "PermissionDenied") {
		t.Errorf("uid 4103 without an entry: exit %d, want PermissionDenied\n%s%s", code, out, errOut)
	}
	// Another binary, same uid: the path selector tells them apart.
	code, out, errOut = asUser(t, 4101, []string{"SPIFFE_ENDPOINT_SOCKET=unix://" + sock}, bin, "workload", "x509")
	if code != 0 || !strings.Contains(out, "spiffe://sigil.test/b\n") || !strings.Contains(out, "spiffe://sigil.test/b-cli\n") {
		t.Errorf("sigil as uid 4101: exit %d, want both /b and /b-cli\n%s%s", code, out, errOut)
	}
}

// TestX509SourceRotates: with a 10 s TTL, go-spiffe's X509Source holds a
// new SVID before the first one expires, pushed by the server.
func TestX509SourceRotates(t *testing.T) {
	dir := t.TempDir()
	_, info := startDev(t, dir)
	run(t, true, info.env(), sigilBinary(t), "entry", "create", "--spiffe-id", "spiffe://sigil.test/short",
		"--selector", "unix:uid:"+strconv.Itoa(os.Getuid()), "--x509-ttl", "10s")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+devSocket(t, dir))))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	first, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	leaf := first.Certificates[0]
	if left := time.Until(leaf.NotAfter); left > 10*time.Second {
		t.Fatalf("SVID valid for %v more, want at most the entry's 10s", left)
	}
	for {
		cur, err := src.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		if c := cur.Certificates[0]; c.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			if !time.Now().Before(leaf.NotAfter) {
				t.Fatalf("rotated SVID arrived at %v, after the first expired at %v", time.Now(), leaf.NotAfter)
			}
			if cur.ID != first.ID || !c.NotAfter.After(leaf.NotAfter) {
				t.Fatalf("rotated SVID %s until %v", cur.ID, c.NotAfter)
			}
			return
		}
		if !time.Now().Before(leaf.NotAfter) {
			t.Fatalf("no rotated SVID before the first expired at %v", leaf.NotAfter)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func devSocket(t *testing.T, dir string) string {
	t.Helper()
	var dj struct {
		Socket string `json:"workload_socket"`
	}
	getJSONFile(t, filepath.Join(dir, "dev.json"), &dj)
	return dj.Socket
}

// TestEntryChangesReachOpenStream: entries created and deleted with the
// CLI reach an open FetchX509SVID stream, pushed: the stream's own
// refresh is half an hour away, so an update seen within the wait below
// was pushed. (How fast, 10 ms median, is BenchmarkEntryToStream's
// business; the wait leaves room for a loaded CI machine.)
func TestEntryChangesReachOpenStream(t *testing.T) {
	dir := t.TempDir()
	_, info := startDev(t, dir)
	env, bin := info.env(), sigilBinary(t)
	uid := "unix:uid:" + strconv.Itoa(os.Getuid())
	run(t, true, env, bin, "entry", "create", "--spiffe-id", "spiffe://sigil.test/first", "--selector", uid)

	client, err := workloadapi.New(t.Context(), workloadapi.WithAddr("unix://"+devSocket(t, dir)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	updates := make(chan []string, 16)
	go client.WatchX509Context(t.Context(), x509IDs(func(ids []string) { updates <- ids }))
	next := func(what string) []string {
		select {
		case ids := <-updates:
			return ids
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: nothing pushed within 10s", what)
		}
		return nil
	}
	if ids := next("first fetch"); !slices.Equal(ids, []string{"spiffe://sigil.test/first"}) {
		t.Fatalf("first update %v", ids)
	}
	out := run(t, true, env, bin, "entry", "create", "--spiffe-id", "spiffe://sigil.test/second", "--selector", uid)
	if ids := next("entry create"); !slices.Contains(ids, "spiffe://sigil.test/second") || len(ids) != 2 {
		t.Fatalf("after create %v", ids)
	}
	id := entryIDFrom(t, out)
	run(t, true, env, bin, "entry", "delete", id)
	if ids := next("entry delete"); !slices.Equal(ids, []string{"spiffe://sigil.test/first"}) {
		t.Fatalf("after delete %v", ids)
	}
}

type x509IDs func([]string)

func (f x509IDs) OnX509ContextUpdate(c *workloadapi.X509Context) {
	var ids []string
	for _, s := range c.SVIDs {
		ids = append(ids, s.ID.String())
	}
	slices.Sort(ids)
	f(ids)
}
func (x509IDs) OnX509ContextWatchError(error) {}

// TestJWTSVIDThroughDev: a JWT-SVID from the socket verifies with go-spiffe
// against the JWKS that /bundle serves, validates through the Workload API
// and the CLI, and its mint is on the log by hash, not by value.
func TestJWTSVIDThroughDev(t *testing.T) {
	dir := t.TempDir()
	_, info := startDev(t, dir)
	env, bin := append(info.env(), "SIGIL_LOG_KEY="+logKeyOf(t, dir)), sigilBinary(t)
	run(t, true, env, bin, "entry", "create", "--spiffe-id", "spiffe://sigil.test/api", "--selector", "unix:uid:"+strconv.Itoa(os.Getuid()), "--jwt-ttl", "2m")
	sockEnv := append(env, "SPIFFE_ENDPOINT_SOCKET=unix://"+devSocket(t, dir))
	token, _, _ := strings.Cut(run(t, true, sockEnv, bin, "workload", "jwt", "--audience", "orders"), "\n")

	resp, err := http.Get(info.HTTPURL + "/bundle")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/bundle: %s %s", resp.Status, body)
	}
	bundle, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString("sigil.test"), body)
	if err != nil {
		t.Fatalf("/bundle is not a SPIFFE bundle: %v\n%s", err, body)
	}
	if len(bundle.X509Authorities()) == 0 || len(bundle.JWTAuthorities()) == 0 {
		t.Fatalf("/bundle has %d X.509 and %d JWT authorities", len(bundle.X509Authorities()), len(bundle.JWTAuthorities()))
	}
	svid, err := jwtsvid.ParseAndValidate(token, bundle, []string{"orders"})
	if err != nil {
		t.Fatalf("ParseAndValidate against /bundle: %v", err)
	}
	if svid.ID.String() != "spiffe://sigil.test/api" || time.Until(svid.Expiry) > 2*time.Minute {
		t.Fatalf("JWT-SVID %s until %v", svid.ID, svid.Expiry)
	}
	if out := run(t, true, sockEnv, bin, "workload", "validate", "--audience", "orders", "--svid", token); !strings.Contains(out, "Valid JWT-SVID for spiffe://sigil.test/api") {
		t.Fatalf("validate: %s", out)
	}
	if out := run(t, false, sockEnv, bin, "workload", "validate", "--audience", "billing", "--svid", token); !strings.Contains(out, "InvalidArgument") {
		t.Fatalf("validate for another audience: %s", out)
	}
	sum := sha256.Sum256([]byte(token))
	logged := run(t, true, env, bin, "log", "show", "--kind", "jwt.issue")
	if !strings.Contains(logged, hex.EncodeToString(sum[:])) || strings.Contains(logged, token) {
		t.Fatalf("log holds no hash of the token, or the token itself:\n%s", logged)
	}

	// Rotating the JWT key keeps the old token valid and publishes both.
	run(t, true, env, bin, "ca", "rotate-jwt")
	resp, err = http.Get(info.HTTPURL + "/bundle")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	rotated, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString("sigil.test"), body)
	if err != nil || len(rotated.JWTAuthorities()) != 2 {
		t.Fatalf("after rotate-jwt /bundle has %d JWT keys (%v)", len(rotated.JWTAuthorities()), err)
	}
	if _, err := jwtsvid.ParseAndValidate(token, rotated, []string{"orders"}); err != nil {
		t.Fatalf("old token after rotation: %v", err)
	}
}

var entryIDRE = regexp.MustCompile(`Entry ID\s+([0-9a-f]{32})`)

// entryIDFrom returns the entry ID that 'sigil entry create' printed.
func entryIDFrom(t *testing.T, out string) string {
	t.Helper()
	m := entryIDRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no entry ID in %q", out)
	}
	return m[1]
}

func getJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
