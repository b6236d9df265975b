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
		lone         bool
		silent       time.Duration
		wantHandOver bool
	}{
		{"slow with other candidates: hand over", false, false, time.Second, true},
		{"slow and lone: hold", false, true, time.Second, false},
		{"slow and lone until the Lease nears expiry", false, true, 2350 * time.Millisecond, true},
		{"renewals failing: holdable decides, not slowness", true, false, time.Second, false},
		{"renewals failing and lone", true, true, 5 * time.Second, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := handOverForSlowness(tt.failing, tt.lone, tt.silent, cfg); got != tt.wantHandOver {
				t.Fatalf("handOverForSlowness = %v, want %v", got, tt.wantHandOver)
			}
		})
	}
}
