package brokerdeploy

import (
	"fmt"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
)

// EtcdOptions point a replicated broker at the etcd cluster it shares.
type EtcdOptions struct {
	// Endpoints are etcd client URLs as the broker pods reach them.
	Endpoints []string
	// Prefix of the clusterset's keys; default /tunnelmesh.
	Prefix string
	// CAFile, CertFile and KeyFile (on this host) go into Secret
	// tunnelmesh-broker-etcd for the pods; all empty: plain connections.
	CAFile, CertFile, KeyFile string
	// MaxTxnOps is the etcd servers' --max-txn-ops; default etcd's 128.
	MaxTxnOps int
}

// Enabled reports whether the broker stores in etcd.
func (e EtcdOptions) Enabled() bool { return len(e.Endpoints) > 0 }

const (
	etcdSecretName = "tunnelmesh-broker-etcd"
	etcdMountPath  = "/etc/tunnelmesh-etcd"
)

// etcdSecretData reads the TLS files for the pods' Secret; nil without TLS.
func (e EtcdOptions) etcdSecretData() (map[string][]byte, error) {
	files := []struct{ flag, path, key string }{
		{"--etcd-ca", e.CAFile, "ca.crt"}, {"--etcd-cert", e.CertFile, "client.crt"}, {"--etcd-key", e.KeyFile, "client.key"}}
	data := map[string][]byte{}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			return nil, cli.Usage("pass the PEM file the etcd cluster's clients use", "%s: %v", f.flag, err)
		}
		data[f.key] = b
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		return nil, cli.Usage("pass both --etcd-cert and --etcd-key, or neither", "--etcd-cert and --etcd-key go together")
	}
	if len(data) == 0 {
		return nil, nil
	}
	return data, nil
}

// replicate turns deploy/broker's single bbolt broker into replicas
// sharing etcd: replicas pods, rolling updates, no node pinning or host
// path (the data is in etcd), spread over nodes when possible, and the
// store flags. With tlsData (the broker's etcd Secret: ca.crt, client.crt,
// client.key) it mounts Secret tunnelmesh-broker-etcd and points the flags
// at the files it has.
func replicate(objs []*unstructured.Unstructured, replicas int, e EtcdOptions, tlsData map[string][]byte) error {
	for _, o := range objs {
		if o.GetKind() != "Deployment" || o.GetName() != deploymentName {
			continue
		}
		var d appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
			return fmt.Errorf("broker Deployment: %w", err)
		}
		r := int32(replicas)
		d.Spec.Replicas = &r
		d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType}
		ps := &d.Spec.Template.Spec
		ps.NodeSelector = nil
		ps.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 100,
				PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: "kubernetes.io/hostname",
					LabelSelector: &metav1.LabelSelector{MatchLabels: d.Spec.Selector.MatchLabels}}}}}}
		for i := range ps.Volumes {
			if ps.Volumes[i].Name == "data" {
				// --data-dir stays for the flags' sake; with etcd it holds nothing.
				ps.Volumes[i].VolumeSource = corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
			}
		}
		prefix := e.Prefix
		if prefix == "" {
			prefix = "/tunnelmesh"
		}
		args := []string{"--store=etcd", "--etcd-endpoints=" + strings.Join(e.Endpoints, ","), "--etcd-prefix=" + prefix}
		if e.MaxTxnOps > 0 {
			args = append(args, fmt.Sprintf("--etcd-max-txn-ops=%d", e.MaxTxnOps))
		}
		ctr := &ps.Containers[0]
		if tlsData != nil {
			ps.Volumes = append(ps.Volumes, corev1.Volume{Name: "etcd", VolumeSource: corev1.VolumeSource{
				Secret: &corev1.SecretVolumeSource{SecretName: etcdSecretName, DefaultMode: ptr(int32(0o400))}}})
			ctr.VolumeMounts = append(ctr.VolumeMounts, corev1.VolumeMount{Name: "etcd", MountPath: etcdMountPath, ReadOnly: true})
			if tlsData["ca.crt"] != nil {
				args = append(args, "--etcd-ca="+etcdMountPath+"/ca.crt")
			}
			if tlsData["client.crt"] != nil {
				args = append(args, "--etcd-cert="+etcdMountPath+"/client.crt", "--etcd-key="+etcdMountPath+"/client.key")
			}
		}
		ctr.Args = append(ctr.Args, args...)
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&d)
		if err != nil {
			return err
		}
		o.Object = u
		return nil
	}
	return fmt.Errorf("no %s Deployment in deploy/broker", deploymentName)
}

func ptr[T any](v T) *T { return &v }
