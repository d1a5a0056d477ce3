package tlog_test

import (
	"errors"
	"testing"

	"github.com/sigil-pki/sigil/tlog"
)

func TestTilePath(t *testing.T) {
	cases := []struct {
		path string
		want tlog.TilePath
	}{
		{"tile/0/000", tlog.TilePath{}},
		{"tile/0/001", tlog.TilePath{Index: 1}},
		{"tile/0/999", tlog.TilePath{Index: 999}},
		{"tile/0/x001/000", tlog.TilePath{Index: 1000}},
		{"tile/3/x001/x234/067", tlog.TilePath{Level: 3, Index: 1234067}},
		{"tile/0/x001/234.p/17", tlog.TilePath{Index: 1234, Width: 17}},
		{"tile/1/000.p/255", tlog.TilePath{Level: 1, Width: 255}},
		{"tile/entries/x001/234", tlog.TilePath{Entries: true, Index: 1234}},
		{"tile/entries/000.p/1", tlog.TilePath{Entries: true, Width: 1}},
		{"tile/63/000", tlog.TilePath{Level: 63}},
	}
	for _, c := range cases {
		got, err := tlog.ParseTilePath(c.path)
		if err != nil {
			t.Errorf("ParseTilePath(%q): %v", c.path, err)
			continue
		}
		if got != c.want {
			t.Errorf("ParseTilePath(%q) = %+v, want %+v", c.path, got, c.want)
		}
		if s := c.want.String(); s != c.path {
			t.Errorf("%+v.String() = %q, want %q", c.want, s, c.path)
		}
	}
}

func TestParseTilePathRejects(t *testing.T) {
	for _, p := range []string{
		"", "tile/", "tile/0", "tile/0/", "tiles/0/000", "/tile/0/000",
		"tile/00/000", "tile/01/000", "tile/64/000", "tile/-1/000", "tile/+1/000",
		"tile/0/0", "tile/0/00", "tile/0/0000", "tile/0/1", "tile/0/x000/001", "tile/0/001/234",
		"tile/0/x1/234", "tile/0/x001", "tile/0/x001/x234", "tile/0/abc",
		"tile/0/000.p/0", "tile/0/000.p/256", "tile/0/000.p/017", "tile/0/000.p/", "tile/0/000.p",
		"tile/0/000.p/1/2", "tile/0/000/", "tile/entries/000.p/300", "tile/data/000",
		"tile/8/001", "tile/0/x999/x999/x999/x999/x999/x999/x999",
	} {
		if got, err := tlog.ParseTilePath(p); !errors.Is(err, tlog.ErrMalformedTilePath) {
			t.Errorf("ParseTilePath(%q) = %+v, %v; want ErrMalformedTilePath", p, got, err)
		}
	}
}

func FuzzParseTilePath(f *testing.F) {
	for _, s := range []string{"tile/0/000", "tile/3/x001/x234/067.p/9", "tile/entries/x002/345.p/200", "tile/0/x000/001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := tlog.ParseTilePath(s)
		if err != nil {
			if !errors.Is(err, tlog.ErrMalformedTilePath) {
				t.Fatalf("error %v does not wrap ErrMalformedTilePath", err)
			}
			return
		}
		if p.Width < 0 || p.Width > 255 || p.Level < 0 || p.Level > 63 || p.Index < 0 || (p.Entries && p.Level != 0) {
			t.Fatalf("ParseTilePath(%q) = %+v: out of range", s, p)
		}
		if got := p.String(); got != s {
			t.Fatalf("ParseTilePath(%q).String() = %q: not canonical", s, got)
		}
	})
}
