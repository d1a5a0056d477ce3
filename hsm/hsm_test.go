package hsm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-pki/sigil/hsm"
	"github.com/sigil-pki/sigil/hsm/hsmtest"
)

// openToken opens cfg's token and closes it when the test ends.
func openToken(t testing.TB, cfg hsm.Config) *hsm.Token {
	t.Helper()
	tok, err := hsm.Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := tok.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tok
}

func TestOpenWrongPIN(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	wrong := cfg
	wrong.PIN = "not-" + cfg.PIN
	_, err := hsm.Open(wrong)
	if err == nil {
		t.Fatal("Open with a wrong PIN succeeded")
	}
	for _, pin := range []string{wrong.PIN, cfg.PIN} {
		if strings.Contains(err.Error(), pin) {
			t.Fatalf("error %q contains a PIN", err)
		}
	}
	// The failed attempt leaves nothing behind: the right PIN still works.
	openToken(t, cfg)
}

// A second Open of a token already logged in by this process must still
// check the PIN, although PKCS#11 would not ask for it again.
func TestOpenWrongPINWhileLoggedIn(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	first := openToken(t, cfg)
	second := openToken(t, cfg)
	if err := second.Close(); err != nil {
		t.Fatalf("closing second Token: %v", err)
	}

	wrong := cfg
	wrong.PIN = "not-" + cfg.PIN
	if tok, err := hsm.Open(wrong); err == nil {
		tok.Close()
		t.Fatal("Open with a wrong PIN succeeded while the token was logged in")
	} else if strings.Contains(err.Error(), wrong.PIN) {
		t.Fatalf("error %q contains the PIN", err)
	}

	// Closing the second Token did not log the first one out.
	if err := first.GenerateAESKey(t.Context(), "still-logged-in"); err != nil {
		t.Fatalf("GenerateAESKey on the first Token: %v", err)
	}
}

func TestOpenInvalidConfig(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	tests := []struct {
		name   string
		mutate func(*hsm.Config)
	}{
		{"no module", func(c *hsm.Config) { c.Module = "" }},
		{"missing module file", func(c *hsm.Config) { c.Module = filepath.Join(t.TempDir(), "nope.so") }},
		{"not a PKCS#11 library", func(c *hsm.Config) { c.Module = writeFile(t, "fake.so", "not a library") }},
		{"no label", func(c *hsm.Config) { c.TokenLabel = "" }},
		{"unknown label", func(c *hsm.Config) { c.TokenLabel = "no-such-token" }},
		{"no PIN", func(c *hsm.Config) { c.PIN = "" }},
		{"negative sessions", func(c *hsm.Config) { c.MaxSessions = -1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			tc.mutate(&c)
			tok, err := hsm.Open(c)
			if err == nil {
				tok.Close()
				t.Fatal("Open succeeded")
			}
			if strings.Contains(err.Error(), cfg.PIN) {
				t.Fatalf("error %q contains the PIN", err)
			}
		})
	}
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReopen(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	ctx := t.Context()
	tok, err := hsm.Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	signer, err := tok.GenerateECKey(ctx, "root", elliptic.P256())
	if err != nil {
		t.Fatalf("GenerateECKey: %v", err)
	}
	if err := tok.GenerateAESKey(ctx, "seal"); err != nil {
		t.Fatalf("GenerateAESKey: %v", err)
	}
	w, err := tok.Wrapper(ctx, "seal")
	if err != nil {
		t.Fatalf("Wrapper: %v", err)
	}
	master := bytes.Repeat([]byte{0x5a}, 32)
	blob, err := w.Wrap(ctx, master)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	if err := tok.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tok.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// Everything obtained from a closed Token refuses to work.
	digest := sha256.Sum256([]byte("after close"))
	if _, err := signer.Sign(nil, digest[:], crypto.SHA256); !errors.Is(err, hsm.ErrClosed) {
		t.Errorf("Sign after Close: got %v, want ErrClosed", err)
	}
	if _, err := w.Unwrap(ctx, blob); !errors.Is(err, hsm.ErrClosed) {
		t.Errorf("Unwrap after Close: got %v, want ErrClosed", err)
	}
	if _, err := tok.Signer(ctx, "root"); !errors.Is(err, hsm.ErrClosed) {
		t.Errorf("Signer after Close: got %v, want ErrClosed", err)
	}

	tok2 := openToken(t, cfg)
	signer2, err := tok2.Signer(ctx, "root")
	if err != nil {
		t.Fatalf("Signer after reopen: %v", err)
	}
	if !signer2.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(signer.Public()) {
		t.Fatal("reopened signer has a different public key")
	}
	verifySign(t, signer2, signer.Public(), crypto.SHA256)

	w2, err := tok2.Wrapper(ctx, "seal")
	if err != nil {
		t.Fatalf("Wrapper after reopen: %v", err)
	}
	got, err := w2.Unwrap(ctx, blob)
	if err != nil {
		t.Fatalf("Unwrap of a blob wrapped before reopen: %v", err)
	}
	if !bytes.Equal(got, master) {
		t.Fatal("Unwrap after reopen returned a different key")
	}
}

func TestContextDone(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	tok := openToken(t, cfg)
	if err := tok.GenerateAESKey(t.Context(), "seal"); err != nil {
		t.Fatal(err)
	}
	w, err := tok.Wrapper(t.Context(), "seal")
	if err != nil {
		t.Fatal(err)
	}
	blob, err := w.Wrap(t.Context(), []byte("key"))
	if err != nil {
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		op   func(context.Context) error
	}{
		{"GenerateECKey", func(ctx context.Context) error {
			_, err := tok.GenerateECKey(ctx, "ec", elliptic.P256())
			return err
		}},
		{"Signer", func(ctx context.Context) error { _, err := tok.Signer(ctx, "ec"); return err }},
		{"GenerateAESKey", func(ctx context.Context) error { return tok.GenerateAESKey(ctx, "aes") }},
		{"Wrapper", func(ctx context.Context) error { _, err := tok.Wrapper(ctx, "seal"); return err }},
		{"KeyAttributes", func(ctx context.Context) error { _, err := tok.KeyAttributes(ctx, "seal"); return err }},
		{"Wrap", func(ctx context.Context) error { _, err := w.Wrap(ctx, []byte("k")); return err }},
		{"Unwrap", func(ctx context.Context) error { _, err := w.Unwrap(ctx, blob); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(done); !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want context.Canceled", err)
			}
		})
	}
	// Nothing was created by the cancelled calls.
	if _, err := tok.KeyAttributes(t.Context(), "ec"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("KeyAttributes(ec): got %v, want ErrKeyNotFound", err)
	}
	if _, err := tok.KeyAttributes(t.Context(), "aes"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("KeyAttributes(aes): got %v, want ErrKeyNotFound", err)
	}
}

