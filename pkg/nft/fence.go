package nft

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// FenceTableName is the nftables table (family inet) of a gateway
// candidate's fence.
const FenceTableName = "tunnelmesh-fence"

const fenceSet = "live"

// Fence keeps this node's WireGuard port from sending anything unless its
// holder said, before, that it may until a time not yet past: an output
// rule drops UDP from the port unless the port is in a set whose element
// times out in the kernel. A candidate that stopped running — frozen
// (docker pause, SIGSTOP), starved, or killed with its kernel device left
// behind — falls silent on the tunnel by itself when its entitlement runs
// out, and on waking it sends nothing until its election loop has run and
// allowed it again; its first packets would otherwise make the remote
// gateways roam their endpoint to it, away from the new active.
type Fence struct {
	port uint16
	mu   sync.Mutex
	set  *nftables.Set
}

// OpenFence builds the fence closed: the table is replaced in one batch.
func OpenFence(port int) (*Fence, error) {
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("fence: port %d out of range", port)
	}
	f := &Fence{port: uint16(port)}
	if err := f.build(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Fence) build() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	tb := &nftables.Table{Name: FenceTableName, Family: nftables.TableFamilyINet}
	c.AddTable(tb)
	c.DelTable(tb)
	c.AddTable(tb)
	s := &nftables.Set{Table: tb, Name: fenceSet, KeyType: nftables.TypeInetService, HasTimeout: true}
	if err := c.AddSet(s, nil); err != nil {
		return fmt.Errorf("nftables set %s: %w", fenceSet, err)
	}
	accept := nftables.ChainPolicyAccept
	out := c.AddChain(&nftables.Chain{Name: "output", Table: tb, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	// meta l4proto udp udp sport PORT udp sport != @live counter drop
	c.AddRule(&nftables.Rule{Table: tb, Chain: out, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: portKey(f.port)},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: true},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("apply nftables table %s: %w", FenceTableName, err)
	}
	f.set = s
	return nil
}

// Allow lets the port send until until (the zero time or a past one: not
// at all) — in one batch, so the fence never opens wider than asked. A
// table someone deleted is built again.
func (f *Fence) Allow(until time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.allow(until)
	if err != nil {
		if berr := f.build(); berr == nil {
			err = f.allow(until)
		}
	}
	return err
}

func (f *Fence) allow(until time.Time) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	c.FlushSet(f.set)
	if d := time.Until(until); !until.IsZero() && d >= time.Millisecond {
		if err := c.SetAddElements(f.set, []nftables.SetElement{{Key: portKey(f.port), Timeout: d}}); err != nil {
			return fmt.Errorf("fence: %w", err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("update nftables fence %s: %w", FenceTableName, err)
	}
	return nil
}

// Remove deletes the fence (a graceful stop: nothing is left to send).
func (f *Fence) Remove() error { return DeleteTable(FenceTableName) }

func portKey(p uint16) []byte {
	b := make([]byte, 2)
	binary.BigEndian.PutUint16(b, p)
	return b
}
