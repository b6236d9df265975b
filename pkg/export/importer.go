package export

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

const labelMCSService = mcsv1beta1.LabelServiceName

// reconcileImport makes namespace/name of this cluster hold what PlanImport
// says for the broker's exports of that service, or nothing of ours.
func (c *Controller) reconcileImport(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	nsObj, err := c.namespaces.Get(ns)
	if apierrors.IsNotFound(err) || (err == nil && nsObj.Status.Phase == corev1.NamespaceTerminating) {
		return nil // nothing can be created there; what was there goes with it
	}
	if err != nil {
		return err
	}
	c.mu.RLock()
	svc := c.resolved[key]
	c.mu.RUnlock()
	if svc == nil {
		return c.removeImport(ctx, ns, name)
	}
	plan := PlanImport(*svc, c.scope())
	if cur, err := c.imports.ServiceImports(ns).Get(name); err == nil && cur.Labels[LabelManagedBy] != ManagedBy {
		return c.leaveForeign(ctx, cur, svc)
	}

	// The derived Service first: its ClusterIPs are the ServiceImport's
	// ips, so that the ServiceImport is written once with them (a new
	// import costs four writes: Service, ServiceImport, slice, status).
	ready := metav1.Condition{Type: string(mcsv1beta1.ServiceImportConditionReady), Status: metav1.ConditionTrue,
		Reason: string(mcsv1beta1.ServiceImportReasonReady), Message: "derived Service and endpoints are in place"}
	derived, err := c.applyDerived(ctx, plan.Derived)
	if apierrors.IsInvalid(err) {
		// Typically families this cluster does not serve: say so on the
		// import and wait for the next change instead of retrying in vain.
		c.log.Warn("derived Service refused", "service", key, "err", err)
		ready = metav1.Condition{Type: ready.Type, Status: metav1.ConditionFalse,
			Reason: string(mcsv1beta1.ServiceImportReasonIPFamilyNotSupported), Message: err.Error()}
		derived, err = &corev1.Service{}, nil
	}
	if err != nil {
		return err
	}
	// The ServiceImport's ips are the derived Service's ClusterIPs, in the
	// order of its ipFamilies.
	want := plan.ServiceImport.DeepCopy()
	if svc.Type == string(mcsv1beta1.ClusterSetIP) && len(derived.Spec.IPFamilies) > 0 {
		want.Spec.IPs = slices.Clone(derived.Spec.ClusterIPs)
		want.Spec.IPFamilies = slices.Clone(derived.Spec.IPFamilies)
	}
	si, err := c.applyServiceImport(ctx, want)
	if errors.Is(err, errForeign) {
		return c.leaveForeign(ctx, si, svc)
	}
	if err != nil {
		return err
	}
	owner := metav1.OwnerReference{APIVersion: mcsv1beta1.GroupVersion.String(), Kind: "ServiceImport",
		Name: si.Name, UID: si.UID, Controller: ptr(true)}
	// A slice the apiserver refuses (or a failed write) must not keep the
	// service's IPs and conditions from being set: the status is written
	// below and the failure is retried after.
	var retry error
	if err := c.applySlices(ctx, ns, name, plan.Slices, owner); err != nil {
		c.log.Warn("EndpointSlices of an import not all written", "service", key, "err", err)
		ready.Message += "; some EndpointSlices were not written (retrying): " + truncate(err.Error(), 512)
		retry = err
	}
	if len(plan.Dropped) > 0 {
		ready.Message += "; left out of the EndpointSlices, invalid there: " + truncate(strings.Join(plan.Dropped, "; "), 1024)
	}
	setStatus := func(si *mcsv1beta1.ServiceImport) bool {
		conds := slices.Clone(si.Status.Conditions)
		apimeta.SetStatusCondition(&conds, ready)
		if equality.Semantic.DeepEqual(si.Status.Clusters, plan.ServiceImport.Status.Clusters) && equalConditions(conds, si.Status.Conditions) {
			return false
		}
		si.Status.Clusters, si.Status.Conditions = plan.ServiceImport.Status.Clusters, conds
		return true
	}
	if si = si.DeepCopy(); setStatus(si) {
		client := c.cfg.MCS.MulticlusterV1beta1().ServiceImports(ns)
		_, err := client.UpdateStatus(ctx, si, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			// Our cache was behind our own spec write: once more, fresh.
			if si, err = client.Get(ctx, name, metav1.GetOptions{}); err == nil && setStatus(si) {
				_, err = client.UpdateStatus(ctx, si, metav1.UpdateOptions{})
			}
		}
		if err != nil {
			return errors.Join(retry, fmt.Errorf("update status of ServiceImport %s: %w", key, err))
		}
	}
	return retry
}

// errForeign: the ServiceImport exists and another party manages it.
var errForeign = errors.New("ServiceImport not managed by " + ManagedBy)

// ConditionManaged is the condition this controller sets on a ServiceImport
// that it found and does not manage (False, reason ManagedElsewhere): it
// leaves its spec and labels alone and imports nothing under its name.
const ConditionManaged = "tunnelmesh.io/Managed"