func TestLogsCarryNoPIN(t *testing.T) {
	cfg := hsmtest.NewToken(t)
	var buf bytes.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tok, err := hsm.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tok.GenerateECKey(t.Context(), "root", elliptic.P384()); err != nil {
		t.Fatal(err)
	}
	cfg.Logger.Info("config", "hsm", cfg)
	if err := tok.Close(); err != nil {
		t.Fatal(err)
	}
	out := buf.String() + fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg)
	if strings.Contains(out, cfg.PIN) {
		t.Fatalf("log contains the PIN:\n%s", out)
	}
	for _, want := range []string{"opened PKCS#11 token", "generated EC key", "closed PKCS#11 token", cfg.TokenLabel} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// TestTokenScript runs scripts/softhsm-token.sh twice in a fresh directory
// and checks that the second run changes nothing.
func TestTokenScript(t *testing.T) {
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		hsmtest.Missing(t, "softhsm2-util not found")
	}
	module, err := hsmtest.ModulePath()
	if err != nil {
		hsmtest.Missing(t, err.Error())
	}
	script, err := filepath.Abs("../scripts/softhsm-token.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pinFile := filepath.Join(dir, "secrets", "pin")
	conf := filepath.Join(dir, "softhsm2.conf")
	run := func() string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), "bash", script, dir, "sigil-root", pinFile)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", script, err, stderr.String())
		}
		return string(out)
	}
	env := append(os.Environ(), "SOFTHSM2_CONF="+conf)

	out1 := run()
	pin1, err := os.ReadFile(pinFile)
	if err != nil {
		t.Fatal(err)
	}
	out2 := run()
	pin2, err := os.ReadFile(pinFile)
	if err != nil {
		t.Fatal(err)
	}

	if want := "export SOFTHSM2_CONF=" + conf + "\n"; out1 != want || out2 != want {
		t.Errorf("script printed %q then %q, want %q", out1, out2, want)
	}
	if len(pin1) < 16 || !bytes.Equal(pin1, pin2) {
		t.Errorf("PIN file holds %d bytes, then changed: %v", len(pin1), !bytes.Equal(pin1, pin2))
	}
	fi, err := os.Stat(pinFile)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("PIN file mode %o, want 600", perm)
	}

	show := exec.CommandContext(t.Context(), "softhsm2-util", "--show-slots")
	show.Env = env
	slots, err := show.Output()
	if err != nil {
		t.Fatalf("softhsm2-util --show-slots: %v", err)
	}
	n := 0
	for line := range strings.Lines(string(slots)) {
		if label, ok := strings.CutPrefix(strings.TrimSpace(line), "Label:"); ok && strings.TrimSpace(label) == "sigil-root" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("token sigil-root listed %d times, want once:\n%s", n, slots)
	}

	if _, err := exec.LookPath("pkcs11-tool"); err != nil {
		hsmtest.Missing(t, "pkcs11-tool not found")
	}
	login := exec.CommandContext(t.Context(), "pkcs11-tool", "--module", module,
		"--token-label", "sigil-root", "--login", "--pin", string(pin1), "--list-objects")
	login.Env = env
	if out, err := login.CombinedOutput(); err != nil {
		t.Fatalf("logging in to the script's token with its PIN file: %v\n%s", err, out)
	}
}
