package cli

import (
	"io"
	"os"

	"golang.org/x/term"
)

// Streams are where a command writes: Out for results (tables, JSON,
// files' paths), Err for progress and errors, so `-o json` stays parseable.
type Streams struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// StdStreams are the process's own streams.
func StdStreams() Streams { return Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr} }

// IsTerminal reports whether w is a terminal (a spinner is welcome there).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
