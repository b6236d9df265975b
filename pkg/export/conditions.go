package export

import (
	"slices"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// Publication is where an export stands with the broker.
type Publication struct {
	// InBroker: the broker's view holds exactly the export we computed.
	InBroker bool
	// Err is the broker's refusal or the failure to reach it, if any.
	Err error
}

// ExportConditions computes a ServiceExport's Valid, Ready and Conflict
// conditions. svc is the resolved multi-cluster service as the broker shows
// it (nil when not seen there yet); an invalid export has no Conflict
// condition since it takes no part in the service.
func ExportConditions(generation int64, v Validity, pub Publication, svc *Service) []metav1.Condition {
	cond := func(t mcsv1beta1.ServiceExportConditionType, ok bool, reason mcsv1beta1.ServiceExportConditionReason, msg string) metav1.Condition {
		st := metav1.ConditionFalse
		if ok {
			st = metav1.ConditionTrue
		}
		return metav1.Condition{Type: string(t), Status: st, Reason: string(reason), Message: msg, ObservedGeneration: generation}
	}
	out := []metav1.Condition{cond(mcsv1beta1.ServiceExportConditionValid, v.Valid, v.Reason, v.Message)}
	switch {
	case !v.Valid && v.Reason == mcsv1beta1.ServiceExportReasonNoService:
		out = append(out, cond(mcsv1beta1.ServiceExportConditionReady, false, mcsv1beta1.ServiceExportReasonPending, "waiting for the Service"))
	case !v.Valid:
		out = append(out, cond(mcsv1beta1.ServiceExportConditionReady, false, mcsv1beta1.ServiceExportReasonFailed, v.Message))
	case pub.Err != nil:
		out = append(out, cond(mcsv1beta1.ServiceExportConditionReady, false, mcsv1beta1.ServiceExportReasonFailed, "publishing to the broker failed: "+pub.Err.Error()))
	case pub.InBroker:
		out = append(out, cond(mcsv1beta1.ServiceExportConditionReady, true, mcsv1beta1.ServiceExportReasonExported, "exported to the clusterset"))
	default:
		out = append(out, cond(mcsv1beta1.ServiceExportConditionReady, false, mcsv1beta1.ServiceExportReasonPending, "being published to the broker"))
	}
	if v.Valid && svc != nil {
		if len(svc.Conflicts) == 0 {
			out = append(out, cond(mcsv1beta1.ServiceExportConditionConflict, false, mcsv1beta1.ServiceExportReasonNoConflicts, svc.ConflictMessage()))
		} else {
			out = append(out, cond(mcsv1beta1.ServiceExportConditionConflict, true, svc.ConflictReason(), svc.ConflictMessage()))
		}
	}
	return out
}

func joinClusters(cs []string) string {
	s := ""
	for i, c := range cs {
		if i > 0 {
			s += ", "
		}
		s += c
	}
	return s
}

// MergeConditions returns existing updated to desired, keeping the
// transition time of conditions whose status did not change and dropping
// our condition types that are no longer desired; changed reports whether
// anything differs.
func MergeConditions(existing, desired []metav1.Condition) ([]metav1.Condition, bool) {
	out := make([]metav1.Condition, 0, len(desired))
	for _, c := range existing {
		out = append(out, *c.DeepCopy())
	}
	for _, t := range []mcsv1beta1.ServiceExportConditionType{mcsv1beta1.ServiceExportConditionValid, mcsv1beta1.ServiceExportConditionReady, mcsv1beta1.ServiceExportConditionConflict} {
		if !slices.ContainsFunc(desired, func(c metav1.Condition) bool { return c.Type == string(t) }) {
			apimeta.RemoveStatusCondition(&out, string(t))
		}
	}
	for _, c := range desired {
		apimeta.SetStatusCondition(&out, c)
	}
	return out, !equalConditions(existing, out)
}

func equalConditions(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message ||
			x.ObservedGeneration != y.ObservedGeneration || !x.LastTransitionTime.Equal(&y.LastTransitionTime) {
			return false
		}
	}
	return true
}
