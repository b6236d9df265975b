// Package output prints what a show command found as a table, JSON or YAML.
// Tables are for people; JSON and YAML carry the full objects for scripts.
package output

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
)

// Format is an output format.
type Format string

// Formats.
const (
	Table Format = "table"
	JSON  Format = "json"
	YAML  Format = "yaml"
)

// Formats lists the accepted values of -o.
var Formats = []Format{Table, JSON, YAML}

// String, Set and Type make Format a pflag.Value.
func (f *Format) String() string { return string(*f) }

// Set validates the value of -o.
func (f *Format) Set(s string) error {
	for _, v := range Formats {
		if Format(s) == v {
			*f = v
			return nil
		}
	}
	return fmt.Errorf("unknown output format %q: want table, json or yaml", s)
}

// Type names the flag's value in help.
func (f *Format) Type() string { return "format" }

// AddFlag registers -o/--output on cmd, table by default, with completion.
func AddFlag(cmd *cobra.Command, f *Format) {
	*f = Table
	cmd.Flags().VarP(f, "output", "o", "output format: table, json or yaml")
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp
	})
}

// Grid is what a table shows: headers and rows of cells, and notes
// printed under the table.
type Grid struct {
	Headers []string
	Rows    [][]string
	Notes   []string
}

// Print writes obj as JSON or YAML, or grid as a table.
func Print(w io.Writer, f Format, obj any, grid Grid) error {
	switch f {
	case JSON:
		b, err := json.MarshalIndent(obj, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case YAML:
		b, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	case Table, "":
		return PrintTable(w, grid)
	}
	return cli.Usage("pass -o table, -o json or -o yaml", "unknown output format %q", f)
}

// PrintTable aligns grid in columns, kubectl's way (three spaces apart,
// upper-case headers, "<none>" for empty cells).
func PrintTable(w io.Writer, g Grid) error {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(g.Headers, "\t"))
	for _, r := range g.Rows {
		cells := make([]string, len(r))
		for i, c := range r {
			if c == "" {
				c = "<none>"
			}
			cells[i] = c
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for i, n := range g.Notes {
		if i == 0 {
			n = "\n" + n
		}
		if _, err := fmt.Fprintln(w, n); err != nil {
			return err
		}
	}
	return nil
}