// leaveForeign keeps away from a ServiceImport another party manages: none
// of our derived Service or slices for it, and a condition of ours on it
// saying why the clusterset's service is not imported here.
func (c *Controller) leaveForeign(ctx context.Context, si *mcsv1beta1.ServiceImport, svc *Service) error {
	err := c.removeDerived(ctx, si.Namespace, si.Name)
	cond := metav1.Condition{Type: ConditionManaged, Status: metav1.ConditionFalse, Reason: "ManagedElsewhere", ObservedGeneration: si.Generation,
		Message: fmt.Sprintf("this ServiceImport is managed by %q, not %s: the clusterset's service %s (exported by %s) is not imported here; delete this ServiceImport to import it",
			si.Labels[LabelManagedBy], ManagedBy, svc.Key(), joinClusters(svc.Clusters()))}
	if cur := apimeta.FindStatusCondition(si.Status.Conditions, ConditionManaged); cur == nil || cur.Message != cond.Message || cur.Status != cond.Status {
		c.log.Warn("a ServiceImport of the same name is managed by someone else; leaving it alone", "service", svc.Key(), "managedBy", si.Labels[LabelManagedBy])
		upd := si.DeepCopy()
		apimeta.SetStatusCondition(&upd.Status.Conditions, cond)
		if _, uerr := c.cfg.MCS.MulticlusterV1beta1().ServiceImports(si.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{}); uerr != nil && !apierrors.IsNotFound(uerr) {
			err = errors.Join(err, fmt.Errorf("report on ServiceImport %s/%s: %w", si.Namespace, si.Name, uerr))
		}
	}
	return err
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// applyServiceImport creates or updates the ServiceImport's labels,
// annotations and spec (ips included) and returns the stored object; one
// that another party manages is returned untouched with errForeign.
func (c *Controller) applyServiceImport(ctx context.Context, want *mcsv1beta1.ServiceImport) (*mcsv1beta1.ServiceImport, error) {
	client := c.cfg.MCS.MulticlusterV1beta1().ServiceImports(want.Namespace)
	cur, err := c.imports.ServiceImports(want.Namespace).Get(want.Name)
	if apierrors.IsNotFound(err) {
		create := want.DeepCopy()
		create.Status = mcsv1beta1.ServiceImportStatus{}
		si, err := client.Create(ctx, create, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			// Our cache lags, or someone else just made it: next time.
			return nil, fmt.Errorf("create ServiceImport %s/%s: exists but not in our cache yet", want.Namespace, want.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("create ServiceImport %s/%s: %w", want.Namespace, want.Name, err)
		}
		return si, nil
	}
	if err != nil {
		return nil, err
	}
	if cur.Labels[LabelManagedBy] != ManagedBy {
		return cur, errForeign
	}
	if equality.Semantic.DeepEqual(want.Spec, cur.Spec) && maps.Equal(want.Labels, cur.Labels) && maps.Equal(want.Annotations, cur.Annotations) {
		return cur, nil
	}
	upd := cur.DeepCopy()
	upd.Spec, upd.Labels, upd.Annotations = want.Spec, want.Labels, want.Annotations
	si, err := client.Update(ctx, upd, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		// Our cache was behind (often our own status write): once more, fresh.
		if fresh, gerr := client.Get(ctx, want.Name, metav1.GetOptions{}); gerr == nil && fresh.Labels[LabelManagedBy] == ManagedBy {
			fresh.Spec, fresh.Labels, fresh.Annotations = want.Spec, want.Labels, want.Annotations
			si, err = client.Update(ctx, fresh, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("update ServiceImport %s/%s: %w", want.Namespace, want.Name, err)
	}
	return si, nil
}

// applyDerived creates or updates the derived Service. Headless-ness cannot
// change in place, so a type change replaces it. It has no owner: it is
// made before its ServiceImport (whose ips it gives), and removeImport and
// `meshctl leave` delete it by name and label; a ServiceImport deleted by
// hand is made again with the same ips.
func (c *Controller) applyDerived(ctx context.Context, want *corev1.Service) (*corev1.Service, error) {
	client := c.cfg.Kube.CoreV1().Services(want.Namespace)
	cur, err := c.services.Services(want.Namespace).Get(want.Name)
	if err == nil && cur.Labels[LabelManagedBy] != ManagedBy {
		return nil, fmt.Errorf("service %s/%s exists and is not managed by %s; delete or rename it so the import can use the name", want.Namespace, want.Name, ManagedBy)
	}
	if err == nil && (cur.Spec.ClusterIP == corev1.ClusterIPNone) != (want.Spec.ClusterIP == corev1.ClusterIPNone) {
		if err := client.Delete(ctx, want.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &cur.UID}}); err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("replace derived Service %s/%s: %w", want.Namespace, want.Name, err)
		}
		err = apierrors.NewNotFound(corev1.Resource("services"), want.Name)
	}
	if apierrors.IsNotFound(err) {
		s, err := client.Create(ctx, want, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return client.Get(ctx, want.Name, metav1.GetOptions{})
		}
		if err != nil {
			return nil, fmt.Errorf("create derived Service %s/%s: %w", want.Namespace, want.Name, err)
		}
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	upd := cur.DeepCopy()
	upd.Labels = want.Labels
	upd.Spec.Ports = want.Spec.Ports
	upd.Spec.SessionAffinity, upd.Spec.SessionAffinityConfig = want.Spec.SessionAffinity, want.Spec.SessionAffinityConfig
	if upd.Spec.SessionAffinity == "" {
		upd.Spec.SessionAffinity = corev1.ServiceAffinityNone
	}
	upd.Spec.InternalTrafficPolicy = want.Spec.InternalTrafficPolicy
	if upd.Spec.InternalTrafficPolicy == nil {
		upd.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyCluster)
	}
	upd.Spec.TrafficDistribution = want.Spec.TrafficDistribution
	if equality.Semantic.DeepEqual(upd.Spec, cur.Spec) && maps.Equal(upd.Labels, cur.Labels) {
		return cur, nil
	}
	s, err := client.Update(ctx, upd, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("update derived Service %s/%s: %w", want.Namespace, want.Name, err)
	}
	return s, nil
}

// applySlices makes our EndpointSlices of import name exactly want.
func (c *Controller) applySlices(ctx context.Context, ns, name string, want []*discoveryv1.EndpointSlice, owner metav1.OwnerReference) error {
	client := c.cfg.Kube.DiscoveryV1().EndpointSlices(ns)
	cur := map[string]*discoveryv1.EndpointSlice{}
	objs, err := c.sliceIndex.ByIndex(indexMCService, ns+"/"+name)
	if err != nil {
		return err
	}
	for _, o := range objs {
		s := o.(*discoveryv1.EndpointSlice)
		cur[s.Name] = s
	}
	var errs []error
	for _, w := range want {
		w = w.DeepCopy()
		w.OwnerReferences = []metav1.OwnerReference{owner}
		old, ok := cur[w.Name]
		delete(cur, w.Name)
		switch {
		case !ok:
			_, err := client.Create(ctx, w, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				err = errors.New("exists but not in our cache yet")
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("create EndpointSlice %s/%s: %w", ns, w.Name, err))
			}
		case old.AddressType != w.AddressType:
			if err := client.Delete(ctx, w.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, err)
			}
			errs = append(errs, fmt.Errorf("EndpointSlice %s/%s replaced", ns, w.Name)) // recreated on retry
		case !maps.Equal(old.Labels, w.Labels) || !maps.Equal(old.Annotations, w.Annotations) || !equality.Semantic.DeepEqual(old.Endpoints, w.Endpoints) ||
			!equality.Semantic.DeepEqual(old.Ports, w.Ports) || !equality.Semantic.DeepEqual(old.OwnerReferences, w.OwnerReferences):
			upd := old.DeepCopy()
			upd.Labels, upd.Annotations, upd.Endpoints, upd.Ports, upd.OwnerReferences = w.Labels, w.Annotations, w.Endpoints, w.Ports, w.OwnerReferences
			if _, err := client.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
				errs = append(errs, fmt.Errorf("update EndpointSlice %s/%s: %w", ns, w.Name, err))
			}
		}
	}
	for n := range cur {
		if err := client.Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete EndpointSlice %s/%s: %w", ns, n, err))
		}
	}
	return errors.Join(errs...)
}

