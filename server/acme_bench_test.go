package server

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// keyAuths serves http-01 key authorizations from memory.
type keyAuths struct {
	mu sync.Mutex
	m  map[string]string
}

func (k *keyAuths) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	v := k.m[strings.TrimPrefix(r.URL.Path, "/.well-known/acme-challenge/")]
	k.mu.Unlock()
	io.WriteString(w, v)
}

// obtain runs one whole order for name: new-order, authorization,
// http-01, polling, finalize, certificate download.
func (c *acmeClient) obtain(name string, ka *keyAuths) error {
	post := func(u string, payload any) (int, map[string]any, http.Header) {
		code, _, m, h := c.post(u, c.signed(u, payload, c.nonceOrFresh(), false, c.key))
		return code, m, h
	}
	newOrder := map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": name}}}
	if c.profile != "" {
		newOrder["profile"] = c.profile
	}
	code, o, h := post(c.url("new-order"), newOrder)
	if code != http.StatusCreated {
		return fmt.Errorf("new-order: %d %v", code, o)
	}
	orderURL := h.Get("Location")
	authzURL := o["authorizations"].([]any)[0].(string)
	_, az, _ := post(authzURL, nil)
	var chURL, token string
	for _, ch := range az["challenges"].([]any) {
		if m := ch.(map[string]any); m["type"] == "http-01" {
			chURL, token = m["url"].(string), m["token"].(string)
		}
	}
	thumb, _ := (&jose.JSONWebKey{Key: c.key.Public()}).Thumbprint(crypto.SHA256)
	ka.mu.Lock()
	ka.m[token] = token + "." + base64.RawURLEncoding.EncodeToString(thumb)
	ka.mu.Unlock()
	if code, m, _ := post(chURL, map[string]any{}); code != http.StatusOK {
		return fmt.Errorf("challenge: %d %v", code, m)
	}
	for {
		_, az, _ := post(authzURL, nil)
		if az["status"] == "valid" {
			break
		}
		if az["status"] != "pending" {
			return fmt.Errorf("authorization %v", az)
		}
		time.Sleep(20 * time.Millisecond)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{name}}, k)
	code, fin, _ := post(o["finalize"].(string), map[string]string{"csr": base64.RawURLEncoding.EncodeToString(der)})
	if code != http.StatusOK || fin["status"] != "valid" {
		return fmt.Errorf("finalize: %d %v (order %s)", code, fin, orderURL)
	}
	certURL := fin["certificate"].(string)
	req, _ := http.NewRequest(http.MethodPost, certURL, strings.NewReader(string(c.signed(certURL, nil, c.nonceOrFresh(), false, c.key))))
	req.Header.Set("Content-Type", "application/jose+json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	c.lastChain, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	c.nonce = resp.Header.Get("Replay-Nonce")
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("certificate: %d", resp.StatusCode)
	}
	return nil
}

// nonceOrFresh uses the nonce of the last answer, as clients do.
func (c *acmeClient) nonceOrFresh() string {
	if n := c.nonce; n != "" {
		c.nonce = ""
		return n
	}
	return c.freshNonce()
}

// BenchmarkACMEOrders: complete orders per second through the HTTPS
// listener with 16 accounts in parallel (each its own connection and
// key), http-01 validated against a loopback responder, every
// certificate recorded in SQLite and logged. The client is this
// package's own minimal ACME client, polling every 20 ms.
func BenchmarkACMEOrders(b *testing.B) {
	r, ka := startACME(b, nil)
	const accounts = 16
	clients := make([]*acmeClient, accounts)
	for i := range clients {
		clients[i] = newACMEClient(b, r)
		clients[i].register()
	}
	var (
		next, seq atomic.Int64
		mu        sync.Mutex
		lat       []time.Duration
	)
	b.SetParallelism(accounts / 2)
	b.ResetTimer()
	t0 := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		c := clients[next.Add(1)-1]
		for pb.Next() {
			start := time.Now()
			if err := c.obtain(fmt.Sprintf("o%d.localhost", seq.Add(1)), ka); err != nil {
				b.Error(err)
				return
			}
			mu.Lock()
			lat = append(lat, time.Since(start))
			mu.Unlock()
		}
	})
	elapsed := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "orders/s")
	reportLatency(b, lat, time.Millisecond, "ms")
}
