package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestAgentExample(t *testing.T) {
	c, err := LoadAgent("sigil-agent.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Refresh.D() != 30*time.Second || len(c.Secrets) != 1 {
		t.Fatalf("example: %+v", c)
	}
	s := c.Secrets[0]
	if s.FileMode() != 0o640 || s.Source != "database/creds/app" || len(s.Command) != 3 || !strings.Contains(s.Template, ".Data.password") {
		t.Errorf("example secret: %+v", s)
	}
	empty, err := ParseAgent("empty.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(AgentConfig{Refresh: defaultAgentRefresh}, empty); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	minimal, err := ParseAgent("m.yaml", []byte("secrets:\n  - {source: 'kv:secret/a', spiffe_id: 'spiffe://e/a', destination: /a, template: x}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if minimal.Secrets[0].FileMode() != 0o600 {
		t.Errorf("default mode %v", minimal.Secrets[0].FileMode())
	}
}

// TestAgentBad compares the errors of testdata/agent/bad/*.yaml with the
// .err files next to them (-update rewrites them).
func TestAgentBad(t *testing.T) {
	files, err := filepath.Glob("testdata/agent/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/agent/bad/*.yaml: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			_, err := LoadAgent(file)
			if err == nil {
				t.Fatal("loaded without error")
			}
			got := strings.ReplaceAll(err.Error(), file, filepath.Base(file)) + "\n"
			golden := strings.TrimSuffix(file, ".yaml") + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("errors differ from %s (-want +got):\n%s", golden, diff)
			}
		})
	}
}
