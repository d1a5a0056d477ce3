package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// secretPolicy lets every team-a workload manage secret/team-a/*, except
// secret/team-a/root, which nobody may touch.
const secretPolicy = `rules:
  - spiffe_id: spiffe://sigil.test/ns/{ns}/sa/*
    paths: ["secret/{ns}/*"]
    capabilities: [read, create, update, delete, list]
  - spiffe_id: spiffe://sigil.test/*
    paths: ["secret/team-a/root"]
    capabilities: [deny]
`

// runExit runs a command with stdin and returns its exit status and
// combined output.
func runExit(t *testing.T, env []string, stdin string, name string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	return 0, ""
}

// wantLine fails unless out has a line matching the regular expression.
func wantLine(t *testing.T, what, out, re string) {
	t.Helper()
	if !regexp.MustCompile(`(?m)^` + re + `$`).MatchString(out) {
		t.Fatalf("%s: no line matching %q in\n%s", what, re, out)
	}
}

// wantError fails unless out is one "Error: ..." line containing all of
// want.
func wantError(t *testing.T, what, out string, want ...string) {
	t.Helper()
	if !strings.HasPrefix(out, "Error: ") || strings.Count(out, "\n") != 1 {
		t.Fatalf("%s: want one Error: line, got %q", what, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("%s: %q lacks %q", what, out, w)
		}
	}
}

