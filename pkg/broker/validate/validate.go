// Package validate checks broker requests. Every function is pure and
// returns an *api.Error naming the offending field, or nil.
package validate

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

func invalid(field, format string, args ...any) *api.Error {
	return &api.Error{Code: api.CodeInvalid, Field: field, Message: field + ": " + fmt.Sprintf(format, args...)}
}

// ClusterID checks an RFC 1123 label: it is one DNS label of
// <host>.<clusterid>.<svc>.<ns>.svc.clusterset.local.
func ClusterID(field, id string) *api.Error {
	if id == "" {
		return invalid(field, "required")
	}
	if errs := isDNS1123Label(id); len(errs) > 0 {
		return invalid(field, "%q is not a valid cluster ID (RFC 1123 label): %s", id, strings.Join(errs, "; "))
	}
	return nil
}

// CIDRs parses a list of canonical CIDRs.
func CIDRs(field string, in []string, required bool) ([]netip.Prefix, *api.Error) {
	if len(in) == 0 && required {
		return nil, invalid(field, "at least one CIDR is required")
	}
	if len(in) > api.MaxCIDRs {
		return nil, invalid(field, "at most %d CIDRs", api.MaxCIDRs)
	}
	out := make([]netip.Prefix, 0, len(in))
	for i, s := range in {
		f := fmt.Sprintf("%s[%d]", field, i)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, invalid(f, "%q is not a CIDR: %v", s, err)
		}
		if p.Masked() != p {
			return nil, invalid(f, "%q has host bits set; did you mean %s?", s, p.Masked())
		}
		if err := routableCIDR(f, s, p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Overlaps reports whether two prefixes share any address.
func Overlaps(a, b netip.Prefix) bool { return a.Overlaps(b) }

// Labels checks Kubernetes-style labels.
func Labels(field string, m map[string]string) *api.Error {
	if len(m) > api.MaxLabels {
		return invalid(field, "at most %d entries", api.MaxLabels)
	}
	for k, v := range m {
		if errs := isQualifiedName(k); len(errs) > 0 {
			return invalid(field, "key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := isValidLabelValue(v); len(errs) > 0 {
			return invalid(field+"."+k, "value %q: %s", v, strings.Join(errs, "; "))
		}
	}
	return nil
}

// Annotations checks Kubernetes-style annotations (free-form values, bounded).
func Annotations(field string, m map[string]string) *api.Error {
	if len(m) > api.MaxLabels {
		return invalid(field, "at most %d entries", api.MaxLabels)
	}
	total := 0
	for k, v := range m {
		if errs := isQualifiedName(k); len(errs) > 0 {
			return invalid(field, "key %q: %s", k, strings.Join(errs, "; "))
		}
		total += len(k) + len(v)
	}
	if total > 64*1024 {
		return invalid(field, "total size %d exceeds 64 KiB", total)
	}
	return nil
}

// JoinRequest checks a join's own fields; overlaps with other clusters are
// the broker's job since they need the whole state.
func JoinRequest(r *api.JoinRequest) ([]netip.Prefix, *api.Error) {
	if err := ClusterID("clusterID", r.ClusterID); err != nil {
		return nil, err
	}
	pods, err := CIDRs("podCIDRs", r.PodCIDRs, true)
	if err != nil {
		return nil, err
	}
	svcs, err := CIDRs("serviceCIDRs", r.ServiceCIDRs, true)
	if err != nil {
		return nil, err
	}
	all := append(append([]netip.Prefix{}, pods...), svcs...)
	names := append(append([]string{}, r.PodCIDRs...), r.ServiceCIDRs...)
	for i := range all {
		for j := i + 1; j < len(all); j++ {
			if all[i].Overlaps(all[j]) {
				return nil, &api.Error{Code: api.CodeCIDROverlap, Field: fieldOf(i, len(pods)),
					Message: fmt.Sprintf("CIDR %s overlaps %s of the same cluster", names[i], names[j])}
			}
		}
	}
	if err := Labels("labels", r.Labels); err != nil {
		return nil, err
	}
	return all, nil
}

// TranslateRequest checks the admin's translate call: at most as many
// CIDRs as a cluster has, each a CIDR (the rule checks they are the
// cluster's).
func TranslateRequest(r *api.TranslateRequest) *api.Error {
	if len(r.CIDRs) > 2*api.MaxCIDRs {
		return invalid("cidrs", "at most %d CIDRs", 2*api.MaxCIDRs)
	}
	for i, s := range r.CIDRs {
		if _, err := netip.ParsePrefix(s); err != nil {
			return invalid(fmt.Sprintf("cidrs[%d]", i), "%q is not a CIDR: %v", s, err)
		}
	}
	return nil
}

func fieldOf(i, nPods int) string {
	if i < nPods {
		return fmt.Sprintf("podCIDRs[%d]", i)
	}
	return fmt.Sprintf("serviceCIDRs[%d]", i-nPods)
}

// WireGuardKey checks a base64 Curve25519 public key.
func WireGuardKey(field, k string) *api.Error {
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil || len(b) != 32 {
		return invalid(field, "must be a base64-encoded 32-byte WireGuard public key")
	}
	// The all-zero key is what an unset key encodes to; no peer can
	// complete a handshake with it.
	if [32]byte(b) == [32]byte{} {
		return invalid(field, "is the all-zero key; send the gateway's real WireGuard public key (wg pubkey)")
	}
	return nil
}

// ip checks an optional or required IP address (see addr).
func ip(field, s string, required bool) *api.Error {
	if s == "" {
		if required {
			return invalid(field, "required")
		}
		return nil
	}
	_, err := addr(field, s)
	return err
}

// hostIP checks a gateway address other gateways will send to: it may not
// be the unspecified address.
func hostIP(field, s string, required bool) *api.Error {
	if err := ip(field, s, required); err != nil || s == "" {
		return err
	}
	if a, _ := netip.ParseAddr(s); a.IsUnspecified() {
		return invalid(field, "%q is the unspecified address; give the address peers reach this gateway on", s)
	}
	return nil
}

// Health checks a gateway's per-peer health report.
func Health(field string, hs []api.PeerHealth) *api.Error {
	if len(hs) > api.MaxHealth {
		return invalid(field, "at most %d entries", api.MaxHealth)
	}
	for i, h := range hs {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := ClusterID(f+".cluster", h.Cluster); err != nil {
			return err
		}
		switch h.Status {
		case api.StatusConnecting, api.StatusConnected, api.StatusError:
		default:
			return invalid(f+".status", "%q is not one of connecting, connected, error", h.Status)
		}
		if h.PeerEndpoint != "" {
			if _, err := netip.ParseAddrPort(h.PeerEndpoint); err != nil {
				return invalid(f+".peerEndpoint", "%q is not ADDRESS:PORT", h.PeerEndpoint)
			}
		}
		if len(h.Reason) > api.MaxText {
			return invalid(f+".reason", "longer than %d bytes", api.MaxText)
		}
		if h.RTTMillis < 0 || h.LossPercent < 0 || h.LossPercent > 100 || h.RxBytes < 0 || h.TxBytes < 0 ||
			h.PathMTU < 0 || h.PathMTU > 65535 || h.PathMTULost < 0 || h.PathMTULost > 65535 {
			return invalid(f, "negative or out-of-range figures")
		}
	}
	return nil
}

// Gateway checks a gateway registration.
func Gateway(g *api.Gateway) *api.Error {
	if err := ClusterID("clusterID", g.ClusterID); err != nil {
		return err
	}
	if g.Hostname == "" {
		return invalid("hostname", "required")
	}
	if errs := isDNS1123Subdomain(g.Hostname); len(errs) > 0 {
		return invalid("hostname", "%q: %s", g.Hostname, strings.Join(errs, "; "))
	}
	if err := hostIP("publicIP", g.PublicIP, false); err != nil {
		return err
	}
	if err := hostIP("privateIP", g.PrivateIP, true); err != nil {
		return err
	}
	if g.Port < 1 || g.Port > 65535 {
		return invalid("port", "%d is not a UDP port (1-65535)", g.Port)
	}
	return WireGuardKey("publicKey", g.PublicKey)
}

// Export checks one exported service.
func Export(e *api.Export) *api.Error {
	if err := ClusterID("clusterID", e.ClusterID); err != nil {
		return err
	}
	if errs := isDNS1123Label(e.Namespace); len(errs) > 0 {
		return invalid("namespace", "%q: %s", e.Namespace, strings.Join(errs, "; "))
	}
	if errs := isDNS1035Label(e.Name); len(errs) > 0 {
		return invalid("name", "%q: %s", e.Name, strings.Join(errs, "; "))
	}
	switch e.Type {
	case api.TypeClusterSetIP, api.TypeHeadless:
	default:
		return invalid("type", "%q is not ClusterSetIP or Headless", e.Type)
	}
	if err := ports("ports", e.Ports, true); err != nil {
		return err
	}
	if len(e.IPs) > api.MaxIPs {
		return invalid("ips", "at most one IP per family")
	}
	var ipFams []string
	for i, s := range e.IPs {
		f := fmt.Sprintf("ips[%d]", i)
		a, err := reachableAddr(f, s)
		if err != nil {
			return err
		}
		for j, other := range ipFams {
			if other == family(a) {
				return invalid(f, "%q is a second %s address (ips[%d] is one); give at most one IP per family", s, other, j)
			}
		}
		ipFams = append(ipFams, family(a))
	}
	if len(e.IPFamilies) > 2 {
		return invalid("ipFamilies", "at most 2 families")
	}
	for i, f := range e.IPFamilies {
		if f != "IPv4" && f != "IPv6" {
			return invalid(fmt.Sprintf("ipFamilies[%d]", i), "%q is not IPv4 or IPv6", f)
		}
		if i == 1 && f == e.IPFamilies[0] {
			return invalid("ipFamilies[1]", "%q is listed twice", f)
		}
	}
	// KEP-1645: ips are one per family, in the order of ipFamilies.
	if len(ipFams) > 0 && len(e.IPFamilies) > 0 {
		if len(ipFams) != len(e.IPFamilies) {
			return invalid("ips", "%d IPs for %d ipFamilies; give one IP per family, in the order of ipFamilies", len(ipFams), len(e.IPFamilies))
		}
		for i := range ipFams {
			if ipFams[i] != e.IPFamilies[i] {
				return invalid(fmt.Sprintf("ips[%d]", i), "%q is %s but ipFamilies[%d] is %s; give the IPs in the order of ipFamilies", e.IPs[i], ipFams[i], i, e.IPFamilies[i])
			}
		}
	}
	switch e.SessionAffinity {
	case "", "None", "ClientIP":
	default:
		return invalid("sessionAffinity", "%q is not None or ClientIP", e.SessionAffinity)
	}
	if t := e.SessionAffinityTimeoutSeconds; t != nil && (*t < 1 || *t > 86400) {
		return invalid("sessionAffinityTimeoutSeconds", "%d is out of range 1-86400", *t)
	}
	switch e.InternalTrafficPolicy {
	case "", "Cluster", "Local":
	default:
		return invalid("internalTrafficPolicy", "%q is not Cluster or Local", e.InternalTrafficPolicy)
	}
	if len(e.TrafficDistribution) > 256 {
		return invalid("trafficDistribution", "longer than 256 bytes")
	}
	if err := Labels("labels", e.Labels); err != nil {
		return err
	}
	if err := Annotations("annotations", e.Annotations); err != nil {
		return err
	}
	if len(e.Endpoints) > api.MaxEndpoints {
		return invalid("endpoints", "at most %d endpoints", api.MaxEndpoints)
	}
	for i, ep := range e.Endpoints {
		f := fmt.Sprintf("endpoints[%d]", i)
		if len(ep.Addresses) == 0 || len(ep.Addresses) > api.MaxAddresses {
			return invalid(f+".addresses", "1 to %d addresses required", api.MaxAddresses)
		}
		for j, a := range ep.Addresses {
			if _, err := reachableAddr(fmt.Sprintf("%s.addresses[%d]", f, j), a); err != nil {
				return err
			}
		}
		if ep.Hostname != "" {
			if errs := isDNS1123Label(ep.Hostname); len(errs) > 0 {
				return invalid(f+".hostname", "%q: %s", ep.Hostname, strings.Join(errs, "; "))
			}
		}
		// Importers write these into EndpointSlices, which refuse a bad
		// name, protocol or number. Two Service ports may target the
		// same pod port, so a protocol and number may repeat here.
		if err := ports(f+".ports", ep.Ports, false); err != nil {
			return err
		}
	}
	return nil
}

// ports checks a list of ports: names are RFC 1123 labels and unique, the
// protocol is TCP, UDP or SCTP, the number 1-65535, and (a Service's
// ports, service) each protocol and number appears once.
func ports(field string, ps []api.ServicePort, service bool) *api.Error {
	if len(ps) > api.MaxPorts {
		return invalid(field, "at most %d ports", api.MaxPorts)
	}
	type protoPort struct {
		proto string
		port  int32
	}
	portAt := make(map[protoPort]int, len(ps))
	nameAt := make(map[string]int, len(ps))
	for i, p := range ps {
		f := fmt.Sprintf("%s[%d]", field, i)
		if p.Name != "" {
			if errs := isDNS1123Label(p.Name); len(errs) > 0 {
				return invalid(f+".name", "%q: %s", p.Name, strings.Join(errs, "; "))
			}
		}
		// An EndpointSlice takes one unnamed port at most.
		if p.Name != "" || !service {
			if j, dup := nameAt[p.Name]; dup {
				return invalid(f+".name", "%q is also the name of %s[%d]; port names must be unique", p.Name, field, j)
			}
			nameAt[p.Name] = i
		}
		switch p.Protocol {
		case "TCP", "UDP", "SCTP":
		default:
			return invalid(f+".protocol", "%q is not TCP, UDP or SCTP", p.Protocol)
		}
		if p.Port < 1 || p.Port > 65535 {
			return invalid(f+".port", "%d is out of range 1-65535", p.Port)
		}
		if len(p.AppProtocol) > api.MaxAppProtocol {
			return invalid(f+".appProtocol", "longer than %d bytes", api.MaxAppProtocol)
		}
		if j, dup := portAt[protoPort{p.Protocol, p.Port}]; dup && service {
			return invalid(f, "%s/%d is also %s[%d]; each protocol and port may appear once", p.Protocol, p.Port, field, j)
		}
		portAt[protoPort{p.Protocol, p.Port}] = i
	}
	return nil
}

// TokenRequest checks a join-token request.
func TokenRequest(r *api.CreateTokenRequest) *api.Error {
	if r.TTLSeconds < 0 || r.TTLSeconds > 366*24*3600 {
		return invalid("ttlSeconds", "%d is out of range 0 (default 24h) to one year", r.TTLSeconds)
	}
	if len(r.Description) > api.MaxText {
		return invalid("description", "longer than %d bytes", api.MaxText)
	}
	return nil
}

// Decode reads exactly one JSON value into v, refusing unknown fields, keys
// that match a field only case-insensitively, repeated keys, invalid UTF-8
// and trailing data. limit is the size limit r enforces, for the error
// message.
func Decode(r io.Reader, v any, limit int64) *api.Error {
	body, err := io.ReadAll(r)
	if err != nil {
		return readError(err, limit)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return &api.Error{Code: api.CodeBadRequest, Message: "empty request body"}
	}
	if !utf8.Valid(body) {
		return &api.Error{Code: api.CodeBadRequest, Message: "request body is not valid UTF-8"}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return &api.Error{Code: api.CodeBadRequest, Message: "request body must hold exactly one JSON object"}
	}
	if kerr := strictKeys(body, reflect.TypeOf(v)); kerr != nil {
		f := kerr.field()
		return &api.Error{Code: api.CodeBadRequest, Field: f, Message: f + ": " + kerr.msg}
	}
	return nil
}

// readError describes a failed body read without the error's text, which
// names the broker's and the client's socket addresses.
func readError(err error, limit int64) *api.Error {
	var (
		mbe *http.MaxBytesError
		ne  net.Error
	)
	switch {
	case errors.As(err, &mbe):
		return &api.Error{Code: api.CodeTooLarge, Message: fmt.Sprintf("request body exceeds %d bytes", limit)}
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return &api.Error{Code: api.CodeRequestTimeout, Message: "the request body did not arrive in time; retry on a faster connection or with a smaller body"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &api.Error{Code: api.CodeBadRequest, Message: "request body shorter than its Content-Length"}
	}
	return &api.Error{Code: api.CodeBadRequest, Message: "reading the request body failed"}
}

func decodeError(err error) *api.Error {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syn):
		return &api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("malformed JSON at byte %d: %v", syn.Offset, err)}
	case errors.As(err, &typ):
		return &api.Error{Code: api.CodeBadRequest, Field: typ.Field,
			Message: fmt.Sprintf("%s: expected %s, got JSON %s", typ.Field, typ.Type, typ.Value)}
	case errors.Is(err, io.EOF):
		return &api.Error{Code: api.CodeBadRequest, Message: "empty request body"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &api.Error{Code: api.CodeBadRequest, Message: "truncated JSON body"}
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		f = strings.Trim(f, `"`)
		return &api.Error{Code: api.CodeBadRequest, Field: f, Message: fmt.Sprintf("unknown field %q", f)}
	}
	return &api.Error{Code: api.CodeBadRequest, Message: "invalid JSON body: " + msg}
}

// MaxAllowedCIDRs bounds a clusterset policy's allowed ranges (and its mapped pool's).
const MaxAllowedCIDRs = 64

// Policy checks a clusterset policy the admin sets.
func Policy(p *api.Policy) *api.Error {
	if len(p.AllowedCIDRs) == 0 {
		return invalid("allowedCIDRs", "at least one range is required (no member could join); the default is %s",
			strings.Join(api.DefaultPolicy().AllowedCIDRs, ","))
	}
	if err := policyRanges("allowedCIDRs", p.AllowedCIDRs); err != nil {
		return err
	}
	if p.MinPrefixLengthIPv4 < 0 || p.MinPrefixLengthIPv4 > 32 {
		return invalid("minPrefixLengthIPv4", "%d is out of range 0 (any) to 32", p.MinPrefixLengthIPv4)
	}
	if p.MinPrefixLengthIPv6 < 0 || p.MinPrefixLengthIPv6 > 128 {
		return invalid("minPrefixLengthIPv6", "%d is out of range 0 (any) to 128", p.MinPrefixLengthIPv6)
	}
	switch p.Overlap {
	case "", api.OverlapTranslate, api.OverlapRefuse:
	default:
		return invalid("overlap", "%q is neither %q nor %q", p.Overlap, api.OverlapTranslate, api.OverlapRefuse)
	}
	return policyRanges("mappedCIDRs", p.MappedCIDRs)
}

// policyRanges checks a list of ranges of the policy: at most
// MaxAllowedCIDRs, each a CIDR in canonical form.
func policyRanges(field string, ranges []string) *api.Error {
	if len(ranges) > MaxAllowedCIDRs {
		return invalid(field, "at most %d ranges", MaxAllowedCIDRs)
	}
	for i, s := range ranges {
		f := fmt.Sprintf("%s[%d]", field, i)
		q, err := netip.ParsePrefix(s)
		if err != nil {
			return invalid(f, "%q is not a CIDR: %v", s, err)
		}
		if q.Masked() != q {
			return invalid(f, "%q has host bits set; did you mean %s?", s, q.Masked())
		}
		if q.Addr().Is4In6() {
			return invalid(f, "%q is an IPv4-mapped IPv6 prefix; write it as the IPv4 CIDR %s", s, netip.PrefixFrom(q.Addr().Unmap(), q.Bits()-96))
		}
	}
	return nil
}
