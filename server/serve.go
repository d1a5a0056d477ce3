package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Listeners are bound sockets; binding before serving lets callers learn the
// real addresses (port 0 in tests) and fail early on a taken port.
type Listeners struct {
	HTTPS, HTTP net.Listener
	Workload    *net.UnixListener
}

// Listen binds the configured addresses.
func (s *Server) Listen() (*Listeners, error) {
	https, err := net.Listen("tcp", s.cfg.Listen.HTTPS)
	if err != nil {
		return nil, fmt.Errorf("listen.https %s: %w", s.cfg.Listen.HTTPS, err)
	}
	plain, err := net.Listen("tcp", s.cfg.Listen.HTTP)
	if err != nil {
		https.Close()
		return nil, fmt.Errorf("listen.http %s: %w", s.cfg.Listen.HTTP, err)
	}
	wl, err := s.listenWorkload()
	if err != nil {
		https.Close()
		plain.Close()
		return nil, err
	}
	return &Listeners{HTTPS: https, HTTP: plain, Workload: wl}, nil
}

// TLSConfig is the HTTPS listener's configuration: Sigil's own certificate,
// and a client certificate requested (verified per request against the
// current trust bundle, which changes with rotation).
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.tls.get,
		ClientAuth:     tls.RequestClientCert,
	}
}

// Serve runs both listeners until ctx is done, then shuts them down
// gracefully and stops background work.
func (s *Server) Serve(ctx context.Context, l *Listeners) error {
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	admin := &http.Server{
		Handler:           s.AdminHandler(),
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errLog,
	}
	public := &http.Server{
		Handler:           s.PublicHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errLog,
	}
	// Sync streams never end on their own: end them when shutting down.
	admin.RegisterOnShutdown(s.agents.closeAll)
	errc := make(chan error, 3)
	go func() { errc <- admin.Serve(tls.NewListener(l.HTTPS, admin.TLSConfig)) }()
	go func() { errc <- public.Serve(l.HTTP) }()
	wctx, stopWorkload := context.WithCancel(ctx)
	defer stopWorkload()
	go func() { errc <- s.workloadAPI().Serve(wctx, l.Workload) }()
	go s.watch(wctx)
	s.log.Info("listening", "https", l.HTTPS.Addr().String(), "http", l.HTTP.Addr().String(), "workload_socket", l.Workload.Addr().String())

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopWorkload()
	admin.Shutdown(shutdown)
	public.Shutdown(shutdown)
	s.stopBackground()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
