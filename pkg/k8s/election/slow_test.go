package election

import (
	"testing"
	"time"
)

func TestHandOverForSlowness(t *testing.T) {
	cfg := Config{LeaseDuration: 3 * time.Second, RenewDeadline: 650 * time.Millisecond}
	for _, tt := range []struct {
		name         string
		failing      bool
		silent       time.Duration
		wantHandOver bool
	}{
		{"slow (a starved loop, a returning candidate starting beside it): hold", false, time.Second, false},
		{"slow until the Lease nears expiry", false, 2350 * time.Millisecond, true},
		{"renewals failing: holdable decides, not slowness", true, time.Second, false},
		{"renewals failing, long", true, 5 * time.Second, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := handOverForSlowness(tt.failing, tt.silent, cfg); got != tt.wantHandOver {
				t.Fatalf("handOverForSlowness = %v, want %v", got, tt.wantHandOver)
			}
		})
	}
}
