// Package env is what the root command hands every verb: the streams, the
// cluster flags and the progress printer.
package env

import (
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
)

// Env is shared by every verb of one invocation.
type Env struct {
	cli.Streams
	Kube kube.Flags
	// TTY forces the spinner on (true) or off (false); nil: detect.
	TTY *bool
}

// Progress returns a printer on the error stream, with a spinner when it
// is a terminal.
func (e *Env) Progress() *progress.Printer {
	tty := cli.IsTerminal(e.Err)
	if e.TTY != nil {
		tty = *e.TTY
	}
	return progress.New(e.Err, tty)
}
