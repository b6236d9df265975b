package export

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/tunnelmesh/tunnelmesh/pkg/api"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testSE() *mcsv1beta1.ServiceExport {
	return &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", CreationTimestamp: metav1.NewTime(t0)}}
}

func testSvc(mut func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.0.0.5", ClusterIPs: []string{"10.0.0.5"},
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
			Ports:      []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}}
	if mut != nil {
		mut(s)
	}
	return s
}

func slice(name, svc string, managedBy string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name,
		Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: managedBy}},
		AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps,
		Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(int32(8080))}}}
}

func TestBuildExportValidity(t *testing.T) {
	for _, tc := range []struct {
		name   string
		svc    *corev1.Service
		valid  bool
		reason mcsv1beta1.ServiceExportConditionReason
		typ    string
	}{
		{"no service", nil, false, mcsv1beta1.ServiceExportReasonNoService, ""},
		{"service being deleted", testSvc(func(s *corev1.Service) { s.DeletionTimestamp = &metav1.Time{Time: t0} }), false, mcsv1beta1.ServiceExportReasonNoService, ""},
		{"external name", testSvc(func(s *corev1.Service) {
			s.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}
		}), false, mcsv1beta1.ServiceExportReasonInvalidServiceType, ""},
		{"cluster ip", testSvc(nil), true, mcsv1beta1.ServiceExportReasonValid, api.TypeClusterSetIP},
		{"node port exports as ClusterSetIP", testSvc(func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort }), true, mcsv1beta1.ServiceExportReasonValid, api.TypeClusterSetIP},
		{"load balancer exports as ClusterSetIP", testSvc(func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeLoadBalancer }), true, mcsv1beta1.ServiceExportReasonValid, api.TypeClusterSetIP},
		{"headless", testSvc(func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"} }), true, mcsv1beta1.ServiceExportReasonValid, api.TypeHeadless},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, v := BuildExport("east", testSE(), tc.svc, nil)
			if v.Valid != tc.valid || v.Reason != tc.reason || v.Message == "" {
				t.Fatalf("validity %+v, want valid=%v reason=%s", v, tc.valid, tc.reason)
			}
			if e.Type != tc.typ || e.ClusterID != "east" || !e.CreatedAt.Equal(t0) {
				t.Fatalf("export %+v", e)
			}
			if tc.typ == api.TypeHeadless && len(e.IPs) != 0 {
				t.Fatalf("headless export has IPs %v", e.IPs)
			}
		})
	}
}

func TestBuildExportProperties(t *testing.T) {
	se := testSE()
	se.Spec.ExportedLabels = map[string]string{"team": "a"}
	se.Spec.ExportedAnnotations = map[string]string{"note": "x"}
	svc := testSvc(func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(60))}}
		s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
		s.Spec.TrafficDistribution = ptr("PreferClose")
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, AppProtocol: ptr("dns")},
			corev1.ServicePort{Name: "grpc", Port: 9000}) // protocol defaults to TCP
	})
	e, v := BuildExport("east", se, svc, nil)
	if !v.Valid {
		t.Fatal(v)
	}
	want := api.Export{ClusterID: "east", Namespace: "ns", Name: "web", Type: api.TypeClusterSetIP,
		Ports: []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}, {Name: "dns", Protocol: "UDP", Port: 53, AppProtocol: "dns"}, {Name: "grpc", Protocol: "TCP", Port: 9000}},
		IPs:   []string{"10.0.0.5"}, IPFamilies: []string{"IPv4"}, SessionAffinity: "ClientIP", SessionAffinityTimeoutSeconds: ptr(int32(60)),
		InternalTrafficPolicy: "Local", TrafficDistribution: "PreferClose", Labels: map[string]string{"team": "a"},
		Annotations: map[string]string{"note": "x"}, CreatedAt: t0}
	if !sameExport(e, want) {
		t.Fatalf("got  %+v\nwant %+v", e, want)
	}
}

func TestBuildExportEndpoints(t *testing.T) {
	host := "web-0"
	eps := []*discoveryv1.EndpointSlice{
		slice("web-a", "web", "endpointslice-controller.k8s.io",
			discoveryv1.Endpoint{Addresses: []string{"10.1.0.9"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}},
			discoveryv1.Endpoint{Addresses: []string{"10.1.0.3"}, Hostname: &host}, // nil ready reads as ready
		),
		// The same pod in a second slice while slices are rebalanced.
		slice("web-b", "web", "endpointslice-controller.k8s.io", discoveryv1.Endpoint{Addresses: []string{"10.1.0.3"}, Hostname: &host}),
		// Our own import of the service in this cluster is not an endpoint of the export.
		slice("derived-x-west", "web", ManagedBy, discoveryv1.Endpoint{Addresses: []string{"10.2.0.1"}}),
		slice("other", "other", "endpointslice-controller.k8s.io", discoveryv1.Endpoint{Addresses: []string{"10.1.0.7"}}),
	}
	e, _ := BuildExport("east", testSE(), testSvc(nil), eps)
	ports := []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 8080}}
	want := []api.Endpoint{
		{Addresses: []string{"10.1.0.3"}, Hostname: "web-0", Ready: true, Ports: ports},
		{Addresses: []string{"10.1.0.9"}, Ready: false, Ports: ports},
	}
	if !sameExport(api.Export{Endpoints: e.Endpoints}, api.Export{Endpoints: want}) {
		t.Fatalf("endpoints %+v\nwant %+v", e.Endpoints, want)
	}
}
