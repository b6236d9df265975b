package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/brokertest"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	bolt "go.etcd.io/bbolt"
)

// buildBroker compiles cmd/broker into a temp dir.
func buildBroker(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH (needed to build the binaries under test): %v", err)
	}
	bin := filepath.Join(t.TempDir(), "broker")
	out, err := exec.Command(goBin, "build", "-o", bin, "github.com/tunnelmesh/tunnelmesh/cmd/broker").CombinedOutput()
	if err != nil {
		t.Fatalf("go build cmd/broker: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	// Below the ephemeral range: the broker binds it again after a kill,
	// and a port from ":0" could meanwhile be an outgoing connection's.
	return fmt.Sprintf("127.0.0.1:%d", testkit.Ports(t, 1)[0])
}

type brokerProc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
}

func startProc(t *testing.T, bin, dir, addr string) *brokerProc {
	t.Helper()
	p := &brokerProc{stderr: &bytes.Buffer{}}
	p.cmd = exec.Command(bin, "serve", "--data-dir", dir, "--listen", addr)
	p.cmd.Stderr = &lockedWriter{w: p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	return p
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func waitReady(t *testing.T, c *brokerclient.Client, p *brokerProc) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Healthy(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker not ready: %v\n%s", err, p.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSIGKILLDuringWritesLosesNoAcknowledgedWrite kills a broker process
// with SIGKILL in the middle of a stream of concurrent writes. After the
// restart the store opens cleanly and every acknowledged write is there.
func TestSIGKILLDuringWritesLosesNoAcknowledgedWrite(t *testing.T) {
	brokertest.SkipUnlessBolt(t) // the etcd store: see replica_test.go
	bin := buildBroker(t)
	dir := t.TempDir()
	if out, err := exec.Command(bin, "init", "--data-dir", dir).CombinedOutput(); err != nil {
		t.Fatalf("broker init: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "init", "--data-dir", dir).CombinedOutput(); err == nil || !strings.Contains(string(out), "--force") {
		t.Fatalf("second init should refuse without --force: %v\n%s", err, out)
	}
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	admin, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	if fi, err := os.Stat(filepath.Join(dir, "admin.token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token mode: %v %v", fi.Mode(), err)
	}
	addr := freeAddr(t)
	p := startProc(t, bin, dir, addr)
	adminC, err := brokerclient.New("https://"+addr, ca, strings.TrimSpace(string(admin)))
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, adminC, p)
	ctx := ctxT(t)
	tok, err := adminC.CreateToken(ctx, time.Hour, "crash")
	if err != nil {
		t.Fatal(err)
	}
	c, err := brokerclient.New("https://"+addr, ca, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Join(ctx, tok, api.JoinRequest{ClusterID: "east", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.101.0.0/16"}}); err != nil {
		t.Fatal(err)
	}

	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("svc-%d-%d", w, i)
				wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := c.PublishExport(wctx, export("east", "ns", name))
				cancel()
				if err != nil {
					return // the broker died; unacknowledged writes may or may not be there
				}
				mu.Lock()
				acked[name] = true
				mu.Unlock()
			}
		}()
	}
	// Let writes flow, then kill mid-stream.
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	close(stop)
	wg.Wait()
	mu.Lock()
	nAcked := len(acked)
	mu.Unlock()
	t.Logf("%d writes acknowledged before SIGKILL", nAcked)

	// The file opens and passes bbolt's consistency check.
	db, err := bolt.Open(filepath.Join(dir, store.FileName), 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("open after SIGKILL: %v", err)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}); err != nil {
		t.Fatalf("bbolt check after SIGKILL: %v", err)
	}
	db.Close()

	p2 := startProc(t, bin, dir, addr)
	waitReady(t, adminC, p2)
	snap, err := adminC.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, e := range snap.Exports {
		have[e.Name] = true
	}
	missing := 0
	for name := range acked {
		if !have[name] {
			missing++
			if missing < 5 {
				t.Errorf("acknowledged export %s lost", name)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged writes lost", missing, nAcked)
	}
	// Every export took one revision after the join's.
	if snap.Revision < int64(nAcked)+1 {
		t.Fatalf("revision %d < %d acknowledged writes", snap.Revision, nAcked+1)
	}
	// The restarted broker takes writes, and stops cleanly on SIGTERM.
	if err := c.PublishExport(ctx, export("east", "ns", "after-restart")); err != nil {
		t.Fatalf("write after restart: %v", err)
	}
	_ = p2.cmd.Process.Signal(syscall.SIGTERM)
	if err := p2.cmd.Wait(); err != nil {
		t.Fatalf("broker exit after SIGTERM: %v\n%s", err, p2.stderr.String())
	}
}
