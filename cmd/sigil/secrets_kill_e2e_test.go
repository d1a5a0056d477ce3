package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestSecretWritesSurviveKill9: 1,000 concurrent writes, kill -9 in the
// middle, restart: every version the server acknowledged reads back with
// the value written.
func TestSecretWritesSurviveKill9(t *testing.T) {
	dir := t.TempDir()
	p, info := startDev(t, dir)
	admin := devClient(t, info)
	body, _ := json.Marshal(map[string]string{"policy": `
rules:
  - spiffe_id: spiffe://sigil.test/writer
    paths: ["secret/crash/*"]
    capabilities: [read, create, update]
`})
	req, _ := http.NewRequest(http.MethodPut, info.HTTPSURL+"/v1/policies/crash", bytes.NewReader(body))
	if resp, err := admin.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("writing the policy: %v %v", resp, err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := issueOne(t.Context(), admin, info.HTTPSURL, key, "spiffe://sigil.test/writer")
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, _ := os.ReadFile(info.RootCA)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	writer := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, RootCAs: roots},
		MaxIdleConnsPerHost: 256,
	}}

	type ack struct {
		path    string
		version int64
		value   string
	}
	var (
		mu    sync.Mutex
		acked []ack
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	start := make(chan struct{})
	for i := range 1000 {
		wg.Go(func() {
			<-start
			// Five writes per path: every version stays within max_versions.
			path := fmt.Sprintf("crash/k%03d", i%200)
			value := fmt.Sprintf("value-%04d", i)
			b, _ := json.Marshal(map[string]any{"data": map[string]string{"v": value}})
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, info.HTTPSURL+"/v1/secret/data/"+path, bytes.NewReader(b))
			resp, err := writer.Do(req)
			if err != nil {
				return // the server died before answering: not acknowledged
			}
			defer resp.Body.Close()
			out, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return
			}
			var got struct {
				Data struct {
					Version int64 `json:"version"`
				} `json:"data"`
			}
			if json.Unmarshal(out, &got) != nil || got.Data.Version == 0 {
				return
			}
			mu.Lock()
			acked = append(acked, ack{path, got.Data.Version, value})
			mu.Unlock()
		})
	}
	close(start)
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	cancel()
	wg.Wait()
	if len(acked) < 300 {
		t.Fatalf("only %d writes acknowledged before the kill", len(acked))
	}
	if len(acked) == 1000 {
		t.Log("every write finished before the kill landed; the check still holds")
	}

	_, info = startDev(t, dir)
	writer.CloseIdleConnections()
	seen := map[string]bool{}
	for _, a := range acked {
		id := fmt.Sprintf("%s#%d", a.path, a.version)
		if seen[id] {
			t.Fatalf("version %d of %s acknowledged twice", a.version, a.path)
		}
		seen[id] = true
		resp, err := writer.Get(fmt.Sprintf("%s/v1/secret/data/%s?version=%d", info.HTTPSURL, a.path, a.version))
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var got struct {
			Data struct {
				Data map[string]string `json:"data"`
			} `json:"data"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(out, &got) != nil || got.Data.Data["v"] != a.value {
			t.Fatalf("acknowledged version %d of %s (%s) after restart: %d %s", a.version, a.path, a.value, resp.StatusCode, out)
		}
	}
	t.Logf("%d of 1000 writes acknowledged before kill -9; all read back", len(acked))
}
