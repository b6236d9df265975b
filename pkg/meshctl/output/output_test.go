package output

import (
	"bytes"
	"testing"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/internal/golden"
)

type row struct {
	Name  string   `json:"name"`
	CIDRs []string `json:"cidrs,omitempty"`
}

func TestPrint(t *testing.T) {
	obj := []row{{Name: "east", CIDRs: []string{"10.1.0.0/16"}}, {Name: "west-long-name"}}
	grid := Grid{Headers: []string{"NAME", "CIDRS"}, Rows: [][]string{{"east", "10.1.0.0/16"}, {"west-long-name", ""}}}
	for _, f := range Formats {
		t.Run(string(f), func(t *testing.T) {
			var b bytes.Buffer
			if err := Print(&b, f, obj, grid); err != nil {
				t.Fatal(err)
			}
			golden.Assert(t, "print."+string(f), b.Bytes())
		})
	}
}

func TestFormatSet(t *testing.T) {
	var f Format
	for _, ok := range []string{"table", "json", "yaml"} {
		if err := f.Set(ok); err != nil || string(f) != ok {
			t.Errorf("Set(%q) = %v, %q", ok, err, f)
		}
	}
	if err := f.Set("wide"); err == nil {
		t.Error("Set(wide) accepted")
	}
}
