package netprobe

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Step is one connectivity check a client pod runs: Kind http (GET URL),
// dns (A/AAAA of a name), udp (a datagram to HOST:PORT, a reply awaited) or
// bulk (one second of TCP to a benchmark server at HOST:PORT: full-size
// segments, so a path whose MTU or MSS clamp is wrong stalls here).
type Step struct {
	Name   string
	Kind   string
	Target string
}

// String is the form ParseStep reads: NAME=KIND:TARGET.
func (s Step) String() string { return s.Name + "=" + s.Kind + ":" + s.Target }

// ParseStep reads NAME=KIND:TARGET.
func ParseStep(arg string) (Step, error) {
	name, rest, ok := strings.Cut(arg, "=")
	if !ok || name == "" {
		return Step{}, fmt.Errorf("step %q: want NAME=KIND:TARGET", arg)
	}
	kind, target, ok := strings.Cut(rest, ":")
	if !ok || target == "" {
		return Step{}, fmt.Errorf("step %q: want NAME=KIND:TARGET", arg)
	}
	switch kind {
	case "http", "dns", "udp", "bulk":
	default:
		return Step{}, fmt.Errorf("step %q: kind %q is not http, dns, udp or bulk", arg, kind)
	}
	return Step{Name: name, Kind: kind, Target: target}, nil
}

// BulkDuration is how long a bulk step sends.
const BulkDuration = time.Second

// StepResult is one step's outcome. Millis is the time until it succeeded
// (retries included: a name that resolves after 3 s of propagation took 3 s),
// or until it gave up.
type StepResult struct {
	Step     string  `json:"step"`
	OK       bool    `json:"ok"`
	Millis   float64 `json:"millis"`
	Attempts int     `json:"attempts"`
	Answer   string  `json:"answer,omitempty"`
	Error    string  `json:"error,omitempty"`
}

// RunStep retries s every half second until it succeeds or wait has passed;
// each attempt is bounded by timeout.
func RunStep(ctx context.Context, s Step, wait, timeout time.Duration) StepResult {
	start := time.Now()
	res := StepResult{Step: s.Name}
	for {
		res.Attempts++
		actx, cancel := context.WithTimeout(ctx, timeout)
		answer, err := attempt(actx, s)
		cancel()
		res.Millis = float64(time.Since(start).Microseconds()) / 1000
		if err == nil {
			res.OK, res.Answer, res.Error = true, strings.TrimSpace(answer), ""
			return res
		}
		res.Error = err.Error()
		if time.Since(start) >= wait || ctx.Err() != nil {
			return res
		}
		select {
		case <-ctx.Done():
			return res
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func attempt(ctx context.Context, s Step) (string, error) {
	switch s.Kind {
	case "http":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Target, nil)
		if err != nil {
			return "", err
		}
		// A new connection per attempt: a retry must not reuse a path that failed.
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return "", err
		}
		if resp.StatusCode/100 != 2 {
			return "", fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		return string(body), nil
	case "dns":
		ips, err := net.DefaultResolver.LookupHost(ctx, s.Target)
		if err != nil {
			return "", err
		}
		sort.Strings(ips)
		return strings.Join(ips, ","), nil
	case "udp":
		var d net.Dialer
		c, err := d.DialContext(ctx, "udp", s.Target)
		if err != nil {
			return "", err
		}
		defer c.Close()
		if dl, ok := ctx.Deadline(); ok {
			_ = c.SetDeadline(dl)
		}
		if _, err := c.Write([]byte("tunnelmesh verify\n")); err != nil {
			return "", err
		}
		buf := make([]byte, 64<<10)
		n, err := c.Read(buf)
		if err != nil {
			return "", fmt.Errorf("no reply: %w", err)
		}
		return string(buf[:n]), nil
	case "bulk":
		t, err := MeasureThroughput(ctx, s.Target, BulkDuration)
		if err != nil {
			return "", err
		}
		b, err := json.Marshal(t)
		return string(b), err
	}
	return "", fmt.Errorf("unknown step kind %q", s.Kind)
}
