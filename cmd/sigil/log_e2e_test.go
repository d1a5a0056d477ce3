package main

// End-to-end tests of the transparency log with the real binary: every
// certificate a client receives is provably in the log, across kill -9,
// and tampering with stored tiles is caught by `sigil log verify`.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/sigil-pki/sigil/server"
	"github.com/sigil-pki/sigil/tlog"
)

// devClient is an operator HTTPS client for a dev server.
func devClient(t *testing.T, d devJSON) *http.Client {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(d.OperatorCert, d.OperatorKey)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := os.ReadFile(d.RootCA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots},
		MaxIdleConnsPerHost: 64,
	}}
}

// issueOne asks the admin API for an SVID and returns the certificate DER.
func issueOne(ctx context.Context, c *http.Client, base string, key *ecdsa.PrivateKey, id string) ([]byte, error) {
	u, _ := url.Parse(id)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(server.IssueRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/ca/issue", bytes.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	var out server.IssueResponse
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	blk, _ := pem.Decode([]byte(out.Certificate))
	if blk == nil {
		return nil, errors.New("no certificate in the answer")
	}
	return blk.Bytes, nil
}

func logKeyOf(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "dev.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Key string `json:"log_public_key"`
	}
	if err := json.Unmarshal(b, &v); err != nil || v.Key == "" {
		t.Fatalf("dev.json has no log_public_key: %v", err)
	}
	return v.Key
}

// TestLogVerifyThousandCertificates: 1000 certificates issued concurrently;
// `sigil log verify --cert` proves every one of them in the log.
func TestLogVerifyThousandCertificates(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 100
	}
	dir := t.TempDir()
	_, info := startDev(t, dir)
	client := devClient(t, info)
	certDir := filepath.Join(dir, "certs")
	os.MkdirAll(certDir, 0o755)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				der, err := issueOne(t.Context(), client, info.HTTPSURL, key, fmt.Sprintf("spiffe://sigil.test/w/%d", i))
				if err != nil {
					t.Error(err)
					return
				}
				os.WriteFile(filepath.Join(certDir, fmt.Sprintf("%d.pem", i)), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	env := append(info.env(), "SIGIL_LOG_KEY="+logKeyOf(t, dir))
	bin := sigilBinary(t)
	next.Store(0)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(n) && !t.Failed(); i = next.Add(1) {
				out := run(t, true, env, bin, "log", "verify", "--state", "", "--cert", filepath.Join(certDir, fmt.Sprintf("%d.pem", i)))
				if !strings.Contains(out, "Included") {
					t.Errorf("certificate %d: %s", i, out)
				}
			}
		}()
	}
	wg.Wait()
}

// TestLogSurvivesKill9: kill -9 during concurrent issuance, restart: every
// certificate a client received is in the log, and every checkpoint served
// before the crash is consistent with the one after.
func TestLogSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	p, info := startDev(t, dir)
	client := devClient(t, info)
	vkey := logKeyOf(t, dir)
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var (
		mu          sync.Mutex
		received    [][]byte
		checkpoints []tlog.Checkpoint
		wg          sync.WaitGroup
	)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			for i := 0; ctx.Err() == nil; i++ {
				der, err := issueOne(ctx, client, info.HTTPSURL, key, fmt.Sprintf("spiffe://sigil.test/k/%d/%d", w, i))
				if err != nil {
					return // the server died under us: this one was never received
				}
				mu.Lock()
				received = append(received, der)
				mu.Unlock()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			resp, err := http.Get(info.HTTPURL + "/log/checkpoint")
			if err != nil {
				return
			}
			text, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if cp, err := tlog.VerifyCheckpoint(text, verifier); err == nil {
				mu.Lock()
				checkpoints = append(checkpoints, cp)
				mu.Unlock()
			}
		}
	}()
	// Let some work happen, then kill -9 in the middle of it.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		got := len(received)
		mu.Unlock()
		if got >= 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	cancel()
	wg.Wait()
	if len(received) == 0 || len(checkpoints) == 0 {
		t.Fatalf("nothing happened before the kill: %d certificates, %d checkpoints", len(received), len(checkpoints))
	}

	_, info = startDev(t, dir)
	resp, err := http.Get(info.HTTPURL + "/log/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	after, err := tlog.VerifyCheckpoint(text, verifier)
	if err != nil {
		t.Fatal(err)
	}
	for _, cp := range checkpoints {
		if cp.Size > after.Size {
			t.Fatalf("checkpoint of size %d served before the crash, only %d after", cp.Size, after.Size)
		}
		if cp.Size == 0 || cp.Size == after.Size {
			if cp.Size == after.Size && cp.Root != after.Root {
				t.Fatalf("fork at size %d", cp.Size)
			}
			continue
		}
		var pr server.ProofResponse
		getJSON(t, fmt.Sprintf("%s/log/proof/consistency?from=%d&to=%d", info.HTTPURL, cp.Size, after.Size), &pr)
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(cp.Size), uint64(after.Size), decodeB64(t, pr.Hashes), cp.Root[:], after.Root[:]); err != nil {
			t.Fatalf("checkpoint %d before the crash is not consistent with %d after: %v", cp.Size, after.Size, err)
		}
	}
	// Every certificate a client received is in the log: read every entry
	// bundle and prove each matching entry's inclusion.
	want := map[[32]byte]bool{}
	for _, der := range received {
		want[sha256Sum(der)] = true
	}
	for i := int64(0); i < after.Size; i++ {
		raw := entryAt(t, info.HTTPURL, i, after.Size)
		e, err := tlog.ParseEntry(raw)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if !want[e.Subject.CertSHA256] {
			continue
		}
		var pr server.ProofResponse
		getJSON(t, fmt.Sprintf("%s/log/proof/inclusion?index=%d&size=%d", info.HTTPURL, i, after.Size), &pr)
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(i), uint64(after.Size), rfc6962.DefaultHasher.HashLeaf(raw), decodeB64(t, pr.Hashes), after.Root[:]); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		delete(want, e.Subject.CertSHA256)
	}
	if len(want) != 0 {
		t.Fatalf("%d of %d certificates handed out before the crash are not in the log", len(want), len(received))
	}
	t.Logf("%d certificates and %d checkpoints before kill -9; log size %d after restart", len(received), len(checkpoints), after.Size)
}

