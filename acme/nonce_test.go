package acme

import (
	"testing"
	"time"
)

func TestNonceStore(t *testing.T) {
	n := newNonceStore()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	n.put("a", now.Add(time.Minute), now)
	n.put("b", now.Add(time.Minute), now)
	if !n.consume("a", now) {
		t.Fatal("a fresh nonce was refused")
	}
	if n.consume("a", now) {
		t.Error("a nonce was accepted twice")
	}
	if n.consume("never-issued", now) {
		t.Error("an unknown nonce was accepted")
	}
	if n.consume("b", now.Add(time.Minute)) {
		t.Error("an expired nonce was accepted")
	}
	if newNonceStore().consume("b", now) {
		t.Error("a nonce survived a restart")
	}
}
