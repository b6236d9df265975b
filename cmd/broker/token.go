package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerpki"
)

// adminFlags locate a running broker and the admin credential; by default
// both come from the data directory of a broker on this host.
type adminFlags struct {
	dataDir, url, caFile, credFile string
}

func (f *adminFlags) register(cmd *cobra.Command) {
	p := cmd.PersistentFlags()
	p.StringVar(&f.dataDir, "data-dir", "", "broker data directory; supplies --ca-file and --credential-file defaults")
	p.StringVar(&f.url, "url", "https://127.0.0.1:8443", "broker URL")
	p.StringVar(&f.caFile, "ca-file", "", "CA certificate of the broker (default <data-dir>/ca.crt)")
	p.StringVar(&f.credFile, "credential-file", "", "admin credential (default <data-dir>/admin.token)")
}

func (f *adminFlags) client() (*brokerclient.Client, error) {
	ca, cred := f.caFile, f.credFile
	if f.dataDir != "" {
		if ca == "" {
			ca = filepath.Join(f.dataDir, brokerpki.FileCACert)
		}
		if cred == "" {
			cred = filepath.Join(f.dataDir, brokerpki.FileAdminToken)
		}
	}
	if ca == "" || cred == "" {
		return nil, fmt.Errorf("need --data-dir, or both --ca-file and --credential-file")
	}
	caPEM, err := os.ReadFile(ca)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	tok, err := os.ReadFile(cred)
	if err != nil {
		return nil, fmt.Errorf("read admin credential: %w", err)
	}
	return brokerclient.New(f.url, caPEM, strings.TrimSpace(string(tok)))
}

// run makes a cobra RunE that calls fn with an admin client and a context
// bounding the request.
func (f *adminFlags) run(fn func(ctx context.Context, c *brokerclient.Client, out io.Writer, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := f.client()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
		defer cancel()
		return fn(ctx, c, cmd.OutOrStdout(), args)
	}
}

func newToken() *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{Use: "token", Short: "Create, list and revoke join tokens (admin)"}
	af.register(cmd)

	var ttl time.Duration
	var desc string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a join token and print it (it is shown once)",
		Args:  cobra.NoArgs,
		RunE: af.run(func(ctx context.Context, c *brokerclient.Client, out io.Writer, _ []string) error {
			tok, err := c.CreateToken(ctx, ttl, desc)
			if err != nil {
				return fmt.Errorf("create token: %w", err)
			}
			fmt.Fprintln(out, tok)
			return nil
		}),
	}
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token may be used to join")
	create.Flags().StringVar(&desc, "description", "", "what the token is for")

	var output string
	list := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (secrets are never shown)",
		Args:  cobra.NoArgs,
		RunE: af.run(func(ctx context.Context, c *brokerclient.Client, out io.Writer, _ []string) error {
			toks, err := c.ListTokens(ctx)
			if err != nil {
				return fmt.Errorf("list tokens: %w", err)
			}
			switch output {
			case "json":
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(toks)
			case "table", "":
			default:
				return fmt.Errorf("-o %q: want table or json", output)
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tDESCRIPTION\tEXPIRES\tSTATE\tUSES")
			now := time.Now()
			for _, t := range toks {
				state := "valid"
				switch {
				case t.RevokedAt != nil:
					state = "revoked"
				case now.After(t.ExpiresAt):
					state = "expired"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\n", t.ID, t.Description, t.ExpiresAt.UTC().Format(time.RFC3339), state, t.Uses)
			}
			return w.Flush()
		}),
	}
	list.Flags().StringVarP(&output, "output", "o", "table", "table or json")

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join token; clusters that already joined keep their credentials",
		Args:  cobra.ExactArgs(1),
		RunE: af.run(func(ctx context.Context, c *brokerclient.Client, out io.Writer, args []string) error {
			if err := c.RevokeToken(ctx, args[0]); err != nil {
				return fmt.Errorf("revoke token %s: %w", args[0], err)
			}
			fmt.Fprintf(out, "token %s revoked\n", args[0])
			return nil
		}),
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
