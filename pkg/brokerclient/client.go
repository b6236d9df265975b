// Package brokerclient is the Go client of the tunnelmesh broker, used by
// the gateway, meshctl and the tests. Errors the broker returns decode into
// *api.Error, so errors.As(err, &apiErr) tells them apart.
package brokerclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

// Client talks to a broker (or to several replicas of one, failing over
// between them) with one credential (admin or cluster).
type Client struct {
	bases []string
	// cur is the index in bases of the replica in use; a failed call or
	// watch moves it to the next.
	cur    atomic.Int32
	cred   string
	hc     *http.Client // unary requests
	stream *http.Client // watches: no overall timeout
	// Logger receives watch reconnect notices; nil means slog.Default().
	Logger *slog.Logger
	// WatchIdleTimeout drops a watch stream that has been silent this long
	// (the broker sends bookmarks every 10 s by default) and reconnects.
	WatchIdleTimeout time.Duration
}

// ParseURLs reads a broker URL, or a comma-separated list of the URLs of
// one broker's replicas (https://host:port; a bare host:port gets
// https://), as broker-info files and the broker Secret carry them.
func ParseURLs(rawURLs string) ([]string, error) {
	var out []string
	for _, raw := range strings.Split(rawURLs, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		if !strings.Contains(raw, "://") {
			raw = "https://" + raw
		}
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("broker URL %q: %w", raw, err)
		}
		if u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("broker URL %q: want https://host:port", raw)
		}
		if b := strings.TrimRight(u.String(), "/"); !slices.Contains(out, b) {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no broker URL in %q: want https://host:port, or several comma-separated", rawURLs)
	}
	return out, nil
}

// New returns a client for the broker at rawURL (see ParseURLs; several
// URLs are replicas of one broker, tried in turn when one fails). caPEM is
// the broker's CA; nil uses the system roots. credential is the admin or
// cluster credential; it may be empty for a client that only joins (Join
// then adopts the returned credential).
func New(rawURL string, caPEM []byte, credential string) (*Client, error) {
	bases, err := ParseURLs(rawURL)
	if err != nil {
		return nil, err
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("broker CA: no PEM certificate found")
		}
		tlsConf.RootCAs = pool
	}
	newTransport := func(http2 bool) *http.Transport {
		p := new(http.Protocols)
		p.SetHTTP1(true)
		p.SetHTTP2(http2)
		return &http.Transport{
			Proxy: nil, // the broker is reached directly
			// A connect that has not completed in 3 s is given up and tried
			// afresh (a new port): one lost SYN costs a second or more, and
			// a broker back from an outage is to be felt within seconds.
			DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:     tlsConf.Clone(),
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
			Protocols:           p,
		}
	}
	return &Client{
		bases: bases,
		cred:  strings.TrimSpace(credential),
		hc:    &http.Client{Transport: newTransport(true), Timeout: 30 * time.Second},
		// A watch is one long response on its own connection; HTTP/1.1
		// costs both ends less per flushed change than HTTP/2 framing.
		stream:           &http.Client{Transport: newTransport(false)},
		WatchIdleTimeout: 45 * time.Second,
	}, nil
}

// Credential returns the credential the client sends.
func (c *Client) Credential() string { return c.cred }

func (c *Client) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// base is the URL of the replica in use.
func (c *Client) base() string { return c.bases[int(c.cur.Load())%len(c.bases)] }

// failover moves to the next replica, unless another call already did
// since from was read.
func (c *Client) failover(from int32) {
	if len(c.bases) > 1 {
		c.cur.CompareAndSwap(from, (from+1)%int32(len(c.bases)))
	}
}

// callAttempts bounds the attempts of one call; retryPause is the pause
// before an attempt on a replica this call already tried (doubling).
const (
	callAttempts = 4
	retryPause   = 250 * time.Millisecond
)

