package tlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/transparency-dev/merkle/rfc6962"
)

// Tile geometry: C2SP tlog-tiles with height 8.
const (
	tileHeight = 8
	tileWidth  = 1 << tileHeight
	hashSize   = 32
	maxLevel   = 63
)

// ErrMalformedTilePath is returned by ParseTilePath for a path that is not
// the canonical form of a tile.
var ErrMalformedTilePath = errors.New("tlog: malformed tile path")

// TilePath names one tile: a hash tile of a level, or an entry bundle.
// Width 0 means a full tile (256 hashes or entries); 1..255 a partial one.
type TilePath struct {
	Level   int
	Index   int64
	Width   int
	Entries bool
}

// String returns the C2SP tlog-tiles path: tile/<L>/<N>[.p/<W>] or
// tile/entries/<N>[.p/<W>].
func (t TilePath) String() string {
	var b strings.Builder
	b.WriteString(t.base())
	if t.Width > 0 && t.Width < tileWidth {
		b.WriteString(".p/")
		b.WriteString(strconv.Itoa(t.Width))
	}
	return b.String()
}

// base is the path without the partial suffix: the key a tile is stored
// under whatever its width.
func (t TilePath) base() string {
	var b strings.Builder
	b.WriteString("tile/")
	if t.Entries {
		b.WriteString("entries")
	} else {
		b.WriteString(strconv.Itoa(t.Level))
	}
	b.WriteByte('/')
	b.WriteString(formatIndex(t.Index))
	return b.String()
}

// formatIndex writes n as 3-digit groups, all but the last prefixed "x".
func formatIndex(n int64) string {
	s := strconv.FormatInt(n, 10)
	if pad := (3 - len(s)%3) % 3; pad > 0 {
		s = strings.Repeat("0", pad) + s
	}
	var b strings.Builder
	for i := 0; i < len(s); i += 3 {
		if i+3 < len(s) {
			b.WriteByte('x')
			b.WriteString(s[i : i+3])
			b.WriteByte('/')
		} else {
			b.WriteString(s[i:])
		}
	}
	return b.String()
}

// ParseTilePath parses a canonical tile path. It rejects anything String
// would not produce: a level with a leading zero or above 63, an index
// with a leading zero group or wrongly sized groups, a width of 0 or 256
// or with a leading zero, and an index whose tile starts beyond 2^63.
func ParseTilePath(p string) (TilePath, error) {
	t, err := parseTilePath(p)
	if err != nil {
		return TilePath{}, fmt.Errorf("parsing tile path %q: %w", p, err)
	}
	return t, nil
}

func parseTilePath(p string) (TilePath, error) {
	rest, ok := strings.CutPrefix(p, "tile/")
	if !ok {
		return TilePath{}, fmt.Errorf("no tile/ prefix: %w", ErrMalformedTilePath)
	}
	var t TilePath
	levelStr, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return TilePath{}, fmt.Errorf("no index: %w", ErrMalformedTilePath)
	}
	if levelStr == "entries" {
		t.Entries = true
	} else {
		level, err := parseDecimal(levelStr, maxLevel)
		if err != nil {
			return TilePath{}, fmt.Errorf("level: %w", err)
		}
		t.Level = int(level)
	}
	if idx, width, ok := strings.Cut(rest, ".p/"); ok {
		w, err := parseDecimal(width, tileWidth-1)
		if err != nil {
			return TilePath{}, fmt.Errorf("width: %w", err)
		}
		if w == 0 {
			return TilePath{}, fmt.Errorf("width 0: %w", ErrMalformedTilePath)
		}
		t.Width = int(w)
		rest = idx
	}
	groups := strings.Split(rest, "/")
	var n int64
	for i, g := range groups {
		last := i == len(groups)-1
		if !last {
			var ok bool
			if g, ok = strings.CutPrefix(g, "x"); !ok {
				return TilePath{}, fmt.Errorf("index group %d lacks its x prefix: %w", i, ErrMalformedTilePath)
			}
		}
		if len(g) != 3 || !allDigits(g) {
			return TilePath{}, fmt.Errorf("index group %d is not three digits: %w", i, ErrMalformedTilePath)
		}
		if i == 0 && !last && g == "000" {
			return TilePath{}, fmt.Errorf("index has a leading zero group: %w", ErrMalformedTilePath)
		}
		v, _ := strconv.Atoi(g)
		if n > (math.MaxInt64-int64(v))/1000 {
			return TilePath{}, fmt.Errorf("index overflows: %w", ErrMalformedTilePath)
		}
		n = n*1000 + int64(v)
	}
	// The tile's first leaf must be a representable tree index.
	if shift := tileHeight * (t.Level + 1); shift < 63 && n > math.MaxInt64>>shift {
		return TilePath{}, fmt.Errorf("index %d at level %d is beyond any tree: %w", n, t.Level, ErrMalformedTilePath)
	} else if shift >= 63 && n > 0 {
		return TilePath{}, fmt.Errorf("index %d at level %d is beyond any tree: %w", n, t.Level, ErrMalformedTilePath)
	}
	t.Index = n
	return t, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// parseDecimal parses a canonical decimal (no sign, no leading zero) up
