// Command echoserver answers every HTTP request (and every UDP datagram) with who
// answered: pod IP, hostname, cluster name and the client address it saw. e2e tests
// use it to prove which pod, node and cluster served a request.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Reply is the JSON body of every answer.
type Reply struct {
	PodIP     string `json:"podIP"`
	Hostname  string `json:"hostname"`
	Cluster   string `json:"cluster"`
	Namespace string `json:"namespace,omitempty"`
	Node      string `json:"node,omitempty"`
	Client    string `json:"client"`
	Path      string `json:"path,omitempty"`
	Proto     string `json:"proto"`
	// Size is how many bytes the request carried (UDP datagram, /echo body).
	Size int `json:"size,omitempty"`
}

// maxEcho bounds what POST /echo reads and sends back.
const maxEcho = 16 << 20

func main() {
	addr := flag.String("listen", envOr("LISTEN", ":8080"), "TCP (HTTP) and UDP listen address")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	id := identity()
	log.Info("echoserver starting", "listen", *addr, "podIP", id.PodIP, "hostname", id.Hostname, "cluster", id.Cluster)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	pc, err := net.ListenPacket("udp", *addr)
	if err != nil {
		log.Error("listen udp", "err", err)
		os.Exit(1)
	}
	go serveUDP(pc, id, log)

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	// POST /echo answers with the request body, unchanged, and the Reply as
	// JSON in the X-Echo header: e2e tests send payloads larger than the
	// tunnel MTU and compare what comes back.
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxEcho+1))
		if err != nil {
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if len(body) > maxEcho {
			http.Error(w, fmt.Sprintf("body larger than %d bytes", maxEcho), http.StatusRequestEntityTooLarge)
			return
		}
		rep := id
		rep.Client, rep.Path, rep.Proto, rep.Size = r.RemoteAddr, r.URL.Path, "http", len(body)
		b, _ := json.Marshal(rep)
		w.Header().Set("X-Echo", string(b))
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(body)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		rep := id
		rep.Client, rep.Path, rep.Proto = r.RemoteAddr, r.URL.Path, "http"
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rep)
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = pc.Close()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve http", "err", err)
		os.Exit(1)
	}
}

// serveUDP answers each datagram with the JSON Reply.
func serveUDP(pc net.PacketConn, id Reply, log *slog.Logger) {
	buf := make([]byte, 64*1024)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.Error("read udp", "err", err)
			}
			return
		}
		rep := id
		rep.Client, rep.Proto, rep.Size = from.String(), "udp", n
		b, _ := json.Marshal(rep)
		if _, err := pc.WriteTo(b, from); err != nil {
			log.Warn("write udp", "to", from, "err", err)
		}
	}
}

// identity reads the pod's identity from the downward API environment, falling back
// to the host name and the first non-loopback address.
func identity() Reply {
	host, _ := os.Hostname()
	return Reply{
		PodIP:     envOr("POD_IP", firstAddr()),
		Hostname:  host,
		Cluster:   envOr("CLUSTER_NAME", "unknown"),
		Namespace: os.Getenv("POD_NAMESPACE"),
		Node:      os.Getenv("NODE_NAME"),
	}
}

func firstAddr() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
