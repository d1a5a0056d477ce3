package database

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sigil-pki/sigil/secretstore/database/plugin"
	"github.com/sigil-pki/sigil/storage"
)

// WriteStaticRole stores a static role and rotates its user's password at
// once, so that from then on only Sigil knows it.
func (e *Engine) WriteStaticRole(ctx context.Context, actor, name string, r StaticRole) error {
	if err := checkName("role name", name); err != nil {
		return err
	}
	switch {
	case r.Connection == "" || r.Username == "":
		return fmt.Errorf("%w: db_name and username are required", ErrInvalid)
	case r.RotationPeriod < Duration(5*time.Second):
		return fmt.Errorf("%w: rotation_period must be at least 5s", ErrInvalid)
	}
	c, err := e.Connection(ctx, r.Connection)
	if err != nil {
		return err
	}
	if !allowed(c, name) {
		return fmt.Errorf("%w: %s on %s", ErrNotAllowed, name, r.Connection)
	}
	if err := e.putRole(ctx, name, "static", r); err != nil {
		return err
	}
	return e.RotateStatic(ctx, actor, name)
}

// StaticCreds is a static role's current password and schedule.
type StaticCreds struct {
	Username       string
	Password       string
	LastRotated    time.Time
	NextRotation   time.Time
	RotationPeriod time.Duration
}

// StaticCreds returns the current password of a static role, finishing a
// rotation a crash interrupted first.
func (e *Engine) StaticCreds(ctx context.Context, role string) (StaticCreds, error) {
	r, err := e.StaticRole(ctx, role)
	if err != nil {
		return StaticCreds{}, err
	}
	st, err := e.store.GetStaticState(ctx, role)
	if errors.Is(err, storage.ErrNotFound) {
		return StaticCreds{}, fmt.Errorf("static role %s has not been rotated yet: %w", role, ErrNotFound)
	}
	if err != nil {
		return StaticCreds{}, err
	}
	if st.Pending != nil {
		if st, err = e.finishStatic(ctx, "sigil", role, r, st); err != nil {
			return StaticCreds{}, err
		}
	}
	pw, err := e.sealer.Decrypt(staticAAD(role, false), st.Password)
	if err != nil {
		return StaticCreds{}, fmt.Errorf("opening the password of %s: %w", role, err)
	}
	return StaticCreds{Username: r.Username, Password: string(pw), LastRotated: st.LastRotated, NextRotation: st.NextRotation,
		RotationPeriod: time.Duration(r.RotationPeriod)}, nil
}

// RotateStatic gives a static role's user a new password: recorded as
// pending first, then set in the database, then made current.
func (e *Engine) RotateStatic(ctx context.Context, actor, role string) error {
	r, err := e.StaticRole(ctx, role)
	if err != nil {
		return err
	}
	st, err := e.store.GetStaticState(ctx, role)
	if errors.Is(err, storage.ErrNotFound) {
		st = storage.StaticState{Role: role}
	} else if err != nil {
		return err
	}
	if st.Pending != nil {
		// A crash interrupted the last rotation: finish it; that is this
		// rotation.
		_, err := e.finishStatic(ctx, actor, role, r, st)
		return err
	}
	pw, err := plugin.GeneratePassword()
	if err != nil {
		return err
	}
	if st.Pending, err = e.sealer.Encrypt(staticAAD(role, true), []byte(pw)); err != nil {
		return err
	}
	if err := e.store.PutStaticState(ctx, st, st.Revision); err != nil {
		return fmt.Errorf("recording the pending password of %s: %w", role, err)
	}
	st.Revision++
	_, err = e.finishStatic(ctx, actor, role, r, st)
	return err
}

// finishStatic sets the pending password in the database (again, if a
// crash came after it was set: setting it twice is harmless) and makes it
// current.
func (e *Engine) finishStatic(ctx context.Context, actor, role string, r StaticRole, st storage.StaticState) (storage.StaticState, error) {
	pw, err := e.sealer.Decrypt(staticAAD(role, true), st.Pending)
	if err != nil {
		return st, fmt.Errorf("opening the pending password of %s: %w", role, err)
	}
	defer clear(pw)
	db, _, err := e.conn(ctx, r.Connection)
	if err != nil {
		return st, err
	}
	if err := db.SetPassword(ctx, plugin.Statements{Rotation: r.Rotation}, r.Username, string(pw)); err != nil {
		return st, fmt.Errorf("setting the new password of %s: %w", role, err)
	}
	now := e.now().UTC().Truncate(time.Second)
	next := st
	if next.Password, err = e.sealer.Encrypt(staticAAD(role, false), pw); err != nil {
		return st, err
	}
	next.Pending, next.LastRotated, next.NextRotation = nil, now, now.Add(time.Duration(r.RotationPeriod))
	if err := e.store.PutStaticState(ctx, next, st.Revision); err != nil {
		return st, fmt.Errorf("recording the new password of %s: %w", role, err)
	}
	next.Revision++
	if err := e.rec.Record(ctx, Event{Kind: KindRotate, Actor: actor, Path: "database/static-roles/" + role,
		Detail: "user=" + r.Username + " next=" + next.NextRotation.Format(time.RFC3339)}); err != nil {
		return next, err
	}
	return next, nil
}

// RotateDue rotates every static role whose rotation is due, or whose
// last rotation a crash interrupted; it returns how many it rotated.
func (e *Engine) RotateDue(ctx context.Context) (int, error) {
	roles, err := e.store.ListDBRoles(ctx, "static")
	if err != nil {
		return 0, err
	}
	var n int
	var errs []error
	now := e.now()
	for _, r := range roles {
		st, err := e.store.GetStaticState(ctx, r.Name)
		due := errors.Is(err, storage.ErrNotFound) || (err == nil && (st.Pending != nil || !now.Before(st.NextRotation)))
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		if !due {
			continue
		}
		if err := e.RotateStatic(ctx, "sigil", r.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
