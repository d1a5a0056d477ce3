//go:build linux

package attest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// The test binary doubles as a peer process when these are set.
const (
	envPeerMode = "SIGIL_ATTEST_TEST_PEER"
	envPeerSock = "SIGIL_ATTEST_TEST_SOCK"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envPeerMode); mode != "" {
		os.Exit(runPeer(mode, os.Getenv(envPeerSock)))
	}
	os.Exit(m.Run())
}

// runPeer connects to sock, sends one byte, and then either holds the
// connection until the server closes it ("hold") or exits at once ("exit").
func runPeer(mode, sock string) int {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		os.Stderr.WriteString("peer: " + err.Error() + "\n")
		return 2
	}
	if _, err := conn.Write([]byte{1}); err != nil {
		os.Stderr.WriteString("peer: " + err.Error() + "\n")
		return 2
	}
	switch mode {
	case "hold":
		_, _ = io.Copy(io.Discard, conn)
		return 0
	case "exit":
		return 0
	default:
		os.Stderr.WriteString("peer: unknown mode " + mode + "\n")
		return 2
	}
}

func listen(t *testing.T) (*net.UnixListener, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "workload.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatalf("listening on %s: %v", sock, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, sock
}

// acceptPeer accepts one connection and reads the byte every peer sends
// first, so the peer is known to be connected.
func acceptPeer(t *testing.T, ln *net.UnixListener) *net.UnixConn {
	t.Helper()
	conn, err := ln.AcceptUnix()
	if err != nil {
		t.Fatalf("accepting: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		t.Fatalf("reading first byte from peer: %v", err)
	}
	return conn
}

// startPeer runs the binary at exe as a peer in the given mode.
func startPeer(t *testing.T, exe, mode, sock string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envPeerMode+"="+mode, envPeerSock+"="+sock)
	cmd.Stderr = &testWriter{t: t}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting peer %s: %v", exe, err)
	}
	return cmd
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("peer stderr: %s", bytes.TrimSpace(p))
	return len(p), nil
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func testExecutable(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("finding test executable: %v", err)
	}
	exe, err = filepath.EvalSymlinks(exe)
	if err != nil {
		t.Fatalf("resolving test executable: %v", err)
	}
	return exe
}

// copyExecutable copies the test binary to dir with extra trailing bytes, so
// the copy runs the same but has its own path and hash.
func copyExecutable(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(testExecutable(t))
	if err != nil {
		t.Fatalf("reading test executable: %v", err)
	}
	dst := filepath.Join(dir, "peer-copy")
	b = append(b, []byte("sigil attest test copy")...)
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatalf("writing %s: %v", dst, err)
	}
	return dst
}

// idSelectorsOf is what the test expects for a process running with this
// process's effective ids and groups.
func idSelectorsOf(t *testing.T) []Selector {
	t.Helper()
	uid := strconv.Itoa(os.Geteuid())
	want := []Selector{unixSelector(KindUID, uid)}
	if u, err := user.LookupId(uid); err == nil && checkName(u.Username) == nil {
		want = append(want, unixSelector(KindUser, u.Username))
	}
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatalf("getting groups: %v", err)
	}
	for _, g := range append([]int{os.Getegid()}, groups...) {
		gid := strconv.Itoa(g)
		s := unixSelector(KindGID, gid)
		if slices.Contains(want, s) {
			continue
		}
		want = append(want, s)
		if grp, err := user.LookupGroupId(gid); err == nil && checkName(grp.Name) == nil {
			want = append(want, unixSelector(KindGroup, grp.Name))
		}
	}
	return want
}

func sortSelectors(s []Selector) []Selector {
	s = slices.Clone(s)
	slices.SortFunc(s, func(a, b Selector) int { return strings.Compare(a.String(), b.String()) })
	return s
}

func checkSelectors(t *testing.T, got, want []Selector) {
	t.Helper()
	for _, s := range got {
		if _, err := ParseSelector(s.String()); err != nil {
			t.Errorf("attested selector does not parse: %v", err)
		}
	}
	if diff := cmp.Diff(sortSelectors(want), sortSelectors(got)); diff != "" {
		t.Errorf("selectors mismatch (-want +got):\n%s", diff)
	}
}

