// Package hsmtest gives tests real SoftHSM2 tokens: a fresh token with a
// unique label and a random PIN per call.
//
// It owns one SoftHSM2 configuration and token directory per test binary.
// It must never be imported by non-test code, and never touches tokens it
// did not create.
package hsmtest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/sigil-pki/sigil/hsm"
	"github.com/sigil-pki/sigil/hsm/internal/p11"
)

// InstallHint names the packages that provide SoftHSM2 and pkcs11-tool.
const InstallHint = "apt-get install softhsm2 opensc"

// modulePaths are where distributions install the SoftHSM2 module.
var modulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/opt/homebrew/lib/softhsm/libsofthsm2.so",
}

// ModulePath returns the path of the installed SoftHSM2 module, or an error
// matching fs.ErrNotExist that lists where it looked.
func ModulePath() (string, error) {
	for _, p := range modulePaths {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("SoftHSM2 module libsofthsm2.so not found in %s: %w",
		strings.Join(modulePaths, ", "), fs.ErrNotExist)
}

// Missing fails the test under CI (CI=true), where every real peer must be
// present, and skips it elsewhere. msg says what is missing.
func Missing(t testing.TB, msg string) {
	t.Helper()
	msg = fmt.Sprintf("%s (install with: %s)", msg, InstallHint)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

var (
	setupOnce sync.Once
	setupErr  error
	// initMu serialises token initialisation: two callers must not pick the
	// same free slot.
	initMu sync.Mutex
)

// dirPrefix starts the name of every token directory; the owning process's
// ID follows.
const dirPrefix = "sigil-softhsm-"

// setup points SoftHSM2 at a token directory private to this process.
// SoftHSM2 reads SOFTHSM2_CONF once, at C_Initialize, so every token of the
// test binary lives in this one directory. Nothing runs at process exit, so
// the directory outlives the process; the next setup removes it.
func setup() error {
	setupOnce.Do(func() {
		removeStaleDirs()
		dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", dirPrefix, os.Getpid()))
		if err != nil {
			setupErr = fmt.Errorf("creating SoftHSM2 directory: %w", err)
			return
		}
		tokens := filepath.Join(dir, "tokens")
		if err := os.Mkdir(tokens, 0o700); err != nil {
			setupErr = fmt.Errorf("creating SoftHSM2 token directory: %w", err)
			return
		}
		conf := filepath.Join(dir, "softhsm2.conf")
		body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			setupErr = fmt.Errorf("writing SoftHSM2 configuration: %w", err)
			return
		}
		setupErr = os.Setenv("SOFTHSM2_CONF", conf)
	})
	return setupErr
}

// NewToken returns a Config for a fresh SoftHSM2 token with a unique label
// and a random PIN. It fails or skips the test (see Missing) when SoftHSM2
// is not installed. The Config's logger writes to t.Log.
//
// The token is initialised through the process's own, shared module
// context: a token created by softhsm2-util after this process initialised
// SoftHSM2 would stay invisible to it until every user closed the module.
func NewToken(t testing.TB) hsm.Config {
	t.Helper()
	module, err := ModulePath()
	if err != nil {
		Missing(t, err.Error())
	}
	if err := setup(); err != nil {
		t.Fatal(err)
	}
	label := "sigil-test-" + randomHex(t, 8)
	pin := randomHex(t, 16)
	soPIN := randomHex(t, 16)
	if err := initToken(module, label, pin, soPIN); err != nil {
		t.Fatalf("creating SoftHSM2 token %s: %v", label, err)
	}
	return hsm.Config{
		Module:     module,
		TokenLabel: label,
		PIN:        pin,
		Logger:     slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// initToken initialises a free slot's token and sets its user PIN.
func initToken(module, label, pin, soPIN string) (err error) {
	initMu.Lock()
	defer initMu.Unlock()
	mod, err := p11.Acquire(module)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, mod.Release()) }()
	p := mod.Ctx()

	slots, err := p.GetSlotList(true)
	if err != nil {
		return fmt.Errorf("listing slots: %w", err)
	}
	free, found := uint(0), false
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err == nil && ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			free, found = s, true
			break
		}
	}
	if !found {
		return errors.New("no free slot")
	}
	if err := p.InitToken(free, soPIN, label); err != nil {
		return fmt.Errorf("initialising token in slot %d: %w", free, err)
	}
	sh, err := p.OpenSession(free, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("opening session: %w", err)
	}
	defer func() { err = errors.Join(err, p.CloseSession(sh)) }()
	if err := p.Login(sh, pkcs11.CKU_SO, soPIN); err != nil {
		return fmt.Errorf("logging in as security officer: %w", err)
	}
	if err := p.InitPIN(sh, pin); err != nil {
		return fmt.Errorf("setting user PIN: %w", err)
	}
	if err := p.Logout(sh); err != nil {
		return fmt.Errorf("logging out: %w", err)
	}
	return nil
}

// removeStaleDirs removes the token directories of processes that have
// ended. A directory whose process may still run is left alone.
func removeStaleDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*-*"))
	for _, dir := range matches {
		pidText, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(dir), dirPrefix), "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		proc, err := os.FindProcess(pid)
		if err != nil {
			continue
		}
		if err := proc.Signal(syscall.Signal(0)); errors.Is(err, os.ErrProcessDone) {
			os.RemoveAll(dir)
		}
	}
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// logWriter sends each record of a slog text handler to t.Log.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
