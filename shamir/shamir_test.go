package shamir_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	mrand "math/rand/v2"
	"testing"
	"testing/quick"

	"github.com/sigil-pki/sigil/shamir"
)

// subsets calls f with every k-element subset of {0..n-1}, in order.
func subsets(n, k int, f func([]int)) {
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		if len(cur) == k {
			f(cur)
			return
		}
		for i := start; i < n; i++ {
			rec(i+1, append(cur, i))
		}
	}
	rec(0, nil)
}

func pick(shares [][]byte, idx []int) [][]byte {
	out := make([][]byte, len(idx))
	for i, j := range idx {
		out[i] = shares[j]
	}
	return out
}

func TestSplitShape(t *testing.T) {
	secret := []byte("correct horse battery staple")
	shares, err := shamir.Split(secret, 5, 3, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if len(shares) != 5 {
		t.Fatalf("got %d shares, want 5", len(shares))
	}
	for i, s := range shares {
		if len(s) != len(secret)+1 {
			t.Errorf("share %d is %d bytes, want %d", i, len(s), len(secret)+1)
		}
		if x := s[len(s)-1]; x != byte(i+1) {
			t.Errorf("share %d has x = %d, want %d", i, x, i+1)
		}
		if bytes.Contains(s, secret) {
			t.Errorf("share %d contains the secret", i)
		}
	}
}

func TestRoundTripEverySubset(t *testing.T) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	shares, err := shamir.Split(secret, 5, 3, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// Every subset of 3, 4 and 5 shares recovers the secret, in any order.
	for k := 3; k <= 5; k++ {
		subsets(5, k, func(idx []int) {
			got, err := shamir.Combine(pick(shares, idx))
			if err != nil {
				t.Fatalf("Combine%v: %v", idx, err)
			}
			if !bytes.Equal(got, secret) {
				t.Errorf("Combine%v recovered a different secret", idx)
			}
			rev := make([]int, len(idx))
			for i, j := range idx {
				rev[len(idx)-1-i] = j
			}
			got, err = shamir.Combine(pick(shares, rev))
			if err != nil || !bytes.Equal(got, secret) {
				t.Errorf("Combine%v (reversed) = err %v, equal %v", rev, err, bytes.Equal(got, secret))
			}
		})
	}
	// Every subset of 2 shares (below threshold) gives something else.
	subsets(5, 2, func(idx []int) {
		got, err := shamir.Combine(pick(shares, idx))
		if err != nil {
			t.Fatalf("Combine%v: %v", idx, err)
		}
		if bytes.Equal(got, secret) {
			t.Errorf("Combine%v with fewer than threshold shares recovered the secret", idx)
		}
	})
}

func TestThresholdOne(t *testing.T) {
	secret := []byte{1, 2, 3, 4}
	shares, err := shamir.Split(secret, 1, 1, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{1, 2, 3, 4, 1}; len(shares) != 1 || !bytes.Equal(shares[0], want) {
		t.Fatalf("Split(1 of 1) = %x, want [%x]", shares, want)
	}
	got, err := shamir.Combine(shares)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Combine(single share) = %x, %v; want %x", got, err, secret)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("entropy exhausted") }

func TestSplitErrors(t *testing.T) {
	tests := []struct {
		name              string
		secret            []byte
		shares, threshold int
	}{
		{"empty secret", nil, 3, 2},
		{"threshold 1 of 2", []byte("s"), 2, 1},
		{"threshold 0", []byte("s"), 2, 0},
		{"threshold above shares", []byte("s"), 2, 3},
		{"zero shares", []byte("s"), 0, 0},
		{"too many shares", []byte("s"), 256, 2},
		{"negative", []byte("s"), -1, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := shamir.Split(tc.secret, tc.shares, tc.threshold, rand.Reader)
			if !errors.Is(err, shamir.ErrInvalidParameters) {
				t.Errorf("Split = %v, want ErrInvalidParameters", err)
			}
		})
	}
	if _, err := shamir.Split([]byte("s"), 3, 2, failingReader{}); err == nil {
		t.Error("Split with a failing random source succeeded")
	}
	// 255 shares is the maximum and works.
	shares, err := shamir.Split([]byte("s"), 255, 2, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	got, err := shamir.Combine([][]byte{shares[0], shares[254]})
	if err != nil || string(got) != "s" {
		t.Errorf("Combine(shares 1 and 255) = %q, %v", got, err)
	}
}

func TestCombineErrors(t *testing.T) {
	shares, err := shamir.Split([]byte("secret"), 3, 2, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	zeroX := bytes.Clone(shares[1])
	zeroX[len(zeroX)-1] = 0
	tests := []struct {
		name   string
		shares [][]byte
		want   error
	}{
		{"none", nil, shamir.ErrTooFewShares},
		{"empty list", [][]byte{}, shamir.ErrTooFewShares},
		{"too short", [][]byte{{1}}, shamir.ErrMalformedShare},
		{"different lengths", [][]byte{shares[0], shares[1][1:]}, shamir.ErrMalformedShare},
		{"x is zero", [][]byte{shares[0], zeroX}, shamir.ErrMalformedShare},
		{"duplicate x", [][]byte{shares[0], shares[2], shares[0]}, shamir.ErrDuplicateShare},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := shamir.Combine(tc.shares)
			if !errors.Is(err, tc.want) {
				t.Errorf("Combine = %v, want %v", err, tc.want)
			}
			if got != nil {
				t.Errorf("Combine returned %x alongside an error", got)
			}
		})
	}
}

func TestSplitCombineProperty(t *testing.T) {
	prop := func(secret []byte, n, k uint8, seed uint64) bool {
		if len(secret) == 0 {
			return true
		}
		shares := int(n)%20 + 2
		threshold := int(k)%(shares-1) + 2
		r := mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
		out, err := shamir.Split(secret, shares, threshold, r)
		if err != nil {
			return false
		}
		got, err := shamir.Combine(out[shares-threshold:])
		return err == nil && bytes.Equal(got, secret)
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 300}); err != nil {
		t.Error(err)
	}
}

func FuzzSplitCombine(f *testing.F) {
	f.Add([]byte("hello"), uint8(5), uint8(3), uint64(1))
	f.Add([]byte{0}, uint8(1), uint8(1), uint64(2))
	f.Add(bytes.Repeat([]byte{0xff}, 64), uint8(255), uint8(255), uint64(3))
	f.Fuzz(func(t *testing.T, secret []byte, n, k uint8, seed uint64) {
		shares, threshold := int(n), int(k)
		var seedBytes [32]byte
		for i := range 8 {
			seedBytes[i] = byte(seed >> (8 * i))
		}
		out, err := shamir.Split(secret, shares, threshold, mrand.NewChaCha8(seedBytes))
		valid := len(secret) > 0 && shares >= 1 && threshold <= shares &&
			(threshold >= 2 || (threshold == 1 && shares == 1))
		if !valid {
			if !errors.Is(err, shamir.ErrInvalidParameters) {
				t.Fatalf("Split(len %d, %d, %d) = %v, want ErrInvalidParameters", len(secret), shares, threshold, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Split(len %d, %d, %d): %v", len(secret), shares, threshold, err)
		}
		if len(out) != shares {
			t.Fatalf("got %d shares, want %d", len(out), shares)
		}
		// The first and the last threshold shares both recover the secret.
		for _, set := range [][][]byte{out[:threshold], out[shares-threshold:]} {
			got, err := shamir.Combine(set)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, secret) {
				t.Fatalf("Combine of %d shares (threshold %d) recovered %x, want %x", len(set), threshold, got, secret)
			}
		}
		// Shares are distinct per x and never carry x = 0.
		seen := map[byte]bool{}
		for _, s := range out {
			x := s[len(s)-1]
			if x == 0 || seen[x] {
				t.Fatalf("bad or repeated x coordinate %d", x)
			}
			seen[x] = true
		}
	})
}

func BenchmarkSplit32(b *testing.B) {
	secret := make([]byte, 32)
	for b.Loop() {
		if _, err := shamir.Split(secret, 5, 3, rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCombine32(b *testing.B) {
	shares, err := shamir.Split(make([]byte, 32), 5, 3, rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := shamir.Combine(shares[:3]); err != nil {
			b.Fatal(err)
		}
	}
}