// TestLogVerifyDetectsTampering: change one stored entry, then one hash
// tile; `sigil log verify` fails naming the entry.
func TestLogVerifyDetectsTampering(t *testing.T) {
	dir := t.TempDir()
	p, info := startDev(t, dir)
	client := devClient(t, info)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for i := range 5 {
		if _, err := issueOne(t.Context(), client, info.HTTPSURL, key, fmt.Sprintf("spiffe://sigil.test/t/%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	env := append(info.env(), "SIGIL_LOG_KEY="+logKeyOf(t, dir))
	bin := sigilBinary(t)
	state := filepath.Join(dir, "state.json")
	out := run(t, true, env, bin, "log", "verify", "--state", state, "--index", "2")
	if !strings.Contains(out, "Included      entry 2") {
		t.Fatalf("verify before tampering: %s", out)
	}
	// A checkpoint signed by another key is refused.
	_, otherKey, err := tlog.GenerateKey("sigil.test/sigil-log")
	if err != nil {
		t.Fatal(err)
	}
	out = run(t, false, append(info.env(), "SIGIL_LOG_KEY="+otherKey), bin, "log", "verify", "--state", "")
	if !strings.Contains(out, "Error: checkpoint does not verify") {
		t.Fatalf("wrong key: %s", out)
	}
	// A state file remembering another root at the same size is a fork.
	forked := filepath.Join(dir, "forked.json")
	b, _ := os.ReadFile(state)
	var st logState
	json.Unmarshal(b, &st)
	st.Root[0] ^= 1
	b, _ = json.Marshal(st)
	os.WriteFile(forked, b, 0o600)
	out = run(t, false, env, bin, "log", "verify", "--state", forked)
	if !strings.Contains(out, "Error: fork") {
		t.Fatalf("fork not detected: %s", out)
	}
	p.stop(t)

	db, err := sql.Open("sqlite3", filepath.Join(dir, "sigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	flip := func(path string, at func(data []byte) int) {
		t.Helper()
		var data []byte
		if err := db.QueryRow(`SELECT data FROM tlog_tiles WHERE path = ?`, path).Scan(&data); err != nil {
			t.Fatalf("reading %s: %v", path, err)
		}
		data[at(data)] ^= 0x01
		if _, err := db.Exec(`UPDATE tlog_tiles SET data = ? WHERE path = ?`, data, path); err != nil {
			t.Fatal(err)
		}
	}
	// The last byte of the entry bundle belongs to its last entry.
	var width int64
	if err := db.QueryRow(`SELECT width FROM tlog_tiles WHERE path = 'tile/entries/000'`).Scan(&width); err != nil {
		t.Fatal(err)
	}
	flip("tile/entries/000", func(d []byte) int { return len(d) - 1 })
	_, info = startDev(t, dir)
	env = append(info.env(), "SIGIL_LOG_KEY="+logKeyOf(t, dir))
	last := width - 1
	out = run(t, false, env, bin, "log", "verify", "--state", state, "--index", fmt.Sprint(last))
	errLine := out[strings.LastIndex(out, "Error: "):]
	if !strings.Contains(errLine, fmt.Sprintf("entry %d ", last)) || strings.Count(strings.TrimSpace(errLine), "\n") != 0 {
		t.Fatalf("tampered entry %d not named in one error line: %s", last, out)
	}
	// A hash tile altered: proofs through it fail.
	flip("tile/0/000", func(d []byte) int { return 0 })
	out = run(t, false, env, bin, "log", "verify", "--state", "", "--index", "1")
	if !strings.Contains(out, "Error: entry 1 ") {
		t.Fatalf("tampered hash tile not caught: %s", out)
	}
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func decodeB64(t *testing.T, in []string) [][]byte {
	t.Helper()
	out := make([][]byte, len(in))
	for i, s := range in {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

// entryAt reads entry i from the entry bundles, as any tlog-tiles client.
func entryAt(t *testing.T, base string, i, size int64) []byte {
	t.Helper()
	n := i / entriesPerBundle
	p := tlog.TilePath{Entries: true, Index: n}
	if w := size - n*entriesPerBundle; w < entriesPerBundle {
		p.Width = int(w)
	}
	resp, err := http.Get(base + "/log/" + p.String())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for k := int64(0); ; k++ {
		if len(b) < 2 {
			t.Fatalf("entry %d missing from bundle %s", i, p)
		}
		l := int(b[0])<<8 | int(b[1])
		if k == i%entriesPerBundle {
			return b[2 : 2+l]
		}
		b = b[2+l:]
	}
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
