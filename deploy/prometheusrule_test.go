package deploy_test

import (
	"bytes"
	"flag"
	"os"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/yaml"

	"github.com/imstream/imstream/deploy"
)

var update = flag.Bool("update", false, "write generated files instead of comparing them")

// TestPrometheusRule: deploy/k8s/monitoring/prometheusrule.yaml is what
// deploy.PrometheusRule makes of alerts.yml — the same groups, rules,
// expressions, labels and annotations — and decodes strictly as the
// Prometheus Operator's PrometheusRule (a misspelt field fails).
func TestPrometheusRule(t *testing.T) {
	alerts, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	want, err := deploy.PrometheusRule(alerts)
	if err != nil {
		t.Fatal(err)
	}
	const path = "k8s/monitoring/prometheusrule.yaml"
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from alerts.yml: go test ./deploy -run TestPrometheusRule -update", path)
	}
	var pr monitoringv1.PrometheusRule
	if err := yaml.UnmarshalStrict(got, &pr); err != nil {
		t.Fatalf("not a PrometheusRule: %v", err)
	}
	var file struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(alerts, &file); err != nil {
		t.Fatal(err)
	}
	if pr.Kind != "PrometheusRule" || len(pr.Spec.Groups) != len(file.Groups) {
		t.Fatalf("%s/%s with %d groups, want %d", pr.APIVersion, pr.Kind, len(pr.Spec.Groups), len(file.Groups))
	}
	n := 0
	for i, g := range file.Groups {
		pg := pr.Spec.Groups[i]
		if pg.Name != g.Name || len(pg.Rules) != len(g.Rules) {
			t.Fatalf("group %s: %s with %d rules, want %d", g.Name, pg.Name, len(pg.Rules), len(g.Rules))
		}
		for j, r := range g.Rules {
			pr := pg.Rules[j]
			var forS string
			if pr.For != nil {
				forS = string(*pr.For)
			}
			if pr.Alert != r.Alert || pr.Expr.String() != r.Expr || forS != r.For || len(pr.Labels) != len(r.Labels) || len(pr.Annotations) != len(r.Annotations) {
				t.Errorf("rule %s differs from alerts.yml", r.Alert)
			}
			for k, v := range r.Annotations {
				if pr.Annotations[k] != v {
					t.Errorf("rule %s: annotation %s differs", r.Alert, k)
				}
			}
			n++
		}
	}
	if n < 10 {
		t.Fatalf("%d rules compared", n)
	}
	bad := bytes.Replace(got, []byte("annotations:"), []byte("annotation:"), 1)
	if err := yaml.UnmarshalStrict(bad, &monitoringv1.PrometheusRule{}); err == nil {
		t.Error("a misspelt field decoded")
	}
}
