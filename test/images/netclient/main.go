// Command netclient is the toolbox of the e2e client pod (no registry means no
// busybox or dnsutils): DNS lookups through the pod's resolver, HTTP GETs and
// TCP/UDP checks. Each check exits 0 on success and 1 on failure; -wait retries it,
// -count N repeats it N times (one answer per run, e.g. one JSON line per echoserver reply).
//
//	netclient [-wait 30s] [-timeout 5s] dns [-server ip:53] [-type A|AAAA|SRV|TXT|CNAME|PTR] NAME
//	netclient [-wait 30s] [-timeout 5s] [-insecure] http URL
//	netclient [-wait 30s] [-timeout 5s] tcp HOST:PORT [PAYLOAD]
//	netclient [-wait 30s] [-timeout 5s] [-size N] udp HOST:PORT [PAYLOAD]
//	netclient [-wait 30s] [-timeout 5s] post URL SIZE   (SIZE bytes to the echoserver's /echo, compared when they come back)
//	netclient [-timeout 500ms] flow HOST:PORT DURATION INTERVAL   (UDP probes; prints the gaps, who answered and the lost probes, see flow)
//	netclient sleep
//	netclient [-wait 60s] [-timeout 5s] steps NAME=KIND:TARGET...   (KIND http|dns|udp; one JSON line per step; meshctl verify)
//	netclient bench-server [-listen :5201]                          (meshctl benchmark's server)
//	netclient bench throughput|latency [-duration 10s] [-samples 1000] HOST:PORT   (one JSON line)
//
// -size N pads a tcp/udp payload to N bytes; -interval is the pause between
// retries of -wait.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/netprobe"
)

func main() {
	fs := flag.NewFlagSet("netclient", flag.ExitOnError)
	wait := fs.Duration("wait", 0, "retry the check until it succeeds or this much time has passed")
	timeout := fs.Duration("timeout", 5*time.Second, "timeout of one attempt")
	count := fs.Int("count", 1, "run the check this many times (each must succeed), printing every answer; e.g. to see which pods and clusters a Service spreads requests over")
	interval := fs.Duration("interval", time.Second, "pause between attempts of -wait")
	stamp := fs.Bool("stamp", false, "print \"at UNIX-MS\" (the node's clock) before each answer: when the check first succeeded")
	size := fs.Int("size", 0, "tcp/udp: pad the payload to this many bytes")
	insecure := fs.Bool("insecure", false, "http: accept any TLS certificate (e.g. the broker's self-signed one)")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: netclient [-wait D] [-timeout D] [-count N] [-insecure] dns|http|tcp|udp|sleep ARGS...")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() == 0 {
		fs.Usage()
		os.Exit(2)
	}
	cmd, args := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "sleep":
		sleep()
		return
	case "steps":
		os.Exit(steps(args, *wait, *timeout))
	case "bench-server":
		os.Exit(benchServer(args))
	case "bench":
		os.Exit(bench(args))
	}
	if *insecure {
		http.DefaultTransport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // test tool, asked for explicitly
	}
	if cmd == "flow" {
		if err := flow(args, *timeout); err != nil {
			fmt.Fprintln(os.Stderr, "netclient: flow:", err)
			os.Exit(1)
		}
		return
	}
	check, err := parse(cmd, args, *size)
	if err != nil {
		fmt.Fprintln(os.Stderr, "netclient:", err)
		os.Exit(2)
	}
	if *count < 1 {
		fmt.Fprintln(os.Stderr, "netclient: -count must be at least 1")
		os.Exit(2)
	}
	for i := 0; i < *count; i++ {
		out, err := retry(check, *wait, *timeout, *interval)
		if err != nil {
			fmt.Fprintf(os.Stderr, "netclient: %s (run %d of %d): %v\n", cmd, i+1, *count, err)
			os.Exit(1)
		}
		if *stamp {
			fmt.Printf("at %d\n", time.Now().UnixMilli())
		}
		fmt.Print(out)
	}
}

// retry runs check until it succeeds or wait has passed.
func retry(check checkFunc, wait, timeout, interval time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		out, err := check(ctx)
		cancel()
		if err == nil {
			return out, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("failed after %d attempt(s): %w", attempt, err)
		}
		time.Sleep(interval)
	}
}

type checkFunc func(ctx context.Context) (string, error)

func parse(cmd string, args []string, size int) (checkFunc, error) {
	switch cmd {
	case "dns":
		return parseDNS(args)
	case "http":
		if len(args) != 1 {
			return nil, fmt.Errorf("http wants one URL, got %d arguments", len(args))
		}
		return func(ctx context.Context) (string, error) { return httpGet(ctx, args[0]) }, nil
	case "tcp", "udp":
		if len(args) < 1 || len(args) > 2 {
			return nil, fmt.Errorf("%s wants HOST:PORT [PAYLOAD]", cmd)
		}
		payload := "ping\n"
		if len(args) == 2 {
			payload = args[1]
		}
		payload = pad(payload, size)
		return func(ctx context.Context) (string, error) { return dial(ctx, cmd, args[0], payload) }, nil
	case "post":
		if len(args) != 2 {
			return nil, errors.New("post wants URL SIZE")
		}
		n, err := strconv.Atoi(args[1])
		if err != nil || n < 0 {
			return nil, fmt.Errorf("post: bad SIZE %q", args[1])
		}
		return func(ctx context.Context) (string, error) { return post(ctx, args[0], n) }, nil
	}
	return nil, fmt.Errorf("unknown command %q (want dns, http, post, tcp, udp, flow or sleep)", cmd)
}

