package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/acme/api"
	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
)

// legoOrder runs one whole order with lego's ACME API client (the layer
// under its Obtain): new order, authorization, http-01, finalize,
// download. It waits Retry-After whenever the server asks it to.
func legoOrder(tb testing.TB, core *api.Core, name string, ka *keyAuths) error {
	ctx := tb.Context()
	o, err := core.Orders.New(ctx, []string{name}, nil)
	if err != nil {
		return fmt.Errorf("new order: %w", err)
	}
	for _, azURL := range o.Authorizations {
		az, err := core.Authorizations.Get(ctx, azURL)
		if err != nil {
			return err
		}
		if az.Status == acme.StatusValid {
			continue
		}
		var ch *acme.Challenge
		for i := range az.Challenges {
			if az.Challenges[i].Type == "http-01" {
				ch = &az.Challenges[i]
			}
		}
		if ch == nil {
			return fmt.Errorf("no http-01 challenge for %s", name)
		}
		keyAuth, err := core.GetKeyAuthorization(ch.Token)
		if err != nil {
			return err
		}
		ka.Present(ctx, name, ch.Token, keyAuth)
		done, err := core.Challenges.New(ctx, ch.URL)
		ka.CleanUp(ctx, name, ch.Token, keyAuth)
		if err != nil {
			return err
		}
		for wait := done.RetryAfter; done.Status != acme.StatusValid; {
			if done.Status == acme.StatusInvalid {
				return fmt.Errorf("challenge invalid: %v", done.Error)
			}
			time.Sleep(max(wait, 100*time.Millisecond))
			az, err := core.Authorizations.Get(ctx, azURL)
			if err != nil {
				return err
			}
			if az.Status == acme.StatusValid {
				break
			}
			if az.Status != acme.StatusPending {
				return fmt.Errorf("authorization %s", az.Status)
			}
		}
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{name}}, key)
	fin, err := core.Orders.UpdateForCSR(ctx, o.Finalize, csr)
	if err != nil {
		return fmt.Errorf("finalize: %w", err)
	}
	for fin.Status != acme.StatusValid {
		if fin.Status == acme.StatusInvalid {
			return fmt.Errorf("order invalid: %v", fin.Error)
		}
		time.Sleep(100 * time.Millisecond)
		if fin, err = core.Orders.Get(ctx, o.Location); err != nil {
			return err
		}
	}
	if _, err := core.Certificates.Get(ctx, fin.Certificate, true); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	return nil
}

// runOrders runs b.N orders over accounts parallel accounts, one
// goroutine each, and reports orders/s and latency percentiles.
func runOrders(b *testing.B, accounts int, order func(account int, name string) error) {
	var (
		next, seq atomic.Int64
		mu        sync.Mutex
		lat       []time.Duration
		wg        sync.WaitGroup
	)
	b.ResetTimer()
	t0 := time.Now()
	for range accounts {
		a := int(next.Add(1) - 1)
		wg.Go(func() {
			for {
				n := seq.Add(1)
				if n > int64(b.N) {
					return
				}
				start := time.Now()
				if err := order(a, fmt.Sprintf("o%d.localhost", n)); err != nil {
					b.Error(err)
					return
				}
				d := time.Since(start)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "orders/s")
	reportLatency(b, lat, time.Millisecond, "ms")
}

// BenchmarkACMEOrders: complete orders per second through the HTTPS
// listener with 16 accounts in parallel (each its own lego API client,
// connection pool and key), http-01 validated against a loopback
// responder, every certificate recorded in SQLite and logged before it
// is handed out.
func BenchmarkACMEOrders(b *testing.B) {
	r, ka := startACME(b, nil)
	const accounts = 16
	cores := make([]*api.Core, accounts)
	for i := range cores {
		u, _ := r.legoAccount(b, ka, nil)
		core, err := api.New(r.legoHTTP(), "sigil-bench", r.adminURL+"/acme/directory", u.reg.Location, u.key)
		if err != nil {
			b.Fatal(err)
		}
		cores[i] = core
	}
	runOrders(b, accounts, func(a int, name string) error { return legoOrder(b, cores[a], name, ka) })
}

// BenchmarkACMELegoObtain: the same, with lego's own Obtain flow (which
// polls as Retry-After says, 5 s when a server gives none).
func BenchmarkACMELegoObtain(b *testing.B) {
	r, ka := startACME(b, nil)
	const accounts = 16
	clients := make([]*certificate.Certifier, accounts)
	for i := range clients {
		_, c := r.legoAccount(b, ka, nil)
		clients[i] = c.Certificate
	}
	runOrders(b, accounts, func(a int, name string) error {
		_, err := clients[a].Obtain(b.Context(), certificate.ObtainRequest{Domains: []string{name}, KeyType: certcrypto.EC256, Bundle: true})
		return err
	})
}
