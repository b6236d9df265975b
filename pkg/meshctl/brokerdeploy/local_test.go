package brokerdeploy

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/access"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/testenv"
)

// runLocal runs Local until Ready, then returns the result and a stop func.
func runLocal(t *testing.T, o LocalOptions) (*Result, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *Result, 1)
	o.Ready = func(r *Result) { ready <- r }
	done := make(chan error, 1)
	go func() { done <- Local(ctx, o) }()
	select {
	case r := <-ready:
		var once sync.Once
		var serr error
		stop := func() error { once.Do(func() { cancel(); serr = <-done }); return serr }
		t.Cleanup(func() { _ = stop() })
		return r, stop
	case err := <-done:
		cancel()
		t.Fatalf("local broker: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("local broker not ready")
	}
	return nil, nil
}

func TestLocal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	info := filepath.Join(t.TempDir(), "info.json")
	addr := testenv.FreeAddr(t)
	r1, stop := runLocal(t, LocalOptions{DataDir: dir, Listen: addr, InfoFile: info})
	got, err := access.ReadInfo(info)
	if err != nil || *got != r1.Info || got.URL != "https://"+addr {
		t.Fatalf("info file: %v %+v", err, got)
	}
	bc, _ := brokerclient.New(got.URL, []byte(got.CA), "")
	if _, err := bc.Join(t.Context(), got.JoinToken, api.JoinRequest{ClusterID: "a", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.96.1.0/24"}}); err != nil {
		t.Fatalf("join: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Again on the same data: same CA, a new token, the member kept.
	r2, _ := runLocal(t, LocalOptions{DataDir: dir, Listen: addr, InfoFile: info})
	if r2.Info.CA != r1.Info.CA || r2.Info.JoinToken == r1.Info.JoinToken {
		t.Error("second run changed the CA or kept the token")
	}
	// A URL the existing certificate does not cover is refused.
	err = Local(t.Context(), LocalOptions{DataDir: dir, Listen: "127.0.0.1:0", BrokerURL: "https://192.0.2.1:8443", InfoFile: info})
	var ce *cli.Error
	if !errors.As(err, &ce) || ce.Code != cli.ExitRefused {
		t.Fatalf("uncovered URL: %v", err)
	}
}
