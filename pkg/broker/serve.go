package broker

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

// Serve serves the broker's API with TLS on ln until ctx is done, then
// shuts down gracefully: readiness fails, watches end, in-flight writes
// finish.
func (b *Broker) Serve(ctx context.Context, ln net.Listener, tlsConf *tls.Config) error {
	srv := &http.Server{
		Handler:           b.Handler(),
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       b.cfg.ReadTimeout,
		// Bounds every response; watch streams move the deadline per chunk.
		WriteTimeout:   b.cfg.ResponseTimeout,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		// Each connection holds a read buffer of its largest frame, and
		// each stream the body its client sent ahead of the handler (a
		// heartbeat waiting for a decoding slot), up to the flow-control
		// window: 1 MiB each by default, over 300 MiB for a thousand
		// gateways. HTTP/2's smallest frame and window bound that to
		// 80 KiB per connection.
		HTTP2: &http.HTTP2Config{MaxReadFrameSize: 16 << 10,
			MaxReceiveBufferPerConnection: 64 << 10, MaxReceiveBufferPerStream: 64 << 10},
		ErrorLog: slog.NewLogLogger(b.log.Handler(), slog.LevelInfo), // TLS handshake errors and the like
	}
	errc := make(chan error, 1)
	go func() {
		if tlsConf != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	b.log.Info("broker serving", "addr", ln.Addr().String(), "tls", tlsConf != nil)
	select {
	case err := <-errc:
		b.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	b.log.Info("broker shutting down")
	b.drain() // ends watches, fails readiness
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	b.Close()
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
