package nft

import (
	"net"
	"testing"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
)

// TestFence: datagrams from the fenced port leave only while allowed, and
// stop by themselves when the allowance runs out (no process needed); other
// ports are never touched.
func TestFence(t *testing.T) {
	testbed.RequireNetns(t)
	const port = 51899 + 100
	f, err := OpenFence(port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Remove() })
	rx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	send := func(from int) bool {
		t.Helper()
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: from}, rx.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write([]byte("x"))
		_ = rx.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, _, err = rx.ReadFromUDP(make([]byte, 8))
		return err == nil
	}
	if send(port) {
		t.Fatal("a closed fence let a datagram out")
	}
	if !send(port + 1) {
		t.Fatal("the fence stopped another port")
	}
	// 2 s: the allowance is an absolute time, and the commit, dial and send
	// below must fit in it on a loaded machine.
	until := time.Now().Add(2 * time.Second)
	if err := f.Allow(until); err != nil {
		t.Fatal(err)
	}
	if !send(port) {
		t.Fatal("an open fence dropped a datagram")
	}
	time.Sleep(time.Until(until) + 100*time.Millisecond)
	if send(port) {
		t.Fatal("the fence stayed open past the allowance")
	}
	if err := f.Allow(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := f.Allow(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if send(port) {
		t.Fatal("the fence stayed open after being closed")
	}
	// Deleted by someone else: built again on the next Allow.
	if err := DeleteTable(FenceTableName); err != nil {
		t.Fatal(err)
	}
	if err := f.Allow(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if !send(port) {
		t.Fatal("a rebuilt fence did not open")
	}
}
