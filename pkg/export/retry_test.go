package export

import "testing"

// However long the broker is down (a publish failing every time), the next
// try of a key is at most MaxRetryDelay away, so an export made during the
// outage goes out within that of the broker's return.
func TestRetryDelayCapped(t *testing.T) {
	l := retryLimiter()
	for n := 1; n <= 40; n++ {
		if d := l.When("ns/svc"); d > MaxRetryDelay {
			t.Fatalf("failure %d: next try in %s; want at most %s", n, d, MaxRetryDelay)
		}
	}
	l.Forget("ns/svc")
	if d := l.When("ns/svc"); d > MaxRetryDelay/100 {
		t.Fatalf("after success the first retry waits %s", d)
	}
}
