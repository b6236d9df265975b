package brokerclient

import (
	"testing"
	"time"
)

// A broker back from an outage is felt within reconnectMax: however long
// the outage, no wait between two reconnect attempts exceeds it (it grew
// to 30 s, so a returning broker was felt up to 30 s late).
func TestReconnectWaitCapped(t *testing.T) {
	backoff := reconnectMin
	var total time.Duration
	for attempt := 1; attempt <= 200; attempt++ {
		var wait time.Duration
		wait, backoff = reconnectWait(backoff)
		if wait > reconnectMax || wait <= 0 {
			t.Fatalf("attempt %d waits %s; want (0, %s]", attempt, wait, reconnectMax)
		}
		total += wait
	}
	// Jittered, and not a storm: 200 attempts span more than 100 s.
	if total < 100*time.Second {
		t.Fatalf("200 attempts within %s: the backoff does not grow", total)
	}
}
