package diagnose

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Print writes findings for people: one line per check, its fix indented
// below when it did not pass, then a summary line.
func Print(w io.Writer, fs []Finding) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	counts := map[Result]int{}
	for _, f := range fs {
		counts[f.Result]++
		fmt.Fprintf(tw, "%s\t%s\t%s\n", strings.ToUpper(string(f.Result)), f.Check, f.Detail)
		if f.Fix != "" && f.Result != Pass {
			fmt.Fprintf(tw, "\t\t  fix: %s\n", f.Fix)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d checks: %d passed, %d warnings, %d failed, %d skipped\n",
		len(fs), counts[Pass], counts[Warn], counts[Fail], counts[Skip])
	return err
}