// TestSecretCLI walks through 'sigil policy' as the operator and 'sigil
// secret' as a workload: first with its SVID from the Workload API, then
// with the SVID written to files.
func TestSecretCLI(t *testing.T) {
	dir := t.TempDir()
	p, info := startDev(t, dir)
	op, bin := info.env(), sigilBinary(t)

	// Policies, as the operator.
	pf := filepath.Join(dir, "teams.yaml")
	if err := os.WriteFile(pf, []byte(secretPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	wantLine(t, "policy write", run(t, true, op, bin, "policy", "write", "teams", pf), `Wrote policy teams \(revision \d+\)`)
	if out := run(t, true, op, bin, "policy", "list"); out != "teams\n" {
		t.Fatalf("policy list: %q", out)
	}
	if out := run(t, true, op, bin, "policy", "read", "teams"); !strings.Contains(out, secretPolicy) {
		t.Fatalf("policy read does not give back the document:\n%s", out)
	}
	bad := "rules:\n  - spiffe_id: spiffe://sigil.test/x\n    paths: [\"secret/x/*\"]\n    capabilities: [read, fly]\n"
	code, out := runExit(t, op, bad, bin, "policy", "write", "bad", "-")
	if code == 0 {
		t.Fatalf("bad policy accepted: %s", out)
	}
	wantError(t, "bad policy", out, "rule 1", "capabilities", `unknown capability "fly"`)
	out = run(t, true, op, bin, "policy", "check", "--spiffe-id", "spiffe://sigil.test/ns/team-a/sa/app", "--path", "secret/team-a/db", "--capability", "read")
	wantLine(t, "policy check allowed", out, `allowed by policy "teams" rule 1 .*secret/team-a/\*.*`)
	code, out = runExit(t, op, "", bin, "policy", "check", "--spiffe-id", "spiffe://sigil.test/ns/team-a/sa/app", "--path", "secret/team-a/root", "--capability", "read", "--exit-code")
	if code != exitDenied {
		t.Fatalf("policy check --exit-code of a denial: exit %d\n%s", code, out)
	}
	wantLine(t, "policy check denied", out, `denied by policy "teams" rule 2 \(deny .*`)
	out = run(t, true, op, bin, "policy", "check", "--spiffe-id", "spiffe://sigil.test/ns/team-b/sa/app", "--path", "secret/team-a/db", "--capability", "read")
	wantLine(t, "policy check default deny", out, `denied: no rule grants read .*`)

	run(t, true, op, bin, "entry", "create", "--spiffe-id", "spiffe://sigil.test/ns/team-a/sa/app", "--selector", "unix:uid:"+strconv.Itoa(os.Getuid()))

	// Secrets, as the workload through the socket. No CA file and no
	// operator certificate: the server is checked with the trust bundle.
	ws := []string{"SIGIL_ADDR=" + info.HTTPSURL, "SPIFFE_ENDPOINT_SOCKET=unix://" + devSocket(t, dir),
		"SIGIL_CACERT=", "SIGIL_CLIENT_CERT=", "SIGIL_CLIENT_KEY="}
	secret := func(wantOK bool, args ...string) string {
		t.Helper()
		return run(t, wantOK, ws, bin, append([]string{"secret"}, args...)...)
	}
	const db = "secret/team-a/db"
	wantLine(t, "put 1", secret(true, "put", db, "user=app", "password=pw1"), `Version\s+1`)
	wantLine(t, "put 2", secret(true, "put", db, "user=app", "password=pw2"), `Version\s+2`)
	out = secret(true, "get", db)
	wantLine(t, "get", out, `Version\s+2`)
	wantLine(t, "get", out, `password\s+pw2`)
	wantLine(t, "get", out, `user\s+app`)
	wantLine(t, "get --version 1", secret(true, "get", db, "--version", "1"), `password\s+pw1`)
	if out := secret(true, "get", db, "--field", "password"); out != "pw2" {
		t.Fatalf("get --field: %q, want the bare value", out)
	}
	var doc struct {
		Data     map[string]string `json:"data"`
		Metadata struct {
			Version int64 `json:"version"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal([]byte(secret(true, "get", db, "--format", "json")), &doc); err != nil || doc.Data["user"] != "app" || doc.Metadata.Version != 2 {
		t.Fatalf("get --format json: %+v %v", doc, err)
	}
	if out := secret(true, "list", "secret/team-a"); out != "db\n" {
		t.Fatalf("list: %q", out)
	}
	wantError(t, "put with a stale cas", secret(false, "put", db, "user=x", "--cas", "1"), "check-and-set")

	out = secret(true, "history", db)
	wantLine(t, "history", out, `Current version\s+2`)
	wantLine(t, "history", out, `Oldest version\s+1`)
	wantLine(t, "history", out, `1\s+\S+Z\s+-\s+false`)

	wantLine(t, "delete", secret(true, "delete", db), `Deleted the latest version of secret/team-a/db`)
	wantError(t, "get of a deleted version", secret(false, "get", db), "version 2 of secret/team-a/db was deleted", "undelete")
	wantLine(t, "get --version 1 after delete", secret(true, "get", db, "--version", "1"), `password\s+pw1`)
	wantLine(t, "history after delete", secret(true, "history", db), `2\s+\S+Z\s+\S+Z\s+false`)
	secret(true, "undelete", db, "--versions", "2")
	if out := secret(true, "get", db, "--field", "password"); out != "pw2" {
		t.Fatalf("get after undelete: %q", out)
	}
	wantLine(t, "destroy", secret(true, "destroy", db, "--versions", "1"), `Destroyed version 1 of secret/team-a/db`)
	wantError(t, "get of a destroyed version", secret(false, "get", db, "--version", "1"), "version 1 of secret/team-a/db is destroyed")
	wantError(t, "get of nothing", secret(false, "get", "secret/team-a/none"), "no secret at secret/team-a/none")

	// Denied: the deny rule, and a path no rule grants.
	wantError(t, "denied read", secret(false, "get", "secret/team-a/root"),
		"permission denied for spiffe://sigil.test/ns/team-a/sa/app", `denied by policy "teams" rule 2`)
	wantError(t, "default deny", secret(false, "put", "secret/team-b/x", "a=b"),
		"permission denied", "no rule grants create on secret/team-b/x")

	// The same workload with its SVID in files: key=@file and a JSON
	// object on stdin.
	svidDir := filepath.Join(dir, "svid")
	run(t, true, ws, bin, "workload", "x509", "--write", svidDir)
	files := []string{"SIGIL_ADDR=" + info.HTTPSURL, "SPIFFE_ENDPOINT_SOCKET=", "SIGIL_CACERT=", "SIGIL_CLIENT_CERT=", "SIGIL_CLIENT_KEY="}
	withFiles := []string{"--cert", filepath.Join(svidDir, "svid.0.pem"), "--key", filepath.Join(svidDir, "svid.0.key"), "--ca-cert", filepath.Join(svidDir, "bundle.pem")}
	pemFile := filepath.Join(dir, "tls.pem")
	const pemValue = "-----BEGIN X-----\nAAAA\n-----END X-----\n"
	if err := os.WriteFile(pemFile, []byte(pemValue), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out = runExit(t, files, `{"port": 5432, "tls": {"on": true}}`, bin,
		append([]string{"secret", "put", "secret/team-a/cfg", "-", "cert=@" + pemFile}, withFiles...)...)
	if code != 0 {
		t.Fatalf("put from stdin and a file: exit %d\n%s", code, out)
	}
	if out := run(t, true, files, bin, append([]string{"secret", "get", db, "--field", "user"}, withFiles...)...); out != "app" {
		t.Fatalf("get with --cert/--key: %q", out)
	}
	for field, want := range map[string]string{"cert": pemValue, "port": "5432", "tls": `{"on":true}`} {
		if out := run(t, true, files, bin, append([]string{"secret", "get", "secret/team-a/cfg", "--field", field}, withFiles...)...); out != want {
			t.Fatalf("get --field %s: %q, want %q", field, out, want)
		}
	}

	// Values never reach the server's log.
	for _, v := range []string{"pw1", "pw2", "AAAA"} {
		if strings.Contains(p.out.String(), v) {
			t.Fatalf("the server logged the value %q", v)
		}
	}
}
