package config

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// AgentConfig is the configuration file of 'sigil agent' (--config): what
// the agent does beyond serving the Workload API. Where the server is and
// how the agent attests are flags.
type AgentConfig struct {
	// Secrets are rendered into files on this node. Default [].
	Secrets []SecretFile `yaml:"secrets"`
	// Refresh is how often KV secrets and static database credentials
	// are read again to notice a change. At least 1s. Default 30s.
	Refresh Duration `yaml:"refresh"`
}

// SecretFile renders one secret into a file.
type SecretFile struct {
	// Source is what is read: "kv:<mount>/<path>" (a KV version 2
	// secret), "database/creds/<role>" (dynamic credentials under a
	// lease, renewed before it ends) or "database/static-creds/<role>".
	// Required.
	Source string `yaml:"source"`
	// SPIFFEID is the identity the agent reads it as; it must be the
	// SPIFFE ID of a registration entry parented to this agent, and the
	// secret store's policies must allow it. Required.
	SPIFFEID string `yaml:"spiffe_id"`
	// Destination is the absolute path of the rendered file. Required.
	Destination string `yaml:"destination"`
	// Template is a Go text/template over .Data (the secret's fields),
	// .LeaseID, .LeaseExpiry (RFC 3339) and .Version. Required.
	Template string `yaml:"template"`
	// Mode is the file's permission bits in octal. Default "0600".
	Mode string `yaml:"mode"`
	// Owner is "user" or "user:group" (names or numbers). Default "":
	// the agent's own.
	Owner string `yaml:"owner"`
	// Command runs (no shell) after every render that changed the file.
	// Default []: none.
	Command []string `yaml:"command"`
}

const (
	defaultAgentRefresh = Duration(30 * time.Second)
	defaultSecretMode   = "0600"
)

// LoadAgent reads and checks an agent configuration file, as Load does.
func LoadAgent(path string) (AgentConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return AgentConfig{}, fmt.Errorf("reading agent config: %w", err)
	}
	return ParseAgent(path, data)
}

// ParseAgent decodes one YAML document strictly, applies defaults and
// validates, reporting every problem as Parse does.
func ParseAgent(name string, data []byte) (AgentConfig, error) {
	var c AgentConfig
	errs, pos, bad, fatal := decodeFile(data, &c, "secrets and refresh")
	if !fatal {
		c.ApplyDefaults()
		v := &validator{pos: pos, skip: bad}
		v.agentConfig(&c)
		errs = append(errs, v.errs...)
	}
	if len(errs) == 0 {
		return c, nil
	}
	slices.SortStableFunc(errs, func(a, b *Error) int { return lineOrder(a.Line) - lineOrder(b.Line) })
	for _, e := range errs {
		e.File = name
	}
	return AgentConfig{}, joinErrors(errs)
}

// ApplyDefaults sets every zero field to its documented default; an empty
// list counts as zero.
func (c *AgentConfig) ApplyDefaults() {
	setDuration(&c.Refresh, defaultAgentRefresh)
	if len(c.Secrets) == 0 {
		c.Secrets = nil
	}
	for i := range c.Secrets {
		setString(&c.Secrets[i].Mode, defaultSecretMode)
		if len(c.Secrets[i].Command) == 0 {
			c.Secrets[i].Command = nil
		}
	}
}

// FileMode returns Mode as permission bits; valid after ParseAgent.
func (s SecretFile) FileMode() os.FileMode {
	m, _ := strconv.ParseUint(s.Mode, 8, 32)
	return os.FileMode(m)
}

func (v *validator) agentConfig(c *AgentConfig) {
	if c.Refresh < Duration(time.Second) {
		v.errorf("refresh", nil, "%v is below 1s", c.Refresh)
	}
	dests := map[string]int{}
	for i, s := range c.Secrets {
		key := fmt.Sprintf("secrets[%d]", i)
		if p := secretSourceProblem(s.Source); p != "" {
			v.errorf(key+".source", nil, "%s", p)
		}
		if !strings.HasPrefix(s.SPIFFEID, "spiffe://") {
			v.errorf(key+".spiffe_id", nil, "%s is not a SPIFFE ID (spiffe://<trust domain>/<path>)", quote(s.SPIFFEID))
		}
		if !strings.HasPrefix(s.Destination, "/") || !printable(s.Destination) {
			v.errorf(key+".destination", nil, "%s must be an absolute path", quote(s.Destination))
		} else if j, dup := dests[s.Destination]; dup {
			v.errorf(key+".destination", nil, "%s is also secrets[%d]'s destination", s.Destination, j)
		} else {
			dests[s.Destination] = i
		}
		if strings.TrimSpace(s.Template) == "" {
			v.errorf(key+".template", nil, "must not be empty")
		}
		if m, err := strconv.ParseUint(s.Mode, 8, 32); err != nil || m > 0o777 {
			v.errorf(key+".mode", nil, "%s is not permission bits in octal, such as 0640", quote(s.Mode))
		}
		if strings.Count(s.Owner, ":") > 1 || strings.HasPrefix(s.Owner, ":") || strings.HasSuffix(s.Owner, ":") {
			v.errorf(key+".owner", nil, "%s is not user or user:group", quote(s.Owner))
		}
		if len(s.Command) > 0 && !strings.HasPrefix(s.Command[0], "/") {
			v.errorf(key+".command", nil, "the program %s must be an absolute path (no shell, no search)", quote(s.Command[0]))
		}
	}
}

// secretSourceProblem says what is wrong with a secret source, or "".
func secretSourceProblem(src string) string {
	const want = `"kv:<mount>/<path>", "database/creds/<role>" or "database/static-creds/<role>"`
	if rest, ok := strings.CutPrefix(src, "kv:"); ok {
		if mount, path, ok := strings.Cut(rest, "/"); !ok || mount == "" || path == "" || !printable(rest) {
			return fmt.Sprintf("%s: want %s", quote(src), want)
		}
		return ""
	}
	for _, p := range []string{"database/creds/", "database/static-creds/"} {
		if role, ok := strings.CutPrefix(src, p); ok {
			if role == "" || strings.ContainsAny(role, "/ ") || !printable(role) {
				return fmt.Sprintf("%s: the role name is empty or holds / or a space", quote(src))
			}
			return ""
		}
	}
	return fmt.Sprintf("%s: want %s", quote(src), want)
}
