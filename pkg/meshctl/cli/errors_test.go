package cli

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestRenderAndExitCode(t *testing.T) {
	cause := errors.New("dial tcp 10.0.0.1:443: connection refused")
	cases := []struct {
		name string
		err  error
		want string
		code int
	}{
		{"plain", errors.New("boom"), "Error: boom\n", ExitFailure},
		{"refused", Refused(cause, "check --broker-url", "broker %s is unreachable", "https://b"),
			"Error: broker https://b is unreachable\n  Cause: dial tcp 10.0.0.1:443: connection refused\n  Fix:   check --broker-url\n", ExitRefused},
		{"wrapped", fmt.Errorf("join: %w", Usage("pass --pod-cidr", "no pod CIDR")),
			"Error: no pod CIDR\n  Fix:   pass --pod-cidr\n", ExitUsage},
		{"multiline fix", Failed(nil, "run a\nthen b", "x"), "Error: x\n  Fix:   run a\n         then b\n", ExitFailure},
		{"nil", nil, "", ExitOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := ExitCode(c.err); got != c.code {
				t.Errorf("exit code %d, want %d", got, c.code)
			}
			if c.err == nil {
				return
			}
			var b bytes.Buffer
			Render(&b, c.err)
			if b.String() != c.want {
				t.Errorf("got\n%q\nwant\n%q", b.String(), c.want)
			}
		})
	}
}
