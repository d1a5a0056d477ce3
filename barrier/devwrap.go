package barrier

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
)

const (
	// devWrapAAD binds a dev-wrapped blob to its purpose.
	devWrapAAD = "barrier/dev-wrapped-master-key"
	// devWrapV1 is the version byte of a dev-wrapped blob.
	devWrapV1 = 1
)

// DevKeyWrapper returns a KeyWrapper for the "dev" seal, which wraps the
// master key with AES-256-GCM under a 32-byte key kept in a plain file.
//
// UNSAFE OUTSIDE DEVELOPMENT. Anyone who can read the key file and the
// database can decrypt everything the barrier protects; the file offers no
// protection beyond its permissions. Use the pkcs11 or shamir seal for
// anything that matters.
//
// If path exists it must be a regular file of exactly 32 bytes with mode
// 0600, or DevKeyWrapper refuses it; if it does not exist, a new key is
// read from rand (nil means crypto/rand.Reader) and written there with mode
// 0600. The key stays in this process's memory for the wrapper's lifetime.
func DevKeyWrapper(path string, rand io.Reader) (KeyWrapper, error) {
	key, err := loadDevKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, err = createDevKey(path, rand)
	}
	if err != nil {
		return nil, err
	}
	aead, err := newAEAD(key)
	clear(key)
	if err != nil {
		return nil, fmt.Errorf("dev key wrapper: %w", err)
	}
	return &devWrapper{path: path, aead: aead, rand: rand}, nil
}

func loadDevKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening dev seal key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("checking dev seal key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("dev seal key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		return nil, fmt.Errorf("dev seal key file %s has mode %#o, want 0600", path, perm)
	}
	if fi.Size() != keySize {
		return nil, fmt.Errorf("dev seal key file %s is %d bytes, want %d", path, fi.Size(), keySize)
	}
	key := make([]byte, keySize)
	if _, err := io.ReadFull(f, key); err != nil {
		clear(key)
		return nil, fmt.Errorf("reading dev seal key file: %w", err)
	}
	return key, nil
}

func createDevKey(path string, r io.Reader) ([]byte, error) {
	if r == nil {
		r = rand.Reader
	}
	key := make([]byte, keySize)
	if _, err := io.ReadFull(r, key); err != nil {
		return nil, fmt.Errorf("generating dev seal key: %w", err)
	}
	// O_EXCL: never overwrite a key file that appeared meanwhile.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		clear(key)
		return nil, fmt.Errorf("creating dev seal key file: %w", err)
	}
	err = writeDevKey(f, key)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		clear(key)
		os.Remove(path)
		return nil, fmt.Errorf("writing dev seal key file: %w", err)
	}
	return key, nil
}

func writeDevKey(f *os.File, key []byte) error {
	// The umask may have cleared bits of 0600; set it exactly.
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(key); err != nil {
		return err
	}
	return f.Sync()
}

type devWrapper struct {
	path string
	aead cipher.AEAD
	rand io.Reader
}

// LogValue keeps the wrapper's key out of logs.
func (w *devWrapper) LogValue() slog.Value {
	return slog.GroupValue(slog.String("seal", SealDev), slog.String("key_file", w.path))
}

// Wrap encrypts key as version || nonce || AES-256-GCM(key).
func (w *devWrapper) Wrap(_ context.Context, key []byte) ([]byte, error) {
	r := w.rand
	if r == nil {
		r = rand.Reader
	}
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(key)+w.aead.Overhead())
	out[0] = devWrapV1
	if _, err := io.ReadFull(r, out[1:]); err != nil {
		return nil, fmt.Errorf("dev key wrapper: reading nonce: %w", err)
	}
	return w.aead.Seal(out, out[1:], key, []byte(devWrapAAD)), nil
}

// Unwrap reverses Wrap; a blob made under another key file, or changed,
// is ErrDecrypt.
func (w *devWrapper) Unwrap(_ context.Context, blob []byte) ([]byte, error) {
	if len(blob) < 1+nonceSize || blob[0] != devWrapV1 {
		return nil, fmt.Errorf("dev key wrapper: %w: malformed wrapped key", ErrDecrypt)
	}
	key, err := w.aead.Open(nil, blob[1:1+nonceSize], blob[1+nonceSize:], []byte(devWrapAAD))
	if err != nil {
		return nil, fmt.Errorf("dev key wrapper: %w", ErrDecrypt)
	}
	return key, nil
}
