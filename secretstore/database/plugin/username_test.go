package plugin

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// counting is a deterministic random source: 0, 1, 2, ...
type counting struct{ n byte }

func (c *counting) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = c.n
		c.n++
	}
	return len(p), nil
}

func TestGenerateUsername(t *testing.T) {
	at := time.Unix(1700000000, 0)
	tests := []struct {
		name   string
		plugin string
		tmpl   string
		data   UsernameData
		want   string
		err    error
	}{
		{"default", Postgres, "", UsernameData{RoleName: "readonly"}, "v-readonly-abcdefgh-1700000000", nil},
		{"default cuts the role name", MySQL, "", UsernameData{RoleName: "reporting_service"}, "v-reportin-abcdefgh-1700000000", nil},
		{"lowercased", Postgres, "{{.RoleName}}", UsernameData{RoleName: "ReadOnly"}, "readonly", nil},
		{"unsafe runs become one dash", Postgres, "{{.DisplayName}}", UsernameData{DisplayName: "spiffe://example.org/ns/prod"}, "spiffe-example-org-ns-prod", nil},
		{"double dash collapsed", Postgres, "a--b__c", UsernameData{}, "a-b__c", nil},
		{"leading and trailing dashes", Postgres, "--{{.RoleName}}--", UsernameData{RoleName: "r"}, "r", nil},
		{"quotes removed", Postgres, `{{.RoleName}}`, UsernameData{RoleName: `x"; DROP ROLE postgres; --`}, "x-drop-role-postgres", nil},
		{"postgres limit", Postgres, strings.Repeat("a", 70), UsernameData{}, strings.Repeat("a", 63), nil},
		{"mysql limit", MySQL, strings.Repeat("a", 40), UsernameData{}, strings.Repeat("a", 32), nil},
		{"no trailing dash after cut", MySQL, strings.Repeat("a", 31) + "-bbb", UsernameData{}, strings.Repeat("a", 31), nil},
		{"random", Postgres, "{{random 40}}", UsernameData{}, "abcdefghijklmnopqrstuvwxyz0123456789abcd", nil},
		{"truncate", Postgres, `{{truncate 3 "abcdef"}}`, UsernameData{}, "abc", nil},
		{"random too long", Postgres, "{{random 65}}", UsernameData{}, "", nil},
		{"random zero", Postgres, "{{random 0}}", UsernameData{}, "", nil},
		{"unknown function", Postgres, "{{uuid}}", UsernameData{}, "", nil},
		{"unknown field", Postgres, "{{.Role}}", UsernameData{}, "", nil},
		{"nothing usable", Postgres, "---", UsernameData{}, "", ErrInvalidName},
		{"unknown plugin", "oracle", "", UsernameData{}, "", ErrUnknownPlugin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.data.Time = at
			tt.data.Rand = &counting{}
			got, err := GenerateUsername(tt.plugin, tt.tmpl, tt.data)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("GenerateUsername = %q, want an error", got)
				}
				if tt.err != nil && !errors.Is(err, tt.err) {
					t.Fatalf("error %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("GenerateUsername: %v", err)
			}
			if got != tt.want {
				t.Errorf("GenerateUsername = %q, want %q", got, tt.want)
			}
			p, _ := lookup(tt.plugin)
			if err := validName(got, p.maxName); err != nil {
				t.Errorf("generated name fails validation: %v", err)
			}
		})
	}
}

func TestGenerateUsernameDefaults(t *testing.T) {
	a, err := GenerateUsername(MySQL, "", UsernameData{RoleName: "r"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateUsername(MySQL, "", UsernameData{RoleName: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Errorf("two names from crypto/rand are equal: %q", a)
	}
	if !strings.HasPrefix(a, "v-r-") || len(a) != len("v-r-")+8+1+10 {
		t.Errorf("name %q does not have the default template's shape", a)
	}
}

func TestGeneratePassword(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		pw, err := GeneratePassword()
		if err != nil {
			t.Fatal(err)
		}
		if len(pw) != PasswordLen || PasswordLen < 24 {
			t.Fatalf("password length %d, want %d (>= 24)", len(pw), PasswordLen)
		}
		if err := validPassword(pw); err != nil {
			t.Fatalf("generated password fails validation: %v", err)
		}
		if pw[0] == '-' {
			t.Fatalf("password %q starts with '-'", pw)
		}
		for _, class := range []string{"ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz", "0123456789"} {
			if !strings.ContainsAny(pw, class) {
				t.Fatalf("password %q lacks one of %s", pw, class)
			}
		}
		if strings.Trim(pw, passwordChars) != "" {
			t.Fatalf("password %q has characters outside the alphabet", pw)
		}
		if seen[pw] {
			t.Fatalf("password %q generated twice", pw)
		}
		seen[pw] = true
	}
}

func TestGeneratePasswordRetriesAndFails(t *testing.T) {
	// All zero bytes give "AAAA...", which lacks a digit: every try fails.
	if _, err := generatePassword(bytes.NewReader(make([]byte, 1<<20))); err == nil {
		t.Error("generatePassword from zeros succeeded, want an error")
	}
	// A reader that runs dry is an error, not a short password.
	if _, err := generatePassword(bytes.NewReader([]byte{1, 2, 3})); err == nil {
		t.Error("generatePassword from 3 bytes succeeded, want an error")
	}
}

func TestRandomStringUniform(t *testing.T) {
	// Rejection sampling: bytes at or above the largest multiple of the
	// alphabet's size are skipped, so 36 maps to 'a' again but 252..255 do not.
	r := bytes.NewReader(append([]byte{252, 253, 254, 255, 36, 0}, make([]byte, 64)...))
	s, err := randomString(r, 2, lowerDigits)
	if err != nil || s != "aa" {
		t.Errorf("randomString = %q, %v; want \"aa\"", s, err)
	}
}
