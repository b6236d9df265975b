// Package cli holds what every meshctl verb shares: the error type that
// says what is wrong and what to do, the exit codes scripts rely on, and
// the streams a command writes to.
package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// Exit codes. Scripts may rely on them; README documents them.
const (
	ExitOK = 0
	// ExitFailure: the command failed; something may have changed.
	ExitFailure = 1
	// ExitUsage: bad flags or arguments; nothing was done.
	ExitUsage = 2
	// ExitRefused: a check refused the operation before anything changed
	// (unreachable cluster or broker, bad token, CIDR overlap, taken ID,
	// missing images …). Fix the cause and run again.
	ExitRefused = 3
	// ExitTimeout: the changes were made but the wait for the desired
	// state ran out of time; the message names the step.
	ExitTimeout = 4
)

// Error is a user-facing error: What is wrong, Fix is what to do about it.
// Cause, when set, is the underlying error shown for detail.
type Error struct {
	What  string
	Fix   string
	Cause error
	Code  int // exit code; 0 means ExitFailure
}

func (e *Error) Error() string {
	s := e.What
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Cause }

// Refused returns an Error with ExitRefused: nothing was changed.
func Refused(cause error, fix, format string, args ...any) *Error {
	return &Error{What: fmt.Sprintf(format, args...), Fix: fix, Cause: cause, Code: ExitRefused}
}

// Failed returns an Error with ExitFailure.
func Failed(cause error, fix, format string, args ...any) *Error {
	return &Error{What: fmt.Sprintf(format, args...), Fix: fix, Cause: cause, Code: ExitFailure}
}

// Usage returns an Error with ExitUsage.
func Usage(fix, format string, args ...any) *Error {
	return &Error{What: fmt.Sprintf(format, args...), Fix: fix, Code: ExitUsage}
}

// ExitCode maps an error to the process exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var e *Error
	if errors.As(err, &e) && e.Code != 0 {
		return e.Code
	}
	return ExitFailure
}

// Render writes err the one way meshctl shows errors:
//
//	Error: <what is wrong>
//	  Cause: <underlying error>
//	  Fix:   <what to do>
func Render(w io.Writer, err error) {
	var e *Error
	if !errors.As(err, &e) {
		fmt.Fprintf(w, "Error: %s\n", err)
		return
	}
	fmt.Fprintf(w, "Error: %s\n", e.What)
	if e.Cause != nil {
		fmt.Fprintf(w, "  Cause: %s\n", indent(e.Cause.Error()))
	}
	if e.Fix != "" {
		fmt.Fprintf(w, "  Fix:   %s\n", indent(e.Fix))
	}
}

func indent(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n         ") }
