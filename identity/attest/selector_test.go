package attest

import (
	"strings"
	"testing"
)

func TestParseSelector(t *testing.T) {
	hash := strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		name    string
		in      string
		want    Selector
		wantErr string // substring of the error; empty means success
	}{
		{name: "uid", in: "unix:uid:1000", want: Selector{"unix", "uid:1000"}},
		{name: "uid zero", in: "unix:uid:0", want: Selector{"unix", "uid:0"}},
		{name: "uid max", in: "unix:uid:4294967295", want: Selector{"unix", "uid:4294967295"}},
		{name: "gid", in: "unix:gid:27", want: Selector{"unix", "gid:27"}},
		{name: "user", in: "unix:user:www-data", want: Selector{"unix", "user:www-data"}},
		{name: "user with dot and underscore", in: "unix:user:_svc.sigil", want: Selector{"unix", "user:_svc.sigil"}},
		{name: "group", in: "unix:group:Wheel9", want: Selector{"unix", "group:Wheel9"}},
		{name: "path", in: "unix:path:/usr/bin/envoy", want: Selector{"unix", "path:/usr/bin/envoy"}},
		{name: "path with colon", in: "unix:path:/opt/a:b", want: Selector{"unix", "path:/opt/a:b"}},
		{name: "root path", in: "unix:path:/", want: Selector{"unix", "path:/"}},
		{name: "sha256", in: "unix:sha256:" + hash, want: Selector{"unix", "sha256:" + hash}},

		{name: "empty", in: "", wantErr: "missing ':' between type and value"},
		{name: "no kind", in: "unix", wantErr: "missing ':' between type and value"},
		{name: "unknown type", in: "k8s:ns:default", wantErr: `unknown type "k8s"`},
		{name: "uppercase type", in: "UNIX:uid:1", wantErr: "unknown type"},
		{name: "no value", in: "unix:uid", wantErr: "missing ':' between kind and value"},
		{name: "unknown kind", in: "unix:pid:1", wantErr: `unknown unix kind "pid"`},
		{name: "empty uid", in: "unix:uid:", wantErr: "empty id"},
		{name: "negative uid", in: "unix:uid:-1", wantErr: "not a decimal number"},
		{name: "plus uid", in: "unix:uid:+1", wantErr: "not a decimal number"},
		{name: "hex gid", in: "unix:gid:0x10", wantErr: "not a decimal number"},
		{name: "leading zero", in: "unix:uid:0100", wantErr: "leading zero"},
		{name: "uid too big", in: "unix:uid:4294967296", wantErr: "32 bits"},
		{name: "uid with space", in: "unix:uid: 1", wantErr: "not a decimal number"},
		{name: "empty user", in: "unix:user:", wantErr: "empty name"},
		{name: "user leading hyphen", in: "unix:user:-root", wantErr: "starts with '-'"},
		{name: "user with at", in: "unix:user:bob@corp", wantErr: "outside the POSIX portable set"},
		{name: "group with space", in: "unix:group:domain users", wantErr: "outside the POSIX portable set"},
		{name: "user non-ascii", in: "unix:user:jos\u00e9", wantErr: "outside the POSIX portable set"},
		{name: "user too long", in: "unix:user:" + strings.Repeat("a", 257), wantErr: "more than 256"},
		{name: "empty path", in: "unix:path:", wantErr: "empty path"},
		{name: "relative path", in: "unix:path:bin/envoy", wantErr: "not absolute"},
		{name: "path with dotdot", in: "unix:path:/usr/../bin/sh", wantErr: "not clean"},
		{name: "path trailing slash", in: "unix:path:/usr/bin/", wantErr: "not clean"},
		{name: "path double slash", in: "unix:path://usr/bin", wantErr: "not clean"},
		{name: "path NUL", in: "unix:path:/bin/a\x00b", wantErr: "NUL"},
		{name: "path invalid UTF-8", in: "unix:path:/bin/\xff", wantErr: "UTF-8"},
		{name: "sha256 short", in: "unix:sha256:" + hash[:63], wantErr: "63 characters"},
		{name: "sha256 long", in: "unix:sha256:" + hash + "0", wantErr: "65 characters"},
		{name: "sha256 uppercase", in: "unix:sha256:" + strings.ToUpper(hash), wantErr: "lowercase hexadecimal"},
		{name: "sha256 non-hex", in: "unix:sha256:" + hash[:63] + "g", wantErr: "lowercase hexadecimal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSelector(tc.in)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseSelector(%q) = %v, want error containing %q", tc.in, got, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseSelector(%q) error = %q, want it to contain %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSelector(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Errorf("ParseSelector(%q) = %#v, want %#v", tc.in, got, tc.want)
			}
			if s := got.String(); s != tc.in {
				t.Errorf("String() = %q, want %q", s, tc.in)
			}
		})
	}
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{
		"unix:uid:1000", "unix:gid:0", "unix:user:root", "unix:group:wheel",
		"unix:path:/usr/bin/envoy", "unix:sha256:" + strings.Repeat("ab", 32),
		"unix:uid:01", "unix:path:/a/../b", "k8s:ns:x", "unix:user:-x", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sel, err := ParseSelector(in)
		if err != nil {
			if sel != (Selector{}) {
				t.Fatalf("ParseSelector(%q) returned %#v with error %v", in, sel, err)
			}
			return
		}
		if sel.Type != TypeUnix {
			t.Fatalf("ParseSelector(%q) accepted type %q", in, sel.Type)
		}
		if s := sel.String(); s != in {
			t.Fatalf("ParseSelector(%q).String() = %q, not a round trip", in, s)
		}
		again, err := ParseSelector(sel.String())
		if err != nil || again != sel {
			t.Fatalf("reparsing %q = %#v, %v; want %#v", sel.String(), again, err, sel)
		}
		kind, _, _ := strings.Cut(sel.Value, ":")
		switch kind {
		case KindUID, KindGID, KindUser, KindGroup, KindPath, KindSHA256:
		default:
			t.Fatalf("ParseSelector(%q) accepted kind %q", in, kind)
		}
	})
}
