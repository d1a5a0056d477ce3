package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/sigil-pki/sigil/config"
	"github.com/sigil-pki/sigil/identity/entry"
	"github.com/sigil-pki/sigil/internal/atomicfile"
)

// commandTimeout bounds a post-render command.
const commandTimeout = 30 * time.Second

// renewAtFraction is how far into a lease it is renewed.
const renewAtFraction = 2.0 / 3

// secretData is one read of a secret source.
type secretData struct {
	Data    map[string]any
	LeaseID string
	// LeaseExpiry is when the lease ends (zero without a lease).
	LeaseExpiry time.Time
	Version     int64
	// notAfter is when the rendered file stops being usable: the lease's
	// end, or a static password's next rotation; zero for KV.
	notAfter time.Time
	// next is when to look at the source again.
	next time.Time
}

// templateData is what a template sees.
type templateData struct {
	Data        map[string]any
	LeaseID     string
	LeaseExpiry string
	Version     int64
}

// renderer keeps one secret file current.
type renderer struct {
	a       *Agent
	f       config.SecretFile
	refresh time.Duration
	tmpl    *template.Template
	uid     int
	gid     int
}

func newRenderer(a *Agent, f config.SecretFile, refresh time.Duration) (*renderer, error) {
	tmpl, err := template.New(f.Destination).Option("missingkey=error").Parse(f.Template)
	if err != nil {
		return nil, fmt.Errorf("template for %s: %w", f.Destination, err)
	}
	r := &renderer{a: a, f: f, refresh: refresh, tmpl: tmpl, uid: -1, gid: -1}
	if f.Owner != "" {
		if r.uid, r.gid, err = lookupOwner(f.Owner); err != nil {
			return nil, fmt.Errorf("owner of %s: %w", f.Destination, err)
		}
	}
	return r, nil
}

// lookupOwner resolves "user" or "user:group", names or numbers.
func lookupOwner(owner string) (int, int, error) {
	name, group, _ := strings.Cut(owner, ":")
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return 0, 0, fmt.Errorf("user %q: %w", name, err)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			if g, err = user.LookupGroupId(group); err != nil {
				return 0, 0, fmt.Errorf("group %q: %w", group, err)
			}
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	return uid, gid, nil
}

