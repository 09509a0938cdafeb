// Package deploy_test validates the deployment files offline: alert rules
// with promtool, the dashboard's queries against the metrics the code
// exports, the metrics doc, and the metrics of each role with promtool.
package deploy_test

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/imstream/imstream/deploy"
	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/wiring/role"
)

// exported returns every metric name the roles register (histograms also
// as _bucket, _sum, _count).
func exported(t *testing.T) map[string]bool {
	t.Helper()
	env := everyRole(t, config.Default())
	names := map[string]bool{}
	for _, n := range env.Registry.Names() {
		names[n] = true
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			names[n+s] = true
		}
	}
	return names
}

// everyRole builds a process with every role's stages (not running), on
// cfg without an admin port; it is closed when the test ends.
func everyRole(t *testing.T, cfg config.Config) *role.Env {
	t.Helper()
	cfg.Admin.Listen = ""
	env, err := role.Setup(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	if _, err := env.Stages("presence", "fanout", "pusher", "gateway"); err != nil {
		t.Fatal(err)
	}
	return env
}

func promtool(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Fatal("promtool not found: run `make test`, which installs Debian's prometheus package")
	}
	cmd := exec.Command("promtool", args...)
	cmd.Dir = "prometheus"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestAlertRules(t *testing.T) {
	promtool(t, "check", "rules", "alerts.yml")
	promtool(t, "test", "rules", "alerts_test.yml")
	promtool(t, "check", "config", "prometheus.yml")
}

// dashboardExprs returns every query of the dashboard with Grafana's
// variables replaced, and which ones are main panels.
func dashboardExprs(t *testing.T) (all, main []string) {
	t.Helper()
	all, main, err := deploy.DashboardQueries("grafana/imstream.json", "1m")
	if err != nil {
		t.Fatal(err)
	}
	return all, main
}

// TestDashboardQueries: every query parses and uses only exported metrics.
func TestDashboardQueries(t *testing.T) {
	names := exported(t)
	all, main := dashboardExprs(t)
	if len(all) < 15 || len(main) < 5 {
		t.Fatalf("dashboard has %d queries, %d main ones", len(all), len(main))
	}
	for _, e := range all {
		expr, err := parser.NewParser(parser.Options{}).ParseExpr(e)
		if err != nil {
			t.Errorf("query %q: %v", e, err)
			continue
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			if !names[vs.Name] {
				t.Errorf("query %q uses %s, which no role exports", e, vs.Name)
			}
			// Every selector honours the dashboard's $job and $instance
			// (DashboardQueries replaced them with .*).
			filtered := map[string]bool{}
			for _, m := range vs.LabelMatchers {
				filtered[m.Name] = filtered[m.Name] || (m.Value == ".*" && (m.Name == "job" || m.Name == "instance"))
			}
			if !filtered["job"] || !filtered["instance"] {
				t.Errorf("query %q: %s ignores the $job or $instance filter", e, vs.Name)
			}
			return nil
		})
	}
}

// TestAlertsUseExportedMetrics: the alert rules only use exported metrics.
func TestAlertsUseExportedMetrics(t *testing.T) {
	names := exported(t)
	b, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`imstream_[a-z0-9_]+`).FindAllString(string(b), -1) {
		if !names[m] {
			t.Errorf("alerts.yml uses %s, which no role exports", m)
		}
	}
}

// TestAlertRunbooks: every alert links to a section of docs/runbook.md that
// exists, and names the alert there.
func TestAlertRunbooks(t *testing.T) {
	b, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	rb, err := os.ReadFile("../docs/runbook.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, h := range regexp.MustCompile(`(?m)^## (.+)$`).FindAllStringSubmatch(string(rb), -1) {
		a := strings.ToLower(h[1])
		a = regexp.MustCompile(`[^a-z0-9 -]`).ReplaceAllString(a, "")
		anchors[strings.ReplaceAll(a, " ", "-")] = true
	}
	alerts := regexp.MustCompile(`- alert: (\w+)`).FindAllStringSubmatch(string(b), -1)
	urls := regexp.MustCompile(`runbook_url: "[^"#]*docs/runbook.md#([a-z0-9-]+)"`).FindAllStringSubmatch(string(b), -1)
	if len(urls) != len(alerts) || len(alerts) == 0 {
		t.Fatalf("%d alerts, %d runbook_urls: every alert needs one", len(alerts), len(urls))
	}
	for i, u := range urls {
		if !anchors[u[1]] {
			t.Errorf("%s: runbook_url #%s is no section of docs/runbook.md", alerts[i][1], u[1])
		}
		if !strings.Contains(string(rb), alerts[i][1]) {
			t.Errorf("docs/runbook.md does not mention %s", alerts[i][1])
		}
	}
}

// TestEveryAlertTested: alerts_test.yml has, for every alert, a case where
// it fires (exp_alerts not empty).
func TestEveryAlertTested(t *testing.T) {
	rules, _ := os.ReadFile("prometheus/alerts.yml")
	tests, _ := os.ReadFile("prometheus/alerts_test.yml")
	fires := regexp.MustCompile(`alertname: (\w+)\s+exp_alerts:\s*\n\s+- exp_labels`).FindAllStringSubmatch(string(tests), -1)
	fired := map[string]bool{}
	for _, m := range fires {
		fired[m[1]] = true
	}
	for _, m := range regexp.MustCompile(`- alert: (\w+)`).FindAllStringSubmatch(string(rules), -1) {
		if !fired[m[1]] {
			t.Errorf("%s has no promtool case where it fires", m[1])
		}
	}
}

// TestMetricsDoc: docs/metrics.md lists exactly the exported metrics.
func TestMetricsDoc(t *testing.T) {
	names := exported(t)
	b, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("\\| `(imstream_[a-z0-9_]+)` \\|").FindAllStringSubmatch(string(b), -1) {
		documented[m[1]] = true
		if !names[m[1]] {
			t.Errorf("docs/metrics.md lists %s, which no role exports", m[1])
		}
	}
	for n := range names {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")
		if strings.HasPrefix(n, "imstream_") && !documented[n] && !documented[base] {
			t.Errorf("%s is exported but not in docs/metrics.md", n)
		}
	}
}

// TestFreshProcessExportsEveryFamily: a process that has just built its
// stages — before Kafka or Redis answer, before any event — already exports
// every family the dashboard and the alerts use (at 0), so panels show 0
// instead of "No data" and rate() sees the first event. The exceptions are
// read from Kafka or Redis at scrape time and say so when they cannot be
// (imstream_consumer_lag_unreadable, -1 live servers).
func TestFreshProcessExportsEveryFamily(t *testing.T) {
	cfg := config.Default()
	cfg.Kafka.Brokers = []string{"127.0.0.1:1"} // nothing listens: a process started before Kafka
	cfg.Redis.Addrs = []string{"127.0.0.1:1"}
	env := everyRole(t, cfg)
	mfs, err := env.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		if len(mf.GetMetric()) > 0 {
			have[mf.GetName()] = true
		}
	}
	live := map[string]bool{ // read from Kafka or Redis at scrape time
		"imstream_consumer_lag": true, "imstream_push_list_length": true,
	}
	all, _ := dashboardExprs(t)
	rules, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	used := regexp.MustCompile(`imstream_[a-z0-9_]+`).FindAllString(strings.Join(all, "\n")+string(rules), -1)
	for _, m := range used {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
		if !have[base] && !live[base] {
			t.Errorf("%s is used by the dashboard or the alerts but a fresh process does not export it", m)
		}
	}
}
