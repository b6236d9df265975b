// Package progress shows a long command's steps, one line per step with its
// duration: a spinner that rewrites its line on a terminal, plain lines
// otherwise (CI logs, pipes). Every meshctl verb that waits uses it.
package progress

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Printer writes the steps of one command.
type Printer struct {
	w   io.Writer
	tty bool
	// Now is the clock; tests set it.
	Now func() time.Time
	// Tick is the spinner period on a terminal.
	Tick time.Duration

	mu  sync.Mutex
	cur *Step
}

// New returns a Printer writing to w; tty turns the spinner on.
func New(w io.Writer, tty bool) *Printer {
	return &Printer{w: w, tty: tty, Now: time.Now, Tick: 100 * time.Millisecond}
}

// Discard prints nothing.
func Discard() *Printer { return New(io.Discard, false) }

// Step is one step in progress.
type Step struct {
	p      *Printer
	title  string
	start  time.Time
	status string
	stop   chan struct{}
	wg     sync.WaitGroup
	ended  bool
}

var frames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// Start begins a step. Only one step runs at a time; starting another ends
// the running one as done.
func (p *Printer) Start(title string) *Step {
	p.mu.Lock()
	prev := p.cur
	p.mu.Unlock()
	if prev != nil {
		prev.Done()
	}
	s := &Step{p: p, title: title, start: p.Now(), stop: make(chan struct{})}
	p.mu.Lock()
	p.cur = s
	if p.tty {
		s.drawLocked(0)
		s.wg.Add(1)
		go s.spin()
	} else {
		fmt.Fprintf(p.w, "• %s ...\n", title)
	}
	p.mu.Unlock()
	return s
}

func (s *Step) spin() {
	defer s.wg.Done()
	t := time.NewTicker(s.p.Tick)
	defer t.Stop()
	for i := 1; ; i++ {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.p.mu.Lock()
			if !s.ended {
				s.drawLocked(i)
			}
			s.p.mu.Unlock()
		}
	}
}

func (s *Step) drawLocked(frame int) {
	line := fmt.Sprintf("%s %s (%s)", frames[frame%len(frames)], s.title, Duration(s.p.Now().Sub(s.start)))
	if s.status != "" {
		line += " " + s.status
	}
	fmt.Fprintf(s.p.w, "\r\033[K%s", line)
}

// Status tells what the step is waiting for now ("2/3 pods ready"). On a
// terminal it shows on the spinner line; otherwise each change is a line.
func (s *Step) Status(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	if s.ended || msg == s.status {
		return
	}
	s.status = msg
	if s.p.tty {
		s.drawLocked(0)
	} else {
		fmt.Fprintf(s.p.w, "  %s\n", msg)
	}
}

func (s *Step) end(mark, note string) {
	s.p.mu.Lock()
	if s.ended {
		s.p.mu.Unlock()
		return
	}
	s.ended = true
	if s.p.cur == s {
		s.p.cur = nil
	}
	line := fmt.Sprintf("%s %s (%s)", mark, s.title, Duration(s.p.Now().Sub(s.start)))
	if note != "" {
		line += ": " + note
	}
	if s.p.tty {
		fmt.Fprintf(s.p.w, "\r\033[K%s\n", line)
	} else {
		fmt.Fprintf(s.p.w, "%s\n", line)
	}
	s.p.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
}

// Done ends the step successfully; note (optional) tells the outcome.
func (s *Step) Done(note ...string) { s.end("✓", join(note)) }

// Skip ends a step that had nothing to do, saying why.
func (s *Step) Skip(why string) { s.end("-", why) }

// Fail ends the step as failed and returns err unchanged, so that
// `return step.Fail(err)` reads naturally.
func (s *Step) Fail(err error) error {
	s.end("✗", "")
	return err
}

// Info prints a line of its own (between steps).
func (p *Printer) Info(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.cur != nil {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

// Run runs fn as a step titled title.
func (p *Printer) Run(title string, fn func(*Step) error) error {
	s := p.Start(title)
	if err := fn(s); err != nil {
		return s.Fail(err)
	}
	s.Done()
	return nil
}

// Duration formats d the way steps show it: 850ms, 3.2s, 1m05s.
func Duration(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	default:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
}

func join(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}
