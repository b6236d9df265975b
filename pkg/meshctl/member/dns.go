package member

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
)

// CorefileEditor makes a Corefile serve clusterset.local and tells whether
// it changed anything (the lead wires pkg/dns.EnableMulticluster).
type CorefileEditor func(corefile string) (string, bool, error)

// The cluster's CoreDNS configuration (kubeadm's and kind's names).
const (
	corednsNamespace = "kube-system"
	corednsConfigMap = "coredns"
	corefileKey      = "Corefile"
	// originalAnnotation keeps the Corefile as it was before join, so that
	// leave and uninstall put it back.
	originalAnnotation = "tunnelmesh.io/original-corefile"
)

// configureDNS makes CoreDNS serve clusterset.local; it never fails the
// join, but says what the user must do when it cannot.
func configureDNS(ctx context.Context, c *kube.Cluster, edit CorefileEditor, s *progress.Step) error {
	cms := c.Client.CoreV1().ConfigMaps(corednsNamespace)
	cm, err := cms.Get(ctx, corednsConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		s.Skip("no ConfigMap kube-system/coredns: make your cluster DNS serve clusterset.local from ServiceImports")
		return nil
	}
	if err != nil {
		return fmt.Errorf("read ConfigMap kube-system/coredns: %w", err)
	}
	nodeLocal := ""
	if _, err := c.Client.AppsV1().DaemonSets(corednsNamespace).Get(ctx, "node-local-dns", metav1.GetOptions{}); err == nil {
		nodeLocal = "; NodeLocal DNSCache (node-local-dns) answers pods first: make it forward clusterset.local to kube-dns as it does cluster.local"
	}
	if edit == nil {
		s.Skip("no Corefile editor wired in this build: add `multicluster clusterset.local` to CoreDNS's kubernetes plugin" + nodeLocal)
		return nil
	}
	old := cm.Data[corefileKey]
	updated, changed, err := edit(old)
	if err != nil {
		s.Skip(fmt.Sprintf("cannot edit the Corefile (%v): add `multicluster clusterset.local` to its kubernetes plugin yourself%s", err, nodeLocal))
		return nil
	}
	if !changed {
		s.Done("CoreDNS already serves clusterset.local" + nodeLocal)
		return nil
	}
	if cm.Annotations == nil {
		cm.Annotations = map[string]string{}
	}
	if _, ok := cm.Annotations[originalAnnotation]; !ok {
		cm.Annotations[originalAnnotation] = old
	}
	cm.Data[corefileKey] = updated
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: kube.FieldManager}); err != nil {
		return fmt.Errorf("update ConfigMap kube-system/coredns: %w", err)
	}
	s.Done("CoreDNS now serves clusterset.local (it reloads its Corefile within a minute)" + nodeLocal)
	return nil
}

// restoreDNS puts back the Corefile join changed.
func restoreDNS(ctx context.Context, c *kube.Cluster) error {
	cms := c.Client.CoreV1().ConfigMaps(corednsNamespace)
	cm, err := cms.Get(ctx, corednsConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	orig, ok := cm.Annotations[originalAnnotation]
	if !ok {
		return nil
	}
	cm.Data[corefileKey] = orig
	delete(cm.Annotations, originalAnnotation)
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: kube.FieldManager}); err != nil {
		return fmt.Errorf("restore the CoreDNS Corefile: %w", err)
	}
	return nil
}
