package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/tunnelmesh/tunnelmesh/internal/testkit"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
)

type storeConfig struct {
	kind     string // bolt or etcd
	etcdBin  string
	members  int
	replicas int
}

// etcdShipped are the settings deploy/broker-etcd gives etcd beyond its
// defaults (among them --max-txn-ops 128 and --max-request-bytes 1.5 MiB,
// which bound one broker commit): the bench runs what is shipped.
var etcdShipped = []string{"--auto-compaction-mode=periodic", "--auto-compaction-retention=1h"}

// startStore starts the etcd cluster of an etcd run (nothing for bolt) and
// returns the store flags for `broker init` and `broker serve`.
func startStore(sc storeConfig, tmp string) (args []string, stop func(), err error) {
	if sc.kind != "etcd" {
		return nil, func() {}, nil
	}
	bin := etcdBinary(sc)
	if _, err := os.Stat(bin); err != nil {
		return nil, nil, fmt.Errorf("etcd binary: %w (build it with `make etcd-binary`, or pass --etcd-bin)", err)
	}
	var peers, clients []string
	var ports [][2]int
	for i := range sc.members {
		p, err := testkit.FreePorts(2)
		if err != nil {
			return nil, nil, err
		}
		ports = append(ports, [2]int{p[0], p[1]})
		peers = append(peers, fmt.Sprintf("e%d=http://127.0.0.1:%d", i, p[1]))
		clients = append(clients, fmt.Sprintf("http://127.0.0.1:%d", p[0]))
	}
	var cmds []*exec.Cmd
	stop = func() {
		for _, c := range cmds {
			_ = c.Process.Signal(syscall.SIGTERM)
			_ = c.Wait()
		}
	}
	for i := range sc.members {
		c := exec.Command(bin, "--name", fmt.Sprintf("e%d", i), "--data-dir", filepath.Join(tmp, fmt.Sprintf("etcd%d", i)),
			"--listen-client-urls", clients[i], "--advertise-client-urls", clients[i],
			"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[i][1]),
			"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[i][1]),
			"--initial-cluster", strings.Join(peers, ","), "--initial-cluster-state", "new",
			"--log-level", "error")
		c.Args = append(c.Args, etcdShipped...)
		logf, err := os.Create(filepath.Join(tmp, fmt.Sprintf("etcd%d.log", i)))
		if err != nil {
			stop()
			return nil, nil, err
		}
		c.Stdout, c.Stderr = logf, logf
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			stop()
			return nil, nil, fmt.Errorf("start etcd: %w", err)
		}
		cmds = append(cmds, c)
	}
	return []string{"--store", "etcd", "--etcd-endpoints", strings.Join(clients, ","), "--etcd-prefix", "/bench"}, stop, nil
}

// etcdSettings describes the etcd the bench ran: its version and the
// settings that bound the broker's commits.
func etcdSettings(sc storeConfig) string {
	ver := "unknown version"
	if out, err := exec.Command(etcdBinary(sc), "--version").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(l, "etcd Version: "); ok {
				ver = "etcd " + v
			}
		}
	}
	return fmt.Sprintf("%s, %d members on loopback, fsync on; its defaults (--max-txn-ops 128, --max-request-bytes 1.5 MiB, "+
		"--quota-backend-bytes 2 GiB, --heartbeat-interval 100 ms, --election-timeout 1000 ms) and %s, as deploy/broker-etcd ships; "+
		"the broker's --etcd-max-txn-ops %d, --etcd-max-request-bytes %d (its defaults)",
		ver, sc.members, strings.Join(etcdShipped, " "), store.DefaultEtcdMaxTxnOps, store.DefaultEtcdMaxRequestBytes)
}

func etcdBinary(sc storeConfig) string {
	if sc.etcdBin != "" {
		return sc.etcdBin
	}
	dir := os.Getenv("KUBE_BIN_DIR")
	if dir == "" {
		dir = filepath.Join("_output", "k8s", "bin")
	}
	return filepath.Join(dir, "etcd")
}