// run keeps the file current until ctx ends: the cached render first,
// then each read of the source, renewing a lease before it ends; when
// the source cannot be read the file stays until its credentials expire,
// and is then removed.
func (r *renderer) run(ctx context.Context) {
	cur := r.restore()
	wait := minBackoff
	for {
		next, err := r.step(ctx, &cur)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.a.log.Warn("reading a secret for a file failed", "destination", r.f.Destination, "source", r.f.Source, "err", err)
			next = r.a.now().Add(wait)
			wait = min(wait*2, maxBackoff)
			if cur != nil && !cur.notAfter.IsZero() {
				if !r.a.now().Before(cur.notAfter) {
					r.expire()
					cur = nil
				} else if cur.notAfter.Before(next) {
					next = cur.notAfter
				}
			}
		} else {
			wait = minBackoff
		}
		t := time.NewTimer(max(next.Sub(r.a.now()), 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// restore writes the cached render of the file, if it is still usable,
// and returns what it was made from; an expired one is removed.
func (r *renderer) restore() *secretData {
	r.a.mu.RLock()
	k, ok := r.a.files[r.f.Destination]
	r.a.mu.RUnlock()
	if !ok {
		return nil
	}
	if !k.NotAfter.IsZero() && !r.a.now().Before(k.NotAfter) {
		r.expire()
		return nil
	}
	if old, err := os.ReadFile(r.f.Destination); err != nil || !bytes.Equal(old, k.Content) {
		if err := r.write(k.Content); err != nil {
			r.a.log.Error("restoring a secret file from the cache", "destination", r.f.Destination, "err", err)
		}
	}
	return &secretData{LeaseID: k.LeaseID, LeaseExpiry: k.LeaseExpiry, notAfter: k.NotAfter}
}

// expire removes a file whose credentials are no longer valid.
func (r *renderer) expire() {
	if err := os.Remove(r.f.Destination); err != nil && !errors.Is(err, os.ErrNotExist) {
		r.a.log.Error("removing an expired secret file", "destination", r.f.Destination, "err", err)
	} else {
		r.a.log.Warn("secret file expired and removed", "destination", r.f.Destination)
	}
	r.a.mu.Lock()
	delete(r.a.files, r.f.Destination)
	r.a.dirty = true
	r.a.mu.Unlock()
}

// step reads (or renews) the source, renders, and returns when to look
// again.
func (r *renderer) step(ctx context.Context, cur **secretData) (time.Time, error) {
	c, err := r.a.identityClient(ctx, r.f.SPIFFEID)
	if err != nil {
		return time.Time{}, err
	}
	now := r.a.now()
	var d *secretData
	switch {
	case strings.HasPrefix(r.f.Source, "kv:"):
		d, err = r.readKV(ctx, c)
	case strings.HasPrefix(r.f.Source, "database/static-creds/"):
		d, err = r.readStatic(ctx, c)
	default:
		d, err = r.dynamic(ctx, c, *cur)
	}
	if err != nil {
		return time.Time{}, err
	}
	if err := r.render(d); err != nil {
		return time.Time{}, err
	}
	*cur = d
	if d.next.IsZero() {
		d.next = now.Add(r.refresh)
	}
	return d.next, nil
}

// get reads a Vault-shaped answer from the server as the identity.
func (r *renderer) get(ctx context.Context, c *http.Client, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, r.a.cfg.ServerURL+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Errors []string `json:"errors"`
		}
		json.Unmarshal(raw, &e)
		return fmt.Errorf("%s %s: %s: %v", method, path, resp.Status, e.Errors)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

func (r *renderer) readKV(ctx context.Context, c *http.Client) (*secretData, error) {
	mount, path, _ := strings.Cut(strings.TrimPrefix(r.f.Source, "kv:"), "/")
	var resp struct {
		Data struct {
			Data     map[string]any `json:"data"`
			Metadata struct {
				Version int64 `json:"version"`
			} `json:"metadata"`
		} `json:"data"`
	}
	if err := r.get(ctx, c, http.MethodGet, "/v1/"+url.PathEscape(mount)+"/data/"+escapePath(path), nil, &resp); err != nil {
		return nil, err
	}
	return &secretData{Data: resp.Data.Data, Version: resp.Data.Metadata.Version}, nil
}

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

func (r *renderer) readStatic(ctx context.Context, c *http.Client) (*secretData, error) {
	var resp struct {
		Data map[string]any `json:"data"`
	}
	if err := r.get(ctx, c, http.MethodGet, "/v1/"+r.f.Source, nil, &resp); err != nil {
		return nil, err
	}
	now := r.a.now()
	d := &secretData{Data: resp.Data, next: now.Add(r.refresh)}
	if ttl, ok := resp.Data["ttl"].(float64); ok {
		// The password changes at the next rotation: look again just
		// after it, and do not serve this one past it.
		d.notAfter = now.Add(time.Duration(ttl) * time.Second)
		d.next = minTime(d.next, d.notAfter.Add(500*time.Millisecond))
		// The countdown is not part of the credentials: a file that only
		// differs by it is not rewritten.
		delete(d.Data, "ttl")
	}
	return d, nil
}

// dynamic renews the current lease while that extends it, and asks for
// new credentials otherwise.
func (r *renderer) dynamic(ctx context.Context, c *http.Client, cur *secretData) (*secretData, error) {
	now := r.a.now()
	if cur != nil && cur.LeaseID != "" && cur.Data != nil && now.Before(cur.LeaseExpiry) {
		var resp struct {
			LeaseID       string `json:"lease_id"`
			LeaseDuration int64  `json:"lease_duration"`
		}
		err := r.get(ctx, c, http.MethodPut, "/v1/sys/leases/renew", map[string]any{"lease_id": cur.LeaseID}, &resp)
		if err == nil {
			expiry := now.Add(time.Duration(resp.LeaseDuration) * time.Second)
			if expiry.After(cur.LeaseExpiry.Add(time.Second)) {
				d := *cur
				d.LeaseExpiry, d.notAfter = expiry, expiry
				d.next = now.Add(time.Duration(float64(expiry.Sub(now)) * renewAtFraction))
				return &d, nil
			}
		} else {
			r.a.log.Info("lease renewal refused; asking for new credentials", "destination", r.f.Destination, "err", err)
		}
	}
	var resp struct {
		LeaseID       string         `json:"lease_id"`
		LeaseDuration int64          `json:"lease_duration"`
		Data          map[string]any `json:"data"`
	}
	if err := r.get(ctx, c, http.MethodGet, "/v1/"+r.f.Source, nil, &resp); err != nil {
		return nil, err
	}
	expiry := now.Add(time.Duration(resp.LeaseDuration) * time.Second)
	return &secretData{
		Data: resp.Data, LeaseID: resp.LeaseID, LeaseExpiry: expiry, notAfter: expiry,
		next: now.Add(time.Duration(float64(expiry.Sub(now)) * renewAtFraction)),
	}, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// render executes the template and, when the result differs from the
// file, writes it (mode, owner), caches it and runs the command.
func (r *renderer) render(d *secretData) error {
	td := templateData{Data: d.Data, LeaseID: d.LeaseID, Version: d.Version}
	if !d.LeaseExpiry.IsZero() {
		td.LeaseExpiry = d.LeaseExpiry.UTC().Format(time.RFC3339)
	}
	var buf bytes.Buffer
	if err := r.tmpl.Execute(&buf, td); err != nil {
		// The error names the template's field, never a value.
		return fmt.Errorf("rendering %s: %w", r.f.Destination, err)
	}
	content := buf.Bytes()
	r.a.mu.Lock()
	prev, had := r.a.files[r.f.Destination]
	if r.a.files == nil {
		r.a.files = map[string]keptFile{}
	}
	r.a.files[r.f.Destination] = keptFile{Content: content, NotAfter: d.notAfter, LeaseID: d.LeaseID, LeaseExpiry: d.LeaseExpiry}
	r.a.dirty = true
	r.a.mu.Unlock()
	if had && bytes.Equal(prev.Content, content) {
		if old, err := os.ReadFile(r.f.Destination); err == nil && bytes.Equal(old, content) {
			return nil
		}
	}
	if err := r.write(content); err != nil {
		return err
	}
	r.a.log.Info("secret file rendered", "destination", r.f.Destination, "source", r.f.Source)
	r.command()
	return nil
}

// write puts content in place with the file's mode and owner.
func (r *renderer) write(content []byte) error {
	if err := os.MkdirAll(filepath.Dir(r.f.Destination), 0o755); err != nil {
		return err
	}
	if err := atomicfile.Write(r.f.Destination, content, r.f.FileMode()); err != nil {
		return fmt.Errorf("writing %s: %w", r.f.Destination, err)
	}
	if r.uid >= 0 {
		if err := os.Chown(r.f.Destination, r.uid, r.gid); err != nil {
			return fmt.Errorf("chown %s: %w", r.f.Destination, err)
		}
	}
	return nil
}

// command runs the post-render command; its output is not logged (it
// may print what it was given).
func (r *renderer) command() {
	if len(r.f.Command) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.f.Command[0], r.f.Command[1:]...)
	if err := cmd.Run(); err != nil {
		r.a.log.Error("post-render command failed", "destination", r.f.Destination, "command", r.f.Command[0], "err", err)
		return
	}
	r.a.log.Info("post-render command ran", "destination", r.f.Destination, "command", r.f.Command[0])
}

// reader is an identity the agent reads secrets as: an SVID of one of
// its entries, with its key, made here.
type reader struct {
	mu     sync.Mutex
	cert   *tls.Certificate
	client *http.Client
}

// identityClient returns an HTTPS client presenting a current SVID of the
// agent's entry with the SPIFFE ID.
func (a *Agent) identityClient(ctx context.Context, spiffeID string) (*http.Client, error) {
	a.mu.Lock()
	if a.readers == nil {
		a.readers = map[string]*reader{}
	}
	rd := a.readers[spiffeID]
	if rd == nil {
		rd = &reader{}
		a.readers[spiffeID] = rd
	}
	var e entry.Entry
	found := false
	for _, cand := range a.entries {
		if cand.SPIFFEID == spiffeID && (!found || cand.ID < e.ID) {
			e, found = cand, true
		}
	}
	a.mu.Unlock()
	if !found {
		return nil, fmt.Errorf("no registration entry parented to this agent has the SPIFFE ID %s", spiffeID)
	}
	rd.mu.Lock()
	defer rd.mu.Unlock()
	now := a.now()
	if rd.cert != nil {
		l := rd.cert.Leaf
		if now.Before(l.NotBefore.Add(l.NotAfter.Sub(l.NotBefore) / 2)) {
			return rd.client, nil
		}
	}
	key, _, err := newKey()
	if err != nil {
		return nil, err
	}
	leaf, chain, err := a.IssueX509SVID(ctx, e, key)
	if err != nil {
		return nil, fmt.Errorf("an SVID for %s: %w", spiffeID, err)
	}
	cert := &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	rd.cert = cert
	if rd.client == nil {
		rd.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12, RootCAs: a.cfg.ServerRoots,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				rd.mu.Lock()
				defer rd.mu.Unlock()
				return rd.cert, nil
			},
		}}}
	} else {
		rd.client.CloseIdleConnections()
	}
	return rd.client, nil
}

// runSecrets keeps every configured secret file current until ctx ends.
func (a *Agent) runSecrets(ctx context.Context, rs []*renderer) {
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Go(func() { r.run(ctx) })
	}
	wg.Wait()
}
