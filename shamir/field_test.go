package shamir

import (
	"testing"
	"testing/quick"
)

// refMul is a deliberately naive reference: carry-less multiplication into
// a 16-bit product, then long division by the AES polynomial 0x11b.
func refMul(a, b byte) byte {
	var p uint16
	for i := range 8 {
		if b&(1<<i) != 0 {
			p ^= uint16(a) << i
		}
	}
	for bit := 15; bit >= 8; bit-- {
		if p&(1<<bit) != 0 {
			p ^= 0x11b << (bit - 8)
		}
	}
	return byte(p)
}

// refInverse finds the inverse by exhaustive search.
func refInverse(a byte) byte {
	for c := 1; c < 256; c++ {
		if refMul(a, byte(c)) == 1 {
			return byte(c)
		}
	}
	return 0
}

func TestMulKnownVectors(t *testing.T) {
	// FIPS-197 section 4.2 and its inverse example in 5.1.1.
	tests := []struct {
		name    string
		a, b, w byte
	}{
		{"fips197 57*83", 0x57, 0x83, 0xc1},
		{"fips197 57*13", 0x57, 0x13, 0xfe},
		{"fips197 57*02", 0x57, 0x02, 0xae},
		{"inverse pair 53*ca", 0x53, 0xca, 0x01},
		{"zero", 0x00, 0xff, 0x00},
		{"one", 0x01, 0x9d, 0x9d},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := mul(tc.a, tc.b); got != tc.w {
				t.Errorf("mul(%#x, %#x) = %#x, want %#x", tc.a, tc.b, got, tc.w)
			}
		})
	}
}

func TestMulMatchesReference(t *testing.T) {
	for a := range 256 {
		for b := range 256 {
			if got, want := mul(byte(a), byte(b)), refMul(byte(a), byte(b)); got != want {
				t.Fatalf("mul(%#x, %#x) = %#x, reference %#x", a, b, got, want)
			}
		}
	}
}

func TestInverse(t *testing.T) {
	if got := inverse(0); got != 0 {
		t.Errorf("inverse(0) = %#x, want 0", got)
	}
	for a := 1; a < 256; a++ {
		inv := inverse(byte(a))
		if p := mul(byte(a), inv); p != 1 {
			t.Errorf("mul(%#x, inverse(%#x)=%#x) = %#x, want 1", a, a, inv, p)
		}
		if want := refInverse(byte(a)); inv != want {
			t.Errorf("inverse(%#x) = %#x, reference %#x", a, inv, want)
		}
	}
}

func TestFieldLaws(t *testing.T) {
	laws := []struct {
		name string
		law  func(a, b, c byte) bool
	}{
		{"commutative", func(a, b, _ byte) bool { return mul(a, b) == mul(b, a) }},
		{"associative", func(a, b, c byte) bool { return mul(mul(a, b), c) == mul(a, mul(b, c)) }},
		{"distributive", func(a, b, c byte) bool { return mul(a, b^c) == mul(a, b)^mul(a, c) }},
		{"identity", func(a, _, _ byte) bool { return mul(a, 1) == a }},
		{"division undoes multiplication", func(a, b, _ byte) bool {
			return b == 0 || mul(mul(a, b), inverse(b)) == a
		}},
	}
	for _, l := range laws {
		t.Run(l.name, func(t *testing.T) {
			if err := quick.Check(l.law, &quick.Config{MaxCount: 5000}); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestEvaluate(t *testing.T) {
	// 7 + 3x + 5x^2 at x = 2: 7 ^ mul(3,2) ^ mul(5,mul(2,2)).
	want := byte(7) ^ refMul(3, 2) ^ refMul(5, refMul(2, 2))
	if got := evaluate(7, []byte{3, 5}, 2); got != want {
		t.Errorf("evaluate = %#x, want %#x", got, want)
	}
	if got := evaluate(0x42, nil, 9); got != 0x42 {
		t.Errorf("constant polynomial evaluates to %#x, want 0x42", got)
	}
}
