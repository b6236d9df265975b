package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/core"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/validate"
)

// statusOf maps an error code to its HTTP status.
func statusOf(code string) int {
	switch code {
	case api.CodeBadRequest, api.CodeInvalid:
		return http.StatusBadRequest
	case api.CodeUnauthorized:
		return http.StatusUnauthorized
	case api.CodeForbidden, api.CodeOutsidePolicy, api.CodeQuotaExceeded:
		return http.StatusForbidden
	case api.CodeNotFound:
		return http.StatusNotFound
	case api.CodeConflict, api.CodeCIDROverlap, api.CodeClusterExists, api.CodeExhausted:
		return http.StatusConflict
	case api.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case api.CodeUnsupportedMedia:
		return http.StatusUnsupportedMediaType
	case api.CodeUnavailable, api.CodeOutcomeUnknown:
		return http.StatusServiceUnavailable
	case api.CodeRequestTimeout:
		return http.StatusRequestTimeout
	case api.CodeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

// writeError writes err as an api.Error body; other errors become Internal.
func (b *Broker) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *api.Error
	if !errors.As(err, &ae) {
		b.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		ae = &api.Error{Code: api.CodeInternal, Message: "internal error; see the broker log"}
	}
	if ae.Code == api.CodeUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tunnelmesh-broker"`)
	}
	writeJSON(w, statusOf(ae.Code), ae)
}

// decodeBody enforces content type and size, then decodes strictly.
func (b *Broker) decodeBody(w http.ResponseWriter, r *http.Request, v any) *api.Error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return &api.Error{Code: api.CodeUnsupportedMedia,
			Message: "request body must be Content-Type: application/json"}
	}
	body := http.MaxBytesReader(w, r.Body, b.cfg.MaxBodyBytes)
	return validate.Decode(body, v, b.cfg.MaxBodyBytes)
}

// statusWriter records the status for metrics; Unwrap keeps Flush and
// deadlines reachable through http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Handler returns the broker's HTTP API.
func (b *Broker) Handler() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, b.instrument(pattern, h))
	}
	handle("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	handle("GET /readyz", b.handleReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(b.metrics.reg, promhttp.HandlerOpts{}))
	p := "/" + api.Version
	handle("POST "+p+"/join", b.handleJoin)
	handle("POST "+p+"/tokens", b.handleCreateToken)
	handle("GET "+p+"/tokens", b.handleListTokens)
	handle("DELETE "+p+"/tokens/{id}", b.handleRevokeToken)
	handle("GET "+p+"/snapshot", b.handleSnapshot)
	handle("GET "+p+"/watch", b.handleWatch)
	handle("GET "+p+"/status", b.handleStatus)
	handle("GET "+p+"/clusterset", b.handleClusterSet)
	handle("GET "+p+"/policy", b.handlePolicy)
	handle("PUT "+p+"/policy", b.handleSetPolicy)
	handle("GET "+p+"/backup", b.handleBackup)
	handle("DELETE "+p+"/clusters/{cluster}", b.handleRemoveCluster)
	handle("POST "+p+"/clusters/{cluster}/translations", b.handleTranslate)
	handle("PUT "+p+"/clusters/{cluster}/gateways/{hostname}", b.handlePutGateway)
	handle("POST "+p+"/clusters/{cluster}/gateways/{hostname}/heartbeat", b.handleHeartbeat)
	handle("DELETE "+p+"/clusters/{cluster}/gateways/{hostname}", b.handleDeleteGateway)
	handle("PUT "+p+"/clusters/{cluster}/exports/{namespace}/{name}", b.handlePutExport)
	handle("DELETE "+p+"/clusters/{cluster}/exports/{namespace}/{name}", b.handleDeleteExport)
	// Everything no pattern takes: 405 with Allow when the path is known
	// under other methods, else 404.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(mux, r); len(allow) > 0 {
			b.metrics.requests.WithLabelValues("unmatched", r.Method, "405").Inc()
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeJSON(w, http.StatusMethodNotAllowed, &api.Error{Code: api.CodeMethodNotAllowed,
				Message: fmt.Sprintf("%s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allow, " or "))})
			return
		}
		b.metrics.requests.WithLabelValues("unmatched", r.Method, "404").Inc()
		writeJSON(w, http.StatusNotFound, &api.Error{Code: api.CodeNotFound,
			Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	return mux
}

// allowedMethods lists the methods that some pattern other than the
// catch-all serves for r's path.
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := *r
		probe.Method = m
		if _, pattern := mux.Handler(&probe); pattern != "" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	return allow
}

func (b *Broker) instrument(route string, h http.HandlerFunc) http.Handler {
	if !strings.HasPrefix(route, http.MethodGet+" ") {
		h = b.idempotent(h)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		start := time.Now()
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				b.log.Error("handler panic", "route", route, "panic", v)
				if sw.code == 0 {
					writeJSON(sw, http.StatusInternalServerError, &api.Error{Code: api.CodeInternal, Message: "internal error"})
				}
			}
			code := sw.code
			if code == 0 {
				code = http.StatusOK
			}
			b.metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(code)).Inc()
			if code >= 400 || b.log.Enabled(r.Context(), slog.LevelDebug) {
				b.log.Debug("request", "route", route, "code", code, "remote", r.RemoteAddr,
					"duration", time.Since(start))
			}
		}()
		h(sw, r)
	})
}

// handleReady answers 200 while this replica can serve and commit: it is
// not shutting down, not reloading its state, and its store answers.
func (b *Broker) handleReady(w http.ResponseWriter, r *http.Request) {
	select {
	case <-b.draining:
		writeJSON(w, http.StatusServiceUnavailable, errUnavailable)
		return
	default:
	}
	if err := b.core.Ready(r.Context()); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, &api.Error{Code: api.CodeUnavailable, Message: "not ready: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "revision": b.Revision()})
}

// idempotent answers a write sent with an Idempotency-Key that was already
// made from its recorded outcome, before anything else: the retry of a
// cluster's removal is answered though the credential it was sent with
// went with the cluster. Only the credential that sent the write, on the
// same route, gets the answer.
func (b *Broker) idempotent(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(api.HeaderIdempotencyKey)
		if key == "" {
			h(w, r)
			return
		}
		if err := core.CheckIdempotencyKey(key); err != nil {
			b.writeError(w, r, &api.Error{Code: api.CodeBadRequest, Field: api.HeaderIdempotencyKey, Message: err.Error()})
			return
		}
		res, ok, err := b.core.Replay(key, caller(r), route(r))
		switch {
		case err != nil:
			b.writeError(w, r, err)
		case ok:
			writeResult(w, res)
		default:
			h(w, r)
		}
	}
}
