package deploy

import (
	"fmt"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// PrometheusRule returns deploy/k8s/monitoring/prometheusrule.yaml: the
// rule groups of a Prometheus rule file (deploy/prometheus/alerts.yml) as a
// Prometheus Operator PrometheusRule, so that clusters running the
// operator load the same alerts as a plain Prometheus. Regenerate it with
// `go test ./deploy -run TestPrometheusRule -update`.
func PrometheusRule(alerts []byte) ([]byte, error) {
	var file struct {
		Groups []monitoringv1.RuleGroup `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(alerts, &file); err != nil {
		return nil, fmt.Errorf("alerts: %w", err)
	}
	pr := monitoringv1.PrometheusRule{
		TypeMeta:   metav1.TypeMeta{APIVersion: "monitoring.coreos.com/v1", Kind: "PrometheusRule"},
		ObjectMeta: metav1.ObjectMeta{Name: "imstream", Labels: map[string]string{"app.kubernetes.io/name": "imstream"}},
		Spec:       monitoringv1.PrometheusRuleSpec{Groups: file.Groups},
	}
	b, err := yaml.Marshal(&pr)
	if err != nil {
		return nil, err
	}
	return append([]byte("# Generated from deploy/prometheus/alerts.yml by deploy.PrometheusRule; do not edit.\n"+
		"# Regenerate: go test ./deploy -run TestPrometheusRule -update\n"), b...), nil
}