// to limit.
func parseDecimal(s string, limit int64) (int64, error) {
	if !allDigits(s) || len(s) > 19 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("%q is not a canonical decimal: %w", s, ErrMalformedTilePath)
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v > limit {
		return 0, fmt.Errorf("%q is out of range 0..%d: %w", s, limit, ErrMalformedTilePath)
	}
	return v, nil
}

// appendBundleEntry appends one entry to an entry bundle.
func appendBundleEntry(bundle, entry []byte) []byte {
	bundle = binary.BigEndian.AppendUint16(bundle, uint16(len(entry)))
	return append(bundle, entry...)
}

// splitBundle returns the entries of a bundle. It fails on a truncated
// bundle or one with more than 256 entries.
func splitBundle(bundle []byte) ([][]byte, error) {
	var out [][]byte
	for len(bundle) > 0 {
		if len(bundle) < 2 {
			return nil, errors.New("entry bundle truncated in a length")
		}
		n := int(binary.BigEndian.Uint16(bundle))
		if len(bundle) < 2+n {
			return nil, errors.New("entry bundle truncated in an entry")
		}
		out = append(out, bundle[2:2+n])
		bundle = bundle[2+n:]
		if len(out) > tileWidth {
			return nil, errors.New("entry bundle holds more than 256 entries")
		}
	}
	return out, nil
}

// bundlePrefix returns the bytes of the first w entries of a bundle.
func bundlePrefix(bundle []byte, w int) ([]byte, error) {
	off := 0
	for i := 0; i < w; i++ {
		if len(bundle)-off < 2 {
			return nil, fmt.Errorf("entry bundle holds fewer than %d entries", w)
		}
		n := int(binary.BigEndian.Uint16(bundle[off:]))
		if len(bundle)-off < 2+n {
			return nil, errors.New("entry bundle truncated in an entry")
		}
		off += 2 + n
	}
	return bundle[:off], nil
}

var hasher = rfc6962.DefaultHasher

// subtreeRoot returns the root of the perfect subtree whose leaves, at
// some level, are hashes (a power of two of them).
func subtreeRoot(hashes [][]byte) []byte {
	level := hashes
	for len(level) > 1 {
		next := make([][]byte, len(level)/2)
		for i := range next {
			next[i] = hasher.HashChildren(level[2*i], level[2*i+1])
		}
		level = next
	}
	return level[0]
}

// splitHashes cuts hash tile data into its hashes.
func splitHashes(data []byte) [][]byte {
	out := make([][]byte, len(data)/hashSize)
	for i := range out {
		out[i] = data[i*hashSize : (i+1)*hashSize]
	}
	return out
}
