package brokerdeploy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/broker"
	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerclient"
	"github.com/tunnelmesh/tunnelmesh/pkg/brokerpki"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
)

// LocalOptions configure Local.
type LocalOptions struct {
	// DataDir holds the broker's PKI and data; initialised when empty.
	DataDir string
	// Listen is the HTTPS address (default :8443).
	Listen string
	// BrokerURL is how clusters reach this host; default https://<listen
	// host, or the first --san, or 127.0.0.1>:<port>.
	BrokerURL string
	SANs      []string
	TokenTTL  time.Duration
	InfoFile  string
	Progress  *progress.Printer
	// Ready, if set, is called once the broker serves and the info file is written.
	Ready func(*Result)
}

// Local initialises (first time) and runs a broker in this process until
// ctx ends, writing a broker-info file with a new join token once it serves.
func Local(ctx context.Context, o LocalOptions) error {
	if o.DataDir == "" {
		return cli.Usage("pass --data-dir DIR", "--local needs a data directory")
	}
	if o.Listen == "" {
		o.Listen = ":8443"
	}
	opts := Options{TokenTTL: o.TokenTTL, InfoFile: o.InfoFile, Progress: o.Progress}
	opts.defaults()
	p := opts.Progress
	host, port, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return cli.Usage("pass --listen HOST:PORT", "invalid --listen %q", o.Listen)
	}
	if o.BrokerURL == "" {
		h := host
		if h == "" || h == "0.0.0.0" || h == "::" {
			h = "127.0.0.1"
			if len(o.SANs) > 0 {
				h = o.SANs[0]
			}
		}
		o.BrokerURL = "https://" + net.JoinHostPort(h, port)
	}
	u, err := url.Parse(o.BrokerURL)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return cli.Usage("pass --broker-url https://HOST:PORT", "invalid --broker-url %q", o.BrokerURL)
	}

	caPath := filepath.Join(o.DataDir, brokerpki.FileCACert)
	if _, err := os.Stat(caPath); err == nil {
		cert, err := os.ReadFile(filepath.Join(o.DataDir, brokerpki.FileServerCert))
		if err != nil {
			return err
		}
		if err := covers(cert, u.Hostname()); err != nil {
			return cli.Refused(err, "pass --broker-url with a host the certificate covers, or use a new --data-dir",
				"the broker in %s has no certificate for %s", o.DataDir, u.Hostname())
		}
		p.Info("Using the broker initialised in %s", o.DataDir)
	} else {
		err := p.Run("Initialising the broker in "+o.DataDir, func(*progress.Step) error {
			sans := append([]string{u.Hostname()}, o.SANs...)
			if host != "" && host != "0.0.0.0" && host != "::" {
				sans = append(sans, host)
			}
			_, err := broker.Init(broker.InitOptions{DataDir: o.DataDir, SANs: sans})
			return err
		})
		if err != nil {
			return err
		}
	}

	tlsConf, err := brokerpki.ServerTLS(o.DataDir)
	if err != nil {
		return err
	}
	st, err := store.OpenBolt(o.DataDir)
	if err != nil {
		return cli.Refused(err, "stop the other broker using this directory, or pass another --data-dir", "cannot open the broker's data")
	}
	defer st.Close()
	b, err := broker.New(broker.Config{Store: st})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		b.Close()
		return cli.Refused(err, "pass another --listen address", "cannot listen on %s", o.Listen)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- b.Serve(sctx, ln, tlsConf) }()

	ca, err := os.ReadFile(caPath)
	if err != nil {
		return err
	}
	tok, err := os.ReadFile(filepath.Join(o.DataDir, brokerpki.FileAdminToken))
	if err != nil {
		return err
	}
	admin, err := brokerclient.New(o.BrokerURL, ca, strings.TrimSpace(string(tok)))
	if err != nil {
		return err
	}
	res := &Result{ReusedPKI: true}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = p.Run("Waiting for the broker at "+o.BrokerURL, func(*progress.Step) error { return waitHealthy(wctx, admin, o.BrokerURL) })
	cancel()
	if err == nil {
		err = finish(ctx, p, admin, o.BrokerURL, ca, opts.TokenTTL, opts.InfoFile, res)
	}
	if err != nil {
		stop()
		<-served
		return err
	}
	p.Info("Broker serving at %s (data in %s); stop it with Ctrl-C", o.BrokerURL, o.DataDir)
	if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsLoopback() {
		p.Info("Note: clusters in containers or on other hosts cannot reach %s; run again with --broker-url https://HOST-IP:%s (with --san HOST-IP on a new --data-dir)", u.Hostname(), port)
	}
	if o.Ready != nil {
		o.Ready(res)
	}
	if err := <-served; err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("broker: %w", err)
	}
	return nil
}
