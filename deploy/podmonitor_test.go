package deploy_test

import (
	"os"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/yaml"
)

// TestPodMonitor: deploy/k8s/monitoring/podmonitor.yaml is a PodMonitor of
// the Prometheus Operator's own API types (decoded strictly, so a misspelt
// field fails), selects the pods the Deployments label, scrapes their
// admin port, and keeps the label the alerts select by.
func TestPodMonitor(t *testing.T) {
	b, err := os.ReadFile("k8s/monitoring/podmonitor.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var pm monitoringv1.PodMonitor
	if err := yaml.UnmarshalStrict(b, &pm); err != nil {
		t.Fatalf("not a PodMonitor: %v", err)
	}
	if pm.Kind != "PodMonitor" || pm.APIVersion != "monitoring.coreos.com/v1" {
		t.Fatalf("kind %s/%s", pm.APIVersion, pm.Kind)
	}
	if pm.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != "imstream" {
		t.Errorf("selector %v does not select the Deployments' pods", pm.Spec.Selector.MatchLabels)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 || pm.Spec.PodMetricsEndpoints[0].Port == nil || *pm.Spec.PodMetricsEndpoints[0].Port != "admin" {
		t.Errorf("endpoints %+v: want the admin port", pm.Spec.PodMetricsEndpoints)
	}
	kept := strings.Join(pm.Spec.PodTargetLabels, ",")
	if !strings.Contains(kept, "app.kubernetes.io/name") {
		t.Errorf("podTargetLabels %s: the alerts select by app_kubernetes_io_name", kept)
	}
	alerts, _ := os.ReadFile("prometheus/alerts.yml")
	if strings.Contains(string(alerts), `job="`) || !strings.Contains(string(alerts), `up{app_kubernetes_io_name="imstream"}`) {
		t.Error("alerts.yml selects targets by job name, which differs between scrape configs")
	}
	// Strict decoding does catch mistakes.
	bad := strings.Replace(string(b), "podTargetLabels", "podTargetLabel", 1)
	if err := yaml.UnmarshalStrict([]byte(bad), &monitoringv1.PodMonitor{}); err == nil {
		t.Error("a misspelt field decoded")
	}
	// Every Deployment's pods carry the label and name their admin port.
	for _, f := range []string{"presence", "fanout", "pusher", "gateway"} {
		d, _ := os.ReadFile("k8s/" + f + ".yaml")
		if !strings.Contains(string(d), "app.kubernetes.io/name: imstream") || !strings.Contains(string(d), "{name: admin, containerPort: 9100}") {
			t.Errorf("k8s/%s.yaml: pods without the label or the admin port", f)
		}
	}
}