func parseDNS(args []string) (checkFunc, error) {
	fs := flag.NewFlagSet("dns", flag.ContinueOnError)
	server := fs.String("server", "", "DNS server ip:port (default: the pod's /etc/resolv.conf)")
	qtype := fs.String("type", "A", "A, AAAA, SRV, TXT, CNAME or PTR")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() != 1 {
		return nil, fmt.Errorf("dns wants one NAME, got %d", fs.NArg())
	}
	name := fs.Arg(0)
	r := &net.Resolver{PreferGo: true}
	if *server != "" {
		srv := *server
		if _, _, err := net.SplitHostPort(srv); err != nil {
			srv = net.JoinHostPort(srv, "53")
		}
		r.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, srv)
		}
	}
	t := strings.ToUpper(*qtype)
	switch t {
	case "A", "AAAA", "SRV", "TXT", "CNAME", "PTR":
	default:
		return nil, fmt.Errorf("unsupported DNS type %q", *qtype)
	}
	return func(ctx context.Context) (string, error) { return lookup(ctx, r, t, name) }, nil
}

// lookup prints one answer per line, sorted as the resolver returned them.
func lookup(ctx context.Context, r *net.Resolver, qtype, name string) (string, error) {
	var lines []string
	switch qtype {
	case "A", "AAAA":
		network := "ip4"
		if qtype == "AAAA" {
			network = "ip6"
		}
		ips, err := r.LookupIP(ctx, network, name)
		if err != nil {
			return "", err
		}
		for _, ip := range ips {
			lines = append(lines, ip.String())
		}
	case "SRV":
		_, srvs, err := r.LookupSRV(ctx, "", "", name)
		if err != nil {
			return "", err
		}
		for _, s := range srvs {
			lines = append(lines, fmt.Sprintf("%s %d %d %d", s.Target, s.Port, s.Priority, s.Weight))
		}
	case "TXT":
		txts, err := r.LookupTXT(ctx, name)
		if err != nil {
			return "", err
		}
		lines = txts
	case "CNAME":
		c, err := r.LookupCNAME(ctx, name)
		if err != nil {
			return "", err
		}
		lines = []string{c}
	case "PTR":
		names, err := r.LookupAddr(ctx, name)
		if err != nil {
			return "", err
		}
		lines = names
	}
	if len(lines) == 0 {
		return "", fmt.Errorf("no %s records for %s", qtype, name)
	}
	return strings.Join(lines, "\n") + "\n", nil
}

func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("bad URL %q: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return string(body), nil
}

// dial connects, sends payload and prints the first reply (UDP needs a reply to
// prove reachability; TCP succeeds on connect when the peer sends nothing back).
func dial(ctx context.Context, network, addr, payload string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := io.WriteString(c, payload); err != nil {
		return "", fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 64*1024)
	n, err := c.Read(buf)
	if err != nil {
		if network == "tcp" {
			return fmt.Sprintf("connected to %s\n", c.RemoteAddr()), nil
		}
		return "", fmt.Errorf("no reply from %s: %w", addr, err)
	}
	out := string(buf[:n])
	if !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	return out, nil
}

// pad repeats s's bytes (or '.') until the payload is size bytes long.
func pad(s string, size int) string {
	if size <= len(s) {
		return s
	}
	var b strings.Builder
	b.WriteString(s)
	for b.Len() < size {
		b.WriteByte(byte('a' + b.Len()%26))
	}
	return b.String()
}