// call sends one request and decodes a JSON answer into out (if not nil).
// While the broker cannot be reached, is shutting down, or did not confirm
// a write, it tries again: on the next replica at once, on one already
// tried after a pause, callAttempts times at most and within ctx. Every
// attempt of a write carries the same Idempotency-Key, so a write that was
// made but whose answer was lost is not made twice: its retry gets the
// answer the write got (a join, its credential).
func (c *Client) call(ctx context.Context, method, path, cred string, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = b
	}
	key := ""
	if method != http.MethodGet {
		key = newIdempotencyKey()
	}
	var err error
	pause, start := retryPause, time.Now()
	for attempt := 1; ; attempt++ {
		from := c.cur.Load()
		var retry bool
		retry, err = c.callOnce(ctx, method, path, cred, key, body, out)
		// A replica that hangs costs the client's timeout per attempt:
		// past one timeout in all, the caller hears of it. A write whose
		// outcome is unknown is asked again until it is known (within
		// that time): a join's answer is its credential.
		var ae *api.Error
		unknown := errors.As(err, &ae) && ae.Code == api.CodeOutcomeUnknown
		if !retry || ctx.Err() != nil || attempt >= max(callAttempts, len(c.bases)) && !unknown || time.Since(start) > c.hc.Timeout {
			return err
		}
		if len(c.bases) > 1 {
			c.logger().Warn("broker replica failed; trying the next", "url", c.base(), "err", err)
		}
		c.failover(from)
		if attempt >= len(c.bases) { // every replica tried once: pause
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return err
			case <-t.C:
			}
			pause = min(2*pause, 2*time.Second)
		}
	}
}

