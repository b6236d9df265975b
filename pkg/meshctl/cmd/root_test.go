package cmd

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
)

// run executes meshctl in-process and returns stdout, stderr and the exit code.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, cli.Streams{In: strings.NewReader(""), Out: &out, Err: &errb})
	return out.String(), errb.String(), code
}

func TestExitCodes(t *testing.T) {
	cases := []struct {
		args    []string
		code    int
		errPart string
	}{
		{[]string{"version"}, cli.ExitOK, ""},
		{[]string{"version", "--bogus"}, cli.ExitUsage, "unknown flag: --bogus"},
		{[]string{"version", "extra"}, cli.ExitUsage, "unknown command"},
		{[]string{"nosuchverb"}, cli.ExitUsage, "unknown command \"nosuchverb\""},
		{[]string{"version", "-o", "wide"}, cli.ExitUsage, "unknown output format"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			_, stderr, code := run(t, c.args...)
			if code != c.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, c.code, stderr)
			}
			if !strings.Contains(stderr, c.errPart) {
				t.Errorf("stderr %q lacks %q", stderr, c.errPart)
			}
		})
	}
}

func TestVersionJSON(t *testing.T) {
	out, _, code := run(t, "version", "-o", "json")
	var v map[string]map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v["meshctl"]["version"] == "" {
		t.Fatalf("exit %d, output %q", code, out)
	}
}

func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		out, _, code := run(t, "completion", sh)
		if code != 0 || !strings.Contains(out, "meshctl") {
			t.Errorf("completion %s: exit %d, %d bytes", sh, code, len(out))
		}
	}
}

func TestContextCompletion(t *testing.T) {
	dir := t.TempDir()
	kc := dir + "/kubeconfig"
	cfg := "apiVersion: v1\nkind: Config\ncontexts:\n- name: kind-east\n  context: {cluster: c}\n- name: kind-west\n  context: {cluster: c}\nclusters:\n- name: c\n  cluster: {server: https://127.0.0.1:1}\n"
	if err := os.WriteFile(kc, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, code := run(t, "__complete", "show", "clusters", "--kubeconfig", kc, "--context", "")
	if code != 0 || !strings.Contains(out, "kind-east\nkind-west\n") {
		t.Errorf("completion of --context: exit %d\n%s", code, out)
	}
}