// post sends size pseudo-random bytes to url (the echoserver's /echo),
// fails unless the same bytes come back, and prints the X-Echo header (the
// server's JSON reply, with the size it received).
func post(ctx context.Context, url string, size int) (string, error) {
	body := make([]byte, size)
	_, _ = rand.Read(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("bad URL %q: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(io.LimitReader(resp.Body, int64(size)+1))
	if err != nil {
		return "", fmt.Errorf("read body after %d bytes: %w", len(got), err)
	}
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("POST %s: %s: %s", url, resp.Status, strings.TrimSpace(string(got)))
	}
	if !bytes.Equal(got, body) {
		return "", fmt.Errorf("POST %s: sent %d bytes, %d came back, not the same", url, size, len(got))
	}
	return resp.Header.Get("X-Echo") + "\n", nil
}

// flowReport is what flow prints: when it ran (Unix ms, the node's clock),
// how many probes were answered, and every gap — from the last answer
// before an outage to the first after it — longer than twice the interval;
// who answered (the echoserver's cluster) each time it changed, and when
// each unanswered probe was sent (the first maxLost).
type flowReport struct {
	StartMs int64    `json:"startMs"`
	EndMs   int64    `json:"endMs"`
	Sent    int      `json:"sent"`
	OK      int      `json:"ok"`
	Gaps    []gap    `json:"gaps"`
	Answers []answer `json:"answers,omitempty"`
	LostMs  []int64  `json:"lostMs,omitempty"`
}

type gap struct {
	FromMs int64 `json:"fromMs"`
	ToMs   int64 `json:"toMs"`
}

// answer: from AtMs on, probes were answered by Cluster.
type answer struct {
	AtMs    int64  `json:"atMs"`
	Cluster string `json:"cluster"`
}

const maxLost = 2000

// flow sends a UDP probe to addr every interval for duration and reports
// the gaps in the answers (a failover's outage seen by the traffic). It
// fails when no probe was answered at all, or none during the last second.
func flow(args []string, timeout time.Duration) error {
	if len(args) != 3 {
		return errors.New("flow wants HOST:PORT DURATION INTERVAL")
	}
	addr := args[0]
	duration, err := time.ParseDuration(args[1])
	if err != nil {
		return fmt.Errorf("DURATION: %w", err)
	}
	interval, err := time.ParseDuration(args[2])
	if err != nil || interval <= 0 {
		return fmt.Errorf("bad INTERVAL %q", args[2])
	}
	rep := flowReport{StartMs: time.Now().UnixMilli()}
	lastOK := time.Now()
	end := time.Now().Add(duration)
	for time.Now().Before(end) {
		next := time.Now().Add(interval)
		sent := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), min(timeout, interval))
		out, err := dial(ctx, "udp", addr, "flow\n")
		cancel()
		rep.Sent++
		if err == nil {
			now := time.Now()
			if now.Sub(lastOK) > 2*interval {
				rep.Gaps = append(rep.Gaps, gap{lastOK.UnixMilli(), now.UnixMilli()})
			}
			rep.OK++
			lastOK = now
			var who struct{ Cluster string }
			_ = json.Unmarshal([]byte(out), &who)
			if n := len(rep.Answers); n == 0 || rep.Answers[n-1].Cluster != who.Cluster {
				rep.Answers = append(rep.Answers, answer{now.UnixMilli(), who.Cluster})
			}
		} else if len(rep.LostMs) < maxLost {
			rep.LostMs = append(rep.LostMs, sent.UnixMilli())
		}
		time.Sleep(time.Until(next))
	}
	rep.EndMs = time.Now().UnixMilli()
	b, _ := json.Marshal(rep)
	fmt.Println(string(b))
	if rep.OK == 0 {
		return fmt.Errorf("no probe of %d answered", rep.Sent)
	}
	if time.Since(lastOK) > time.Second+interval {
		return fmt.Errorf("no answer during the last %s", time.Since(lastOK).Round(time.Millisecond))
	}
	return nil
}

// sleep keeps the pod running until it is told to stop.
func sleep() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	<-ch
}

// steps runs each step in order (each retried up to wait) and prints one
// JSON line per step; exit 1 when any failed.
func steps(args []string, wait, timeout time.Duration) int {
	if wait == 0 {
		wait = time.Minute
	}
	var list []netprobe.Step
	for _, a := range args {
		s, err := netprobe.ParseStep(a)
		if err != nil {
			fmt.Fprintln(os.Stderr, "netclient:", err)
			return 2
		}
		list = append(list, s)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	code := 0
	enc := json.NewEncoder(os.Stdout)
	for _, s := range list {
		r := netprobe.RunStep(ctx, s, wait, timeout)
		_ = enc.Encode(r)
		if !r.OK {
			code = 1
		}
	}
	return code
}

func benchServer(args []string) int {
	fs := flag.NewFlagSet("bench-server", flag.ExitOnError)
	listen := fs.String("listen", ":5201", "TCP listen address")
	_ = fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "netclient:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Fprintln(os.Stderr, "netclient: benchmark server on", ln.Addr())
	if err := netprobe.Serve(ctx, ln); err != nil {
		fmt.Fprintln(os.Stderr, "netclient:", err)
		return 1
	}
	return 0
}

// bench measures against a bench-server and prints one JSON line.
func bench(args []string) int {
	if len(args) == 0 || (args[0] != "throughput" && args[0] != "latency") {
		fmt.Fprintln(os.Stderr, "netclient: bench throughput|latency [-duration D] [-samples N] [-wait D] HOST:PORT")
		return 2
	}
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	dur := fs.Duration("duration", 10*time.Second, "throughput: how long to send")
	samples := fs.Int("samples", 1000, "latency: round trips")
	wait := fs.Duration("wait", 60*time.Second, "retry connecting to the server this long")
	_ = fs.Parse(args[1:])
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "netclient: bench wants HOST:PORT")
		return 2
	}
	addr := fs.Arg(0)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var out any
	var err error
	for deadline := time.Now().Add(*wait); ; {
		rctx, cancel := context.WithTimeout(ctx, *dur+30*time.Second)
		if args[0] == "throughput" {
			out, err = netprobe.MeasureThroughput(rctx, addr, *dur)
		} else {
			out, err = netprobe.MeasureLatency(rctx, addr, *samples)
		}
		cancel()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "netclient: bench:", err)
		return 1
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
	return 0
}
