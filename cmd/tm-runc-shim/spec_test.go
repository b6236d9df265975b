package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestSpecFile(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--root", "/run/r", "--log", "/l.json", "--log-format", "json", "create", "--bundle", "/b", "--pid-file", "/p", "id"}, "/b/config.json"},
		{[]string{"create", "-b", "/b2", "id"}, "/b2/config.json"},
		{[]string{"--systemd-cgroup", "run", "--bundle=/b3", "id"}, "/b3/config.json"},
		{[]string{"run", "id"}, "config.json"},
		{[]string{"--root", "/r", "exec", "--process", "/tmp/p.json", "--detach", "id"}, "/tmp/p.json"},
		{[]string{"exec", "-p", "/tmp/q.json", "id"}, "/tmp/q.json"},
		{[]string{"--root", "/r", "start", "id"}, ""},
		{[]string{"--root", "/r", "delete", "--force", "id"}, ""},
		{[]string{"--version"}, ""},
	}
	for _, c := range cases {
		if got := specFile(c.args); got != c.want {
			t.Errorf("specFile(%q) = %q, want %q", c.args, got, c.want)
		}
	}
}

func TestMissing(t *testing.T) {
	all := uint64(1)<<uint(len(capNames)) - 1
	if m := missing(all); len(m) != 0 {
		t.Errorf("complete set: missing %v", m)
	}
	m := missing(all &^ (1 << 24))
	if !reflect.DeepEqual(m, map[string]bool{"CAP_SYS_RESOURCE": true}) {
		t.Errorf("missing = %v, want only CAP_SYS_RESOURCE", m)
	}
}

func TestFixSpecRuntimeSpec(t *testing.T) {
	in := `{"ociVersion":"1.0.2","process":{"args":["/init"],"capabilities":{"bounding":["CAP_CHOWN","CAP_SYS_RESOURCE"],"effective":["CAP_SYS_RESOURCE"],"permitted":["CAP_CHOWN","CAP_SYS_RESOURCE"]},"oomScoreAdj":5},"root":{"path":"rootfs"},"x-unknown":{"k":[1,2]}}`
	out, changed, err := fixSpec([]byte(in), map[string]bool{"CAP_SYS_RESOURCE": true})
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	caps := got["process"].(map[string]any)["capabilities"].(map[string]any)
	want := map[string]any{"bounding": []any{"CAP_CHOWN"}, "effective": []any{}, "permitted": []any{"CAP_CHOWN"}}
	if !reflect.DeepEqual(caps, want) {
		t.Errorf("capabilities = %v, want %v", caps, want)
	}
	// everything else is kept
	if got["x-unknown"] == nil || got["root"] == nil || got["process"].(map[string]any)["oomScoreAdj"] != 5.0 {
		t.Errorf("unrelated fields lost: %s", out)
	}
}

func TestFixSpecProcessFileAndNoop(t *testing.T) {
	in := `{"args":["sh"],"capabilities":{"bounding":["CAP_SYS_RESOURCE","CAP_KILL"]}}`
	out, changed, err := fixSpec([]byte(in), map[string]bool{"CAP_SYS_RESOURCE": true})
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	var got struct {
		Capabilities map[string][]string `json:"capabilities"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Capabilities["bounding"], []string{"CAP_KILL"}) {
		t.Errorf("bounding = %v", got.Capabilities["bounding"])
	}
	// nothing to drop: the bytes are returned untouched
	out, changed, err = fixSpec([]byte(in), map[string]bool{"CAP_BPF": true})
	if err != nil || changed || string(out) != in {
		t.Errorf("no-op changed=%v err=%v out=%s", changed, err, out)
	}
	if _, _, err := fixSpec([]byte("{not json"), map[string]bool{"CAP_BPF": true}); err == nil {
		t.Error("bad JSON accepted")
	}
}

func TestFixFileKeepsModeAndBadInput(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "config.json")
	in := `{"process":{"capabilities":{"bounding":["CAP_SYS_RESOURCE"]}}}`
	if err := os.WriteFile(f, []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}
	bnd := uint64(1)<<uint(len(capNames)) - 1
	if err := fixFile(f, bnd&^(1<<24)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(f)
	if string(b) != `{"process":{"capabilities":{"bounding":[]}}}` {
		t.Errorf("rewritten spec %s", b)
	}
	if st, _ := os.Stat(f); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte("{oops"), 0o644)
	if err := fixFile(bad, bnd&^(1<<24)); err == nil {
		t.Error("bad spec accepted")
	}
	if b, _ := os.ReadFile(bad); string(b) != "{oops" {
		t.Error("bad spec was modified")
	}
}
