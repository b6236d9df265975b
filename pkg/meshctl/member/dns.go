package member

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tunnelmesh/tunnelmesh/pkg/dns"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/cli"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/kube"
	"github.com/tunnelmesh/tunnelmesh/pkg/meshctl/progress"
)

// CorefileEditor makes a Corefile serve clusterset.local and tells whether
// it changed anything (EnableClustersetDNS: pkg/dns.EnableMulticluster).
type CorefileEditor func(corefile string) (string, bool, error)

// The cluster's CoreDNS configuration (kubeadm's and kind's names).
const (
	corednsNamespace = "kube-system"
	corednsConfigMap = "coredns"
	corefileKey      = "Corefile"
	// originalAnnotation keeps the Corefile as it was before join and
	// editedAnnotation as join wrote it, so that leave and uninstall take out
	// exactly join's edit (dns.Revert), whatever others changed since.
	originalAnnotation = "tunnelmesh.io/original-corefile"
	editedAnnotation   = "tunnelmesh.io/edited-corefile"
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
		cm.Annotations[editedAnnotation] = updated
	}
	cm.Data[corefileKey] = updated
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: kube.FieldManager}); err != nil {
		return fmt.Errorf("update ConfigMap kube-system/coredns: %w", err)
	}
	s.Done("CoreDNS now serves clusterset.local (it reloads its Corefile within a minute)" + nodeLocal)
	return nil
}

// restoreDNS takes out of the Corefile what join put in, and only that.
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
	edited, ok := cm.Annotations[editedAnnotation]
	if !ok { // joined by a meshctl that kept only the original
		if edited, _, err = dns.EnableMulticluster(orig, dns.Zone); err != nil {
			edited = ""
		}
	}
	restored, err := dns.Revert(cm.Data[corefileKey], orig, edited)
	if err != nil {
		return cli.Failed(err, "take `"+dns.Zone+"` and `multicluster "+dns.Zone+"` out of the kubernetes plugin of ConfigMap "+
			corednsNamespace+"/"+corednsConfigMap+" yourself and remove its annotations "+originalAnnotation+" and "+editedAnnotation+
			", then run this again", "cannot take tunnelmesh's edit out of the CoreDNS Corefile")
	}
	cm.Data[corefileKey] = restored
	delete(cm.Annotations, originalAnnotation)
	delete(cm.Annotations, editedAnnotation)
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: kube.FieldManager}); err != nil {
		return fmt.Errorf("restore the CoreDNS Corefile: %w", err)
	}
	return nil
}