func TestAttestSelf(t *testing.T) {
	ln, sock := listen(t)
	client, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatalf("dialing: %v", err)
	}
	t.Cleanup(func() { client.Close() })
	if _, err := client.Write([]byte{1}); err != nil {
		t.Fatalf("writing: %v", err)
	}
	server := acceptPeer(t, ln)

	exe := testExecutable(t)
	want := append(idSelectorsOf(t),
		unixSelector(KindPath, exe),
		unixSelector(KindSHA256, fileSHA256(t, exe)))

	a := New(Config{Logger: slog.New(slog.NewTextHandler(&testWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	for _, tc := range []struct {
		name string
		conn *net.UnixConn
	}{
		{"server end", server},
		{"client end", client},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := a.attest(t.Context(), tc.conn)
			if err != nil {
				t.Fatalf("attesting: %v", err)
			}
			if p.pid != os.Getpid() {
				t.Errorf("pid = %d, want %d", p.pid, os.Getpid())
			}
			checkSelectors(t, p.selectors, want)
		})
	}
	if n := a.cache.len(); n != 1 {
		t.Errorf("hash cache holds %d entries after attesting one binary twice, want 1", n)
	}
}

func TestAttestChild(t *testing.T) {
	ln, sock := listen(t)
	exe := copyExecutable(t, t.TempDir())
	cmd := startPeer(t, exe, "hold", sock)
	conn := acceptPeer(t, ln)

	a := New(Config{})
	p, attestErr := a.attest(t.Context(), conn)
	conn.Close()
	if err := cmd.Wait(); err != nil {
		t.Errorf("peer exited with %v", err)
	}
	if attestErr != nil {
		t.Fatalf("attesting child: %v", attestErr)
	}
	if p.pid != cmd.Process.Pid {
		t.Errorf("pid = %d, want child pid %d", p.pid, cmd.Process.Pid)
	}
	want := append(idSelectorsOf(t),
		unixSelector(KindPath, exe),
		unixSelector(KindSHA256, fileSHA256(t, exe)))
	checkSelectors(t, p.selectors, want)
	if self := fileSHA256(t, testExecutable(t)); slices.Contains(p.selectors, unixSelector(KindSHA256, self)) {
		t.Errorf("child attested with the parent binary's hash %s", self)
	}
}

func TestAttestExitedPeer(t *testing.T) {
	ln, sock := listen(t)
	cmd := startPeer(t, testExecutable(t), "exit", sock)
	conn := acceptPeer(t, ln)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("peer exited with %v", err)
	}

	sels, err := New(Config{}).Attest(t.Context(), conn)
	if !errors.Is(err, ErrPeerGone) {
		t.Fatalf("Attest after peer exit = %v, %v; want error wrapping ErrPeerGone", sels, err)
	}
	if sels != nil {
		t.Errorf("Attest returned selectors %v with an error", sels)
	}
	t.Logf("Attest after peer exit: %v", err)
}

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestAttestDeletedExecutable(t *testing.T) {
	ln, sock := listen(t)
	exe := copyExecutable(t, t.TempDir())
	cmd := startPeer(t, exe, "hold", sock)
	conn := acceptPeer(t, ln)
	if err := os.Remove(exe); err != nil {
		t.Fatalf("removing %s: %v", exe, err)
	}

	var logs syncBuffer
	a := New(Config{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	sels, attestErr := a.Attest(t.Context(), conn)
	conn.Close()
	if err := cmd.Wait(); err != nil {
		t.Errorf("peer exited with %v", err)
	}
	if attestErr != nil {
		t.Fatalf("attesting child with deleted executable: %v", attestErr)
	}
	checkSelectors(t, sels, idSelectorsOf(t))
	if got := logs.String(); !strings.Contains(got, "deleted") || !strings.Contains(got, "unix:path") {
		t.Errorf("debug log does not say the path was left out because the executable is deleted:\n%s", got)
	}
}

func TestAttestCanceledContext(t *testing.T) {
	ln, sock := listen(t)
	client, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatalf("dialing: %v", err)
	}
	t.Cleanup(func() { client.Close() })
	if _, err := client.Write([]byte{1}); err != nil {
		t.Fatalf("writing: %v", err)
	}
	server := acceptPeer(t, ln)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if sels, err := New(Config{}).Attest(ctx, server); !errors.Is(err, context.Canceled) {
		t.Errorf("Attest with canceled context = %v, %v; want context.Canceled", sels, err)
	}
}

func TestHashCacheBounded(t *testing.T) {
	c := newHashCache(2)
	k := func(i uint64) fileKey { return fileKey{dev: 1, ino: i, size: 10} }
	c.put(k(1), "one")
	c.put(k(2), "two")
	if _, ok := c.get(k(1)); !ok { // k(1) becomes most recently used
		t.Fatal("entry 1 missing before eviction")
	}
	c.put(k(3), "three")
	if n := c.len(); n != 2 {
		t.Errorf("cache holds %d entries, want 2", n)
	}
	if _, ok := c.get(k(2)); ok {
		t.Error("least recently used entry 2 was not evicted")
	}
	for i, want := range map[uint64]string{1: "one", 3: "three"} {
		if got, ok := c.get(k(i)); !ok || got != want {
			t.Errorf("get(%d) = %q, %v; want %q, true", i, got, ok, want)
		}
	}
	if _, ok := c.get(fileKey{dev: 1, ino: 1, size: 11}); ok {
		t.Error("a different size hit the cache")
	}

	disabled := New(Config{HashCacheSize: -1}).cache
	disabled.put(k(1), "one")
	if _, ok := disabled.get(k(1)); ok || disabled.len() != 0 {
		t.Error("negative HashCacheSize still caches")
	}
}

// TestCheckPidfd holds the final step on its own: a pidfd whose process was
// reaped, or that names another pid than the one read through, is rejected.
func TestCheckPidfd(t *testing.T) {
	self, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Fatalf("opening own pidfd: %v", err)
	}
	t.Cleanup(func() { unix.Close(self) })
	if err := checkPidfd(self, os.Getpid()); err != nil {
		t.Errorf("checkPidfd on a live process and its own pid: %v", err)
	}
	if err := checkPidfd(self, os.Getpid()+1); !errors.Is(err, ErrPeerGone) {
		t.Errorf("checkPidfd with another pid = %v, want ErrPeerGone", err)
	}

	ln, sock := listen(t)
	cmd := startPeer(t, testExecutable(t), "exit", sock)
	acceptPeer(t, ln)
	child, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatalf("opening child pidfd: %v", err)
	}
	t.Cleanup(func() { unix.Close(child) })
	if err := cmd.Wait(); err != nil {
		t.Fatalf("peer exited with %v", err)
	}
	if err := checkPidfd(child, cmd.Process.Pid); !errors.Is(err, ErrPeerGone) {
		t.Errorf("checkPidfd after the child was reaped = %v, want ErrPeerGone", err)
	}
}