// removeImport deletes our ServiceImport, derived Service and slices of
// name. The slices and the Service would also go by garbage collection;
// deleting them now makes it immediate.
func (c *Controller) removeImport(ctx context.Context, ns, name string) error {
	errs := []error{c.removeDerived(ctx, ns, name)}
	si, err := c.imports.ServiceImports(ns).Get(name)
	switch {
	case err != nil:
	case si.Labels[LabelManagedBy] == ManagedBy:
		c.log.Info("removing import", "service", ns+"/"+name)
		if err := c.cfg.MCS.MulticlusterV1beta1().ServiceImports(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete ServiceImport %s/%s: %w", ns, name, err))
		}
	case apimeta.FindStatusCondition(si.Status.Conditions, ConditionManaged) != nil:
		// Another party's: only our report on it goes.
		upd := si.DeepCopy()
		apimeta.RemoveStatusCondition(&upd.Status.Conditions, ConditionManaged)
		if _, err := c.cfg.MCS.MulticlusterV1beta1().ServiceImports(ns).UpdateStatus(ctx, upd, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("clear our condition on ServiceImport %s/%s: %w", ns, name, err))
		}
	}
	return errors.Join(errs...)
}

// removeDerived deletes our slices and derived Service of import name.
func (c *Controller) removeDerived(ctx context.Context, ns, name string) error {
	var errs []error
	if err := c.applySlices(ctx, ns, name, nil, metav1.OwnerReference{}); err != nil {
		errs = append(errs, err)
	}
	if s, err := c.services.Services(ns).Get(DerivedName(name)); err == nil && s.Labels[LabelManagedBy] == ManagedBy {
		if err := c.cfg.Kube.CoreV1().Services(ns).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete derived Service %s/%s: %w", ns, s.Name, err))
		}
	}
	return errors.Join(errs...)
}
