// Package p11 owns the process-wide state of loaded PKCS#11 modules: one
// *pkcs11.Ctx per module file, C_Initialize on first use and C_Finalize
// when the last user releases it, and the per-token login state that
// PKCS#11 shares between every session of an application.
//
// It must never keep or log a PIN: logins are remembered by a digest only,
// so that a second login to the same token can be checked against the first.
package p11

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/miekg/pkcs11"
)

var (
	mu      sync.Mutex
	modules = map[string]*Module{}
)

// Module is a loaded PKCS#11 library shared by every user in the process.
type Module struct {
	path string
	ctx  *pkcs11.Ctx
	// refs counts Acquire calls not yet matched by Release.
	refs int
	// owned is true when this process's C_Initialize succeeded, so that
	// C_Finalize is ours to call.
	owned  bool
	logins map[uint]*login
}

type login struct {
	refs      int
	pinDigest [sha256.Size]byte
}

// Acquire loads (once per process) and initialises the module at path.
// An initialisation already done elsewhere in the process
// (CKR_CRYPTOKI_ALREADY_INITIALIZED) is accepted; the module is then never
// finalised by this package. Every successful Acquire must be matched by
// one Release.
func Acquire(path string) (*Module, error) {
	key, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolving PKCS#11 module path %s: %w", path, err)
	}
	if resolved, err := filepath.EvalSymlinks(key); err == nil {
		key = resolved
	} else {
		return nil, fmt.Errorf("resolving PKCS#11 module path %s: %w", path, err)
	}

	mu.Lock()
	defer mu.Unlock()
	m := modules[key]
	if m == nil {
		ctx := pkcs11.New(key)
		if ctx == nil {
			return nil, fmt.Errorf("loading PKCS#11 module %s: not a loadable PKCS#11 library", key)
		}
		m = &Module{path: key, ctx: ctx, logins: map[uint]*login{}}
		modules[key] = m
	}
	if m.refs == 0 {
		err := m.ctx.Initialize()
		switch {
		case err == nil:
			m.owned = true
		case errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)):
			m.owned = false
		default:
			return nil, fmt.Errorf("initialising PKCS#11 module %s: %w", key, err)
		}
	}
	m.refs++
	return m, nil
}

// Ctx returns the module's context. It is valid until the matching Release.
func (m *Module) Ctx() *pkcs11.Ctx { return m.ctx }

// Path returns the resolved path of the module file.
func (m *Module) Path() string { return m.path }

// Release undoes one Acquire. The last Release finalises the module if this
// process initialised it; the library itself stays loaded for a later
// Acquire, because unloading a library that registered exit handlers is not
// safe.
func (m *Module) Release() error {
	mu.Lock()
	defer mu.Unlock()
	if m.refs == 0 {
		return errors.New("releasing PKCS#11 module: not acquired")
	}
	m.refs--
	if m.refs > 0 {
		return nil
	}
	clear(m.logins)
	if !m.owned {
		return nil
	}
	m.owned = false
	if err := m.ctx.Finalize(); err != nil {
		return fmt.Errorf("finalising PKCS#11 module %s: %w", m.path, err)
	}
	return nil
}

// Login logs the normal user in to the token in slot through session sh.
// PKCS#11 login state belongs to the application, not the session, so a
// second Login to a slot already logged in by this package only checks the
// PIN against the first one's digest and counts a reference. A token
// logged in by other code in the process (CKR_USER_ALREADY_LOGGED_IN) is
// accepted as is.
func (m *Module) Login(slot uint, sh pkcs11.SessionHandle, pin string) error {
	digest := sha256.Sum256([]byte(pin))
	mu.Lock()
	defer mu.Unlock()
	if l := m.logins[slot]; l != nil {
		if subtle.ConstantTimeCompare(l.pinDigest[:], digest[:]) != 1 {
			return fmt.Errorf("logging in to slot %d: %w", slot, pkcs11.Error(pkcs11.CKR_PIN_INCORRECT))
		}
		l.refs++
		return nil
	}
	err := m.ctx.Login(sh, pkcs11.CKU_USER, pin)
	if err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
		return fmt.Errorf("logging in to slot %d: %w", slot, err)
	}
	m.logins[slot] = &login{refs: 1, pinDigest: digest}
	return nil
}

// Logout undoes one Login; the last one logs the user out of the token.
func (m *Module) Logout(slot uint, sh pkcs11.SessionHandle) error {
	mu.Lock()
	defer mu.Unlock()
	l := m.logins[slot]
	if l == nil {
		return nil
	}
	l.refs--
	if l.refs > 0 {
		return nil
	}
	delete(m.logins, slot)
	err := m.ctx.Logout(sh)
	if err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)) {
		return fmt.Errorf("logging out of slot %d: %w", slot, err)
	}
	return nil
}
