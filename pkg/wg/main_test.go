package wg

import (
	"os"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/testbed"
)

// Device tests run in a network namespace of their own (root only).
func TestMain(m *testing.M) { os.Exit(testbed.MainInNetns(m)) }
