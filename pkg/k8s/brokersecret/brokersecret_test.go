package brokersecret

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestParseGossipKey(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	for _, tc := range []struct {
		name, gossip, wantErr string
		want                  []byte
	}{
		{name: "absent: no cross-cluster gossip"},
		{name: "32 bytes", gossip: base64.StdEncoding.EncodeToString(key), want: key},
		{name: "not base64", gossip: "!!!", wantErr: "gossip-key is not base64"},
		{name: "wrong length", gossip: base64.StdEncoding.EncodeToString([]byte("short")), wantErr: "16, 24 or 32 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: Name, Namespace: "ns"}, Data: map[string][]byte{
				KeyURL: []byte("https://b"), KeyCA: []byte("ca"), KeyCredential: []byte("c"), KeyClusterID: []byte("a")}}
			if tc.gossip != "" {
				s.Data[KeyGossip] = []byte(tc.gossip + "\n")
			}
			bi, err := Parse(s)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(bi.GossipKey, tc.want) {
				t.Fatalf("Parse: %v, key %x want %x", err, bi.GossipKey, tc.want)
			}
		})
	}
}
