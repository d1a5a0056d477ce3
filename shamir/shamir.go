// Package shamir owns Shamir secret sharing over GF(2^8), the field of AES
// (reduction polynomial x^8+x^4+x^3+x+1). A secret of any length is split
// byte by byte: each byte is the constant term of its own random polynomial
// of degree threshold-1, and a share holds that polynomial's value at one
// non-zero x for every byte.
//
// The field arithmetic must run in time independent of the secret values it
// touches: it never indexes a table with a secret byte, multiplies by
// shift-and-add with masks, and inverts by exponentiation. The package never
// logs and never puts share or secret bytes into an error.
//
// Share format: the evaluations (one byte per secret byte) followed by a
// single byte, the x coordinate. Split numbers shares with x = 1..shares.
package shamir

import (
	"errors"
	"fmt"
	"io"
)

// MaxShares is the largest number of shares a split can produce: the field
// has 255 non-zero elements to use as x coordinates.
const MaxShares = 255

// Sentinel errors that callers branch on with errors.Is.
var (
	// ErrInvalidParameters: Split was asked for an impossible split (empty
	// secret, threshold or share count out of range).
	ErrInvalidParameters = errors.New("shamir: invalid split parameters")
	// ErrTooFewShares: Combine was given no share at all.
	ErrTooFewShares = errors.New("shamir: too few shares")
	// ErrMalformedShare: a share is too short, the shares differ in length,
	// or a share has the x coordinate 0 (which would be the secret itself).
	ErrMalformedShare = errors.New("shamir: malformed share")
	// ErrDuplicateShare: two shares have the same x coordinate.
	ErrDuplicateShare = errors.New("shamir: duplicate share")
)

// Split divides secret into shares, any threshold of which recover it with
// Combine while fewer reveal nothing about it. It requires a non-empty
// secret and 2 <= threshold <= shares <= 255; the degenerate split
// threshold == shares == 1 is also allowed, and its single share is the
// secret followed by the x coordinate 1.
//
// Each share is len(secret)+1 bytes long. Random polynomial coefficients
// are read from rand; an error reading them is returned and no share is.
func Split(secret []byte, shares, threshold int, rand io.Reader) ([][]byte, error) {
	switch {
	case len(secret) == 0:
		return nil, fmt.Errorf("%w: empty secret", ErrInvalidParameters)
	case shares < 1 || shares > MaxShares:
		return nil, fmt.Errorf("%w: %d shares, want 1 to %d", ErrInvalidParameters, shares, MaxShares)
	case threshold > shares:
		return nil, fmt.Errorf("%w: threshold %d above share count %d", ErrInvalidParameters, threshold, shares)
	case threshold < 2 && !(threshold == 1 && shares == 1):
		return nil, fmt.Errorf("%w: threshold %d with %d shares, want at least 2 (or 1 of 1)", ErrInvalidParameters, threshold, shares)
	}

	// coeffs[k*(threshold-1)+d] is the coefficient of x^(d+1) in the
	// polynomial for secret byte k.
	deg := threshold - 1
	coeffs := make([]byte, len(secret)*deg)
	defer clear(coeffs)
	if _, err := io.ReadFull(rand, coeffs); err != nil {
		return nil, fmt.Errorf("reading random coefficients: %w", err)
	}

	out := make([][]byte, shares)
	for i := range out {
		x := byte(i + 1)
		share := make([]byte, len(secret)+1)
		for k, s := range secret {
			share[k] = evaluate(s, coeffs[k*deg:(k+1)*deg], x)
		}
		share[len(secret)] = x
		out[i] = share
	}
	return out, nil
}

// evaluate returns c0 + c[0]x + c[1]x^2 + ... at x, by Horner's rule.
func evaluate(c0 byte, c []byte, x byte) byte {
	var y byte
	for d := len(c) - 1; d >= 0; d-- {
		y = mul(y, x) ^ c[d]
	}
	return mul(y, x) ^ c0
}

// Combine recovers the secret from shares made by Split. Given at least
// threshold shares of one split it returns the secret; given fewer, or
// shares of different splits, it returns unrelated bytes, and nothing in
// the shares lets it tell the difference.
//
// A single share is accepted and read as the share of a threshold-1 split:
// the result is its evaluation bytes, which is the secret exactly when the
// split had threshold 1. Callers that require a larger threshold must check
// the share count themselves.
//
// Combine returns ErrTooFewShares for no shares, ErrMalformedShare for a
// share shorter than two bytes, shares of different lengths or an x
// coordinate of 0, and ErrDuplicateShare when two shares have the same x.
func Combine(shares [][]byte) ([]byte, error) {
	if len(shares) == 0 {
		return nil, ErrTooFewShares
	}
	n := len(shares[0])
	if n < 2 {
		return nil, fmt.Errorf("%w: %d bytes, want at least 2", ErrMalformedShare, n)
	}
	xs := make([]byte, len(shares))
	for i, s := range shares {
		if len(s) != n {
			return nil, fmt.Errorf("%w: share %d is %d bytes, share 0 is %d", ErrMalformedShare, i, len(s), n)
		}
		x := s[n-1]
		if x == 0 {
			return nil, fmt.Errorf("%w: share %d has x coordinate 0", ErrMalformedShare, i)
		}
		for j := range i {
			if xs[j] == x {
				return nil, fmt.Errorf("%w: shares %d and %d both have x coordinate %d", ErrDuplicateShare, j, i, x)
			}
		}
		xs[i] = x
	}

	// Lagrange interpolation at 0: secret = sum_i y_i * l_i(0), where
	// l_i(0) = prod_{j!=i} x_j / (x_j - x_i), and subtraction is XOR.
	secret := make([]byte, n-1)
	for i, s := range shares {
		num, den := byte(1), byte(1)
		for j, xj := range xs {
			if j == i {
				continue
			}
			num = mul(num, xj)
			den = mul(den, xj^xs[i])
		}
		basis := mul(num, inverse(den))
		for k := range secret {
			secret[k] ^= mul(s[k], basis)
		}
	}
	return secret, nil
}

// mul multiplies in GF(2^8) modulo x^8+x^4+x^3+x+1. It runs the same eight
// rounds whatever the operands, selecting with masks instead of branches.
func mul(a, b byte) byte {
	var r byte
	for range 8 {
		r ^= a & -(b & 1)
		b >>= 1
		// Multiply a by x; if bit 7 fell off, reduce by 0x1b.
		a = (a << 1) ^ (0x1b & -(a >> 7))
	}
	return r
}

// inverse returns a^-1 for non-zero a, computed as a^254 (the multiplicative
// group has order 255), and 0 for 0. The sequence of operations does not
// depend on a.
func inverse(a byte) byte {
	// a^254 = a^(2+4+8+16+32+64+128).
	a2 := mul(a, a)  // a^2
	r := a2          // a^2
	p := mul(a2, a2) // a^4
	r = mul(r, p)    // a^6
	p = mul(p, p)    // a^8
	r = mul(r, p)    // a^14
	p = mul(p, p)    // a^16
	r = mul(r, p)    // a^30
	p = mul(p, p)    // a^32
	r = mul(r, p)    // a^62
	p = mul(p, p)    // a^64
	r = mul(r, p)    // a^126
	p = mul(p, p)    // a^128
	return mul(r, p) // a^254
}
