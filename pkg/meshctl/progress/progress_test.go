package progress

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/golden"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func script(p *Printer, clk *fakeClock) {
	s := p.Start("Checking the broker")
	clk.add(120 * time.Millisecond)
	s.Done("https://10.0.0.1:31443")
	s = p.Start("Waiting for gateway pods")
	s.Status("0/2 ready")
	s.Status("0/2 ready") // unchanged: no new line
	clk.add(3200 * time.Millisecond)
	s.Status("1/2 ready")
	clk.add(65 * time.Second)
	_ = s.Fail(errors.New("timeout"))
	p.Info("Cluster %q joined", "east")
	s = p.Start("Labelling node")
	s.Skip("already labelled")
}

func TestPlain(t *testing.T) {
	var b bytes.Buffer
	clk := &fakeClock{t: time.Unix(0, 0)}
	p := New(&b, false)
	p.Now = clk.now
	script(p, clk)
	golden.Assert(t, "plain", b.Bytes())
}

func TestTTYRewritesOneLine(t *testing.T) {
	var b testkit.Buffer
	clk := &fakeClock{t: time.Unix(0, 0)}
	p := New(&b, true)
	p.Now = clk.now
	p.Tick = time.Millisecond
	s := p.Start("Waiting")
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(b.String(), "\r") < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	clk.add(2 * time.Second)
	s.Done()
	out := b.String()
	if strings.Count(out, "\r") < 3 {
		t.Fatalf("spinner did not redraw: %q", out)
	}
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\r\033[K✓ Waiting (2.0s)\n") {
		t.Fatalf("want one final line, got %q", out)
	}
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0ms", 850 * time.Millisecond: "850ms", 3250 * time.Millisecond: "3.2s", 65 * time.Second: "1m05s",
	} {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%v) = %q, want %q", d, got, want)
		}
	}
}
