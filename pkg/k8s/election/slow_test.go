package election

import (
	"strings"
	"testing"
	"time"
)

// TestActUntil: how long a holder whose renewals are late or failing may
// act (and keeps the role) outside an outage. Pure: memberlist's view is
// set by hand.
func TestActUntil(t *testing.T) {
	cfg := Config{LeaseDuration: 3 * time.Second, RenewDeadline: 650 * time.Millisecond}
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	const held, renewed = 0, 1000 // tenure began at 0 ms, last renewal at 1000 ms
	nearExpiry := at(renewed + 2350)
	// other is another candidate: alive, its last ping answer, its join
	// and when it left (ms; -1: none).
	type other struct {
		alive               bool
		acked, joined, left int
	}
	for _, tt := range []struct {
		name string
		// other candidates: alive, last ping answer, joined, left (ms; -1 none)
		others  []other
		want    time.Time
		wantWhy string
	}{
		{"lone: until the Lease nears expiry", nil, nearExpiry, "the Lease nears expiry"},
		{"a live standby answering pings: RenewDeadline after its last answer",
			[]other{{true, 1500, 100, -1}}, at(2150), `candidate "x0" answered no ping`},
		{"a live standby that stopped answering: the renewal's deadline",
			[]other{{true, 200, 100, -1}}, at(renewed + 650), "the renew deadline passed"},
		{"a live standby answering all along: capped where the Lease nears expiry",
			[]other{{true, 3200, 100, -1}}, nearExpiry, "the Lease nears expiry"},
		{"the crashed holder this one replaced (gone before the tenure): no bound",
			[]other{{false, -1, -1, -300}}, nearExpiry, "the Lease nears expiry"},
		{"a standby that left during the tenure may have declared it dead: the renewal's deadline",
			[]other{{false, 900, 100, 1200}}, at(renewed + 650), "the renew deadline passed"},
		{"one live, one gone before the tenure: the live one bounds",
			[]other{{true, 1800, 100, -1}, {false, -1, -1, -50}}, at(2450), `candidate "x0" answered no ping`},
		{"just rejoined, no ping answered yet: its join counts as contact",
			[]other{{true, -1, 1600, -1}}, at(2250), `candidate "x0" answered no ping`},
		{"back after leaving during the tenure, answering only since: its join does not count (it may still hold this one dead)",
			[]other{{true, 1500, 1400, 1200}}, at(renewed + 650), "the renew deadline passed"},
		{"back after leaving during the tenure, answering a renew deadline after its return: counts",
			[]other{{true, 2200, 1400, 1200}}, at(2850), `candidate "x0" answered no ping`},
		{"gone before the tenure and back: its join counts",
			[]other{{true, -1, 1600, -300}}, at(2250), `candidate "x0" answered no ping`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := &members{name: "me", state: map[string]bool{"me": true}, deadAt: map[string]time.Time{}, acked: map[string]time.Time{}, joined: map[string]time.Time{}}
			for i, o := range tt.others {
				n := "x" + string(rune('0'+i))
				m.state[n] = o.alive
				if o.acked >= 0 {
					m.acked[n] = at(o.acked)
				}
				if o.joined >= 0 {
					m.joined[n] = at(o.joined)
				}
				if o.left != -1 {
					m.deadAt[n] = at(o.left)
				}
			}
			e := &Elector{cfg: cfg, members: m, heldSince: at(held), lastRenew: at(renewed)}
			got, why := e.actUntil()
			if !got.Equal(tt.want) || !strings.Contains(why, tt.wantWhy) {
				t.Fatalf("actUntil = %v (%q), want %v (%q)", got.Sub(t0), why, tt.want.Sub(t0), tt.wantWhy)
			}
		})
	}
}