// newIdempotencyKey is 256 random bits, base64url.
func newIdempotencyKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// callOnce sends one attempt; retry says whether another may succeed.
func (c *Client) callOnce(ctx context.Context, method, path, cred, key string, body []byte, out any) (retry bool, _ error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base()+path, rd)
	if err != nil {
		return false, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	if key != "" {
		req.Header.Set(api.HeaderIdempotencyKey, key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// Not reached, or no answer: safe to send again, a write too.
		return true, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		// 503: the replica is shutting down or not ready (nothing was
		// written), or did not learn in time whether the write was made
		// (OutcomeUnknown): the retry, with the same key, tells.
		return resp.StatusCode == http.StatusServiceUnavailable, decodeError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return false, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return false, fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return false, nil
}

// decodeError turns a non-2xx response into *api.Error.
func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var ae api.Error
	if err := json.Unmarshal(b, &ae); err == nil && ae.Code != "" {
		return &ae
	}
	return &api.Error{Code: fmt.Sprintf("HTTP%d", resp.StatusCode),
		Message: fmt.Sprintf("broker answered %s: %s", resp.Status, strings.TrimSpace(string(b)))}
}

func esc(s string) string { return url.PathEscape(s) }

// Join creates the cluster with a join token and returns its credential.
// A client made without a credential adopts the returned one.
func (c *Client) Join(ctx context.Context, joinToken string, req api.JoinRequest) (*api.JoinResponse, error) {
	var resp api.JoinResponse
	if err := c.call(ctx, http.MethodPost, "/v1/join", strings.TrimSpace(joinToken), req, &resp); err != nil {
		return nil, err
	}
	if c.cred == "" {
		c.cred = resp.Credential
	}
	return &resp, nil
}

// CreateToken makes a join token valid for ttl (admin). ttl 0 means 24 h.
func (c *Client) CreateToken(ctx context.Context, ttl time.Duration, description string) (string, error) {
	resp, err := c.CreateTokenInfo(ctx, ttl, description)
	if err != nil {
		return "", err
	}
	return resp.Token, nil
}

// CreateTokenInfo is CreateToken that also returns the token's ID and expiry.
func (c *Client) CreateTokenInfo(ctx context.Context, ttl time.Duration, description string) (*api.CreateTokenResponse, error) {
	secs := int64(ttl / time.Second)
	if ttl > 0 && secs == 0 {
		secs = 1
	}
	var resp api.CreateTokenResponse
	err := c.call(ctx, http.MethodPost, "/v1/tokens", c.cred,
		api.CreateTokenRequest{TTLSeconds: secs, Description: description}, &resp)
	if err != nil {
		return nil, err
	}
	return &resp, nil
}

// ListTokens lists every join token, revoked and expired ones included (admin).
func (c *Client) ListTokens(ctx context.Context) ([]api.TokenInfo, error) {
	var out []api.TokenInfo
	if err := c.call(ctx, http.MethodGet, "/v1/tokens", c.cred, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// RevokeToken revokes a join token by ID (admin). Revoking twice is fine.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, "/v1/tokens/"+esc(id), c.cred, nil, nil)
}

// Policy reads the clusterset's policy (what members may claim) and the
// members outside it (admin or any member).
func (c *Client) Policy(ctx context.Context) (*api.PolicyStatus, error) {
	var out api.PolicyStatus
	if err := c.call(ctx, http.MethodGet, "/v1/policy", c.cred, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetPolicy replaces the clusterset's policy (admin). It governs joins from
// then on; members outside it are listed in the answer, not removed.
func (c *Client) SetPolicy(ctx context.Context, p api.Policy) (*api.PolicyStatus, error) {
	var out api.PolicyStatus
	if err := c.call(ctx, http.MethodPut, "/v1/policy", c.cred, p, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RemoveCluster removes a cluster with its gateways, exports and
// credential (admin, or the cluster itself).
func (c *Client) RemoveCluster(ctx context.Context, clusterID string) error {
	return c.call(ctx, http.MethodDelete, "/v1/clusters/"+esc(clusterID), c.cred, nil, nil)
}

// Translate gives a member's real CIDRs (all when none is named) mapped
// CIDRs, live (admin); it returns the member's record.
func (c *Client) Translate(ctx context.Context, clusterID string, cidrs []string) (*api.Cluster, error) {
	var out api.Cluster
	if err := c.call(ctx, http.MethodPost, "/v1/clusters/"+esc(clusterID)+"/translations", c.cred,
		api.TranslateRequest{CIDRs: cidrs}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RegisterGateway creates or replaces a gateway endpoint of the client's
// cluster. The broker sets ObservedIP and Stale. An active registration
// with an epoch older than the cluster's active gateway's is refused (409).
func (c *Client) RegisterGateway(ctx context.Context, gw api.Gateway) error {
	return c.call(ctx, http.MethodPut,
		"/v1/clusters/"+esc(gw.ClusterID)+"/gateways/"+esc(gw.Hostname), c.cred, gw, nil)
}

// Heartbeat proves a registered gateway alive and reports its peer health
// (read back with Status). It makes no revision and no watch event.
func (c *Client) Heartbeat(ctx context.Context, clusterID, hostname string, health []api.PeerHealth) error {
	return c.call(ctx, http.MethodPost,
		"/v1/clusters/"+esc(clusterID)+"/gateways/"+esc(hostname)+"/heartbeat", c.cred,
		api.HeartbeatRequest{Health: health}, nil)
}

// DeleteGateway removes a gateway endpoint; deleting a missing one is fine.
func (c *Client) DeleteGateway(ctx context.Context, clusterID, hostname string) error {
	return c.call(ctx, http.MethodDelete,
		"/v1/clusters/"+esc(clusterID)+"/gateways/"+esc(hostname), c.cred, nil, nil)
}

// PublishExport creates or replaces an export. Publishing an unchanged
// export is a no-op.
func (c *Client) PublishExport(ctx context.Context, e api.Export) error {
	return c.call(ctx, http.MethodPut,
		"/v1/clusters/"+esc(e.ClusterID)+"/exports/"+esc(e.Namespace)+"/"+esc(e.Name), c.cred, e, nil)
}

// WithdrawExport removes an export; withdrawing a missing one is fine.
func (c *Client) WithdrawExport(ctx context.Context, clusterID, namespace, name string) error {
	return c.call(ctx, http.MethodDelete,
		"/v1/clusters/"+esc(clusterID)+"/exports/"+esc(namespace)+"/"+esc(name), c.cred, nil, nil)
}

// Snapshot returns the broker's whole state.
func (c *Client) Snapshot(ctx context.Context) (*api.Snapshot, error) {
	var s api.Snapshot
	if err := c.call(ctx, http.MethodGet, "/v1/snapshot", c.cred, nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Healthy asks /readyz.
func (c *Client) Healthy(ctx context.Context) error {
	return c.call(ctx, http.MethodGet, "/readyz", "", nil, nil)
}

// Status returns the liveness and per-peer health the gateways report with
// their heartbeats: every cluster's for the admin, the own cluster's for a
// cluster credential. Heartbeats are not part of the watched state.
func (c *Client) Status(ctx context.Context) ([]api.GatewayStatus, error) {
	var out []api.GatewayStatus
	if err := c.call(ctx, http.MethodGet, "/v1/status", c.cred, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Backup writes a consistent copy of the broker's store to w (admin): a
// bbolt file that `broker restore` puts back.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base()+"/v1/backup", nil)
	if err != nil {
		return 0, err
	}
	if c.cred != "" {
		req.Header.Set("Authorization", "Bearer "+c.cred)
	}
	resp, err := c.stream.Do(req) // no overall timeout: a store can be large
	if err != nil {
		return 0, fmt.Errorf("GET /v1/backup: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, decodeError(resp)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("GET /v1/backup: read: %w", err)
	}
	return n, nil
}

// ClusterSet reads what every member shares (the gossip key), with a
// cluster's or the admin credential.
func (c *Client) ClusterSet(ctx context.Context) (api.ClusterSet, error) {
	var out api.ClusterSet
	err := c.call(ctx, http.MethodGet, "/v1/clusterset", c.cred, nil, &out)
	return out, err
}
