package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/imstream/imstream/internal/plumbing/config"
	"github.com/imstream/imstream/internal/plumbing/config/load"
)

func kubeconform(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("kubeconform"); err == nil {
		return p
	}
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "kubeconform")
	if _, err := os.Stat(p); err != nil {
		t.Fatal("kubeconform not found: run `make test`, which installs it with go install")
	}
	return p
}

// yamlDocs decodes every document of the YAML file at path into a T.
func yamlDocs[T any](t *testing.T, path string) []T {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var d T
		if err := dec.Decode(&d); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, d)
	}
}

// manifests are the base's resource files (kustomization.yaml is kustomize's).
func manifests() []string {
	files, _ := filepath.Glob("k8s/*.yaml")
	return slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == "kustomization.yaml" })
}

func runKubeconform(t *testing.T, files ...string) (string, error) {
	args := append([]string{"-strict", "-summary", "-schema-location", "k8s/schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json"}, files...)
	out, err := exec.Command(kubeconform(t), args...).CombinedOutput()
	return string(out), err
}

// TestKubernetesManifests validates deploy/k8s with kubeconform against the
// Kubernetes 1.31 schemas and KEDA's ScaledObject schema shipped in
// deploy/k8s/schemas (no download).
func TestKubernetesManifests(t *testing.T) {
	files := manifests()
	auto, _ := filepath.Glob("k8s/autoscaling/*.yaml")
	files = append(files, auto...)
	out, err := runKubeconform(t, files...)
	if err != nil || !strings.Contains(out, "Invalid: 0, Errors: 0, Skipped: 0") {
		t.Fatalf("kubeconform: %v\n%s", err, out)
	}
	for _, kind := range []string{"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ScaledObject"} {
		found := false
		for _, f := range files {
			b, _ := os.ReadFile(f)
			found = found || strings.Contains(string(b), "kind: "+kind+"\n")
		}
		if !found {
			t.Errorf("no %s in deploy/k8s", kind)
		}
	}
	// The schemas do catch mistakes: a misspelt field is rejected.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	b, _ := os.ReadFile("k8s/pusher.yaml")
	os.WriteFile(bad, []byte(strings.Replace(string(b), "readinessProbe:", "readynessProbe:", 1)), 0o644)
	if out, err := runKubeconform(t, bad); err == nil {
		t.Fatalf("kubeconform accepted a misspelt field:\n%s", out)
	}
	// The configuration in the ConfigMap is valid imstream configuration.
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	b, _ = os.ReadFile("k8s/configmap.yaml")
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	loadConfig(t, cm.Data["imstream.yaml"])
}

// TestPodSecurityRestricted: every Deployment meets Pod Security Standards
// "restricted" (non-root, RuntimeDefault seccomp, no privilege escalation,
// all capabilities dropped), has a startup probe, and takes its passwords
// from a Secret.
func TestPodSecurityRestricted(t *testing.T) {
	files := manifests()
	n := 0
	type deployment struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Template struct {
				Spec struct {
					SecurityContext struct {
						RunAsNonRoot   bool `yaml:"runAsNonRoot"`
						SeccompProfile struct {
							Type string `yaml:"type"`
						} `yaml:"seccompProfile"`
					} `yaml:"securityContext"`
					Containers []struct {
						Name            string `yaml:"name"`
						SecurityContext struct {
							AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
							Capabilities             struct {
								Drop []string `yaml:"drop"`
							} `yaml:"capabilities"`
						} `yaml:"securityContext"`
						StartupProbe map[string]any `yaml:"startupProbe"`
						Env          []struct {
							Name      string         `yaml:"name"`
							ValueFrom map[string]any `yaml:"valueFrom"`
						} `yaml:"env"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	for _, f := range files {
		for _, d := range yamlDocs[deployment](t, f) {
			if d.Kind != "Deployment" {
				continue
			}
			n++
			ps := d.Spec.Template.Spec
			if !ps.SecurityContext.RunAsNonRoot || ps.SecurityContext.SeccompProfile.Type != "RuntimeDefault" {
				t.Errorf("%s: pod securityContext needs runAsNonRoot and seccompProfile RuntimeDefault", f)
			}
			for _, c := range ps.Containers {
				sc := c.SecurityContext
				if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || fmt.Sprint(sc.Capabilities.Drop) != "[ALL]" {
					t.Errorf("%s %s: needs allowPrivilegeEscalation false and capabilities.drop [ALL]", f, c.Name)
				}
				if c.StartupProbe == nil {
					t.Errorf("%s %s: no startupProbe", f, c.Name)
				}
				secrets := 0
				for _, e := range c.Env {
					if strings.HasSuffix(e.Name, "PASSWORD") && e.ValueFrom["secretKeyRef"] != nil {
						secrets++
					}
				}
				if secrets != 2 {
					t.Errorf("%s %s: the Redis and SASL passwords must come from a Secret", f, c.Name)
				}
			}
		}
	}
	if n < 4 {
		t.Errorf("checked %d Deployments, want 4", n)
	}
}

// TestAdapterRule: the prometheus-adapter rule is valid PromQL and sums a
// group's lag once, however many pods export it (promtool test rules on the
// same expression as a recording rule).
func TestAdapterRule(t *testing.T) {
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	b, _ := os.ReadFile("k8s/autoscaling/prometheus-adapter.yaml")
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	var rules struct {
		ExternalRules []struct {
			MetricsQuery string `yaml:"metricsQuery"`
		} `yaml:"externalRules"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &rules); err != nil || len(rules.ExternalRules) != 1 {
		t.Fatalf("adapter config: %v %+v", err, rules)
	}
	expr := strings.NewReplacer("<<.Series>>", "imstream_consumer_lag", "<<.LabelMatchers>>", `group="imstream-fanout"`).Replace(rules.ExternalRules[0].MetricsQuery)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "r.yml"), []byte("groups:\n  - name: adapter\n    rules:\n      - record: imstream_group_lag\n        expr: '"+expr+"'\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "t.yml"), []byte(`rule_files: [r.yml]
tests:
  - interval: 1m
    input_series:
      - {series: 'imstream_consumer_lag{group="imstream-fanout",topic="imr.publish",partition="0",instance="a"}', values: '100x3'}
      - {series: 'imstream_consumer_lag{group="imstream-fanout",topic="imr.publish",partition="0",instance="b"}', values: '100x3'}
      - {series: 'imstream_consumer_lag{group="imstream-fanout",topic="imr.publish.bulk",partition="0",instance="a"}', values: '50x3'}
      - {series: 'imstream_consumer_lag{group="imstream-fanout",topic="imr.publish.bulk",partition="0",instance="b"}', values: '50x3'}
    promql_expr_test:
      - expr: imstream_group_lag
        eval_time: 2m
        exp_samples:
          - {labels: 'imstream_group_lag{group="imstream-fanout"}', value: 150}
`), 0o644)
	cmd := exec.Command("promtool", "test", "rules", "t.yml")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool: %v\n%s", err, out)
	}
}

func loadConfig(t *testing.T, text string) config.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte(text), 0o644)
	cfg, err := load.Config(p, nil)
	if err != nil {
		t.Fatalf("configuration does not load: %v", err)
	}
	return cfg
}

// dependsOn reads depends_on in its short (list) and long (map) forms.
type dependsOn []string

func (d *dependsOn) UnmarshalYAML(n *yaml.Node) error {
	var list []string
	if err := n.Decode(&list); err == nil {
		*d = list
		return nil
	}
	var m map[string]struct {
		Condition string `yaml:"condition"`
	}
	if err := n.Decode(&m); err != nil {
		return err
	}
	for k := range m {
		*d = append(*d, k)
	}
	return nil
}

// TestCompose parses deploy/compose/docker-compose.yml (no Docker engine
// here): every role and the infrastructure are there, dependencies name
// services, and every mounted file exists.
func TestCompose(t *testing.T) {
	b, err := os.ReadFile("compose/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Image     string    `yaml:"image"`
			Command   []string  `yaml:"command"`
			Volumes   []string  `yaml:"volumes"`
			DependsOn dependsOn `yaml:"depends_on"`
			Restart   string    `yaml:"restart"`
			Health    *struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
			Env   map[string]string `yaml:"environment"`
			Build *struct {
				Context    string `yaml:"context"`
				Dockerfile string `yaml:"dockerfile"`
			} `yaml:"build"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kafka", "redis", "prometheus", "grafana", "presence", "fanout", "pusher", "gateway", "loadgen"} {
		if _, ok := c.Services[want]; !ok {
			t.Errorf("service %s missing", want)
		}
	}
	if c.Services["kafka"].Env["KAFKA_LOG_DIRS"] != "/var/lib/kafka/data" {
		t.Errorf("kafka: KAFKA_LOG_DIRS must point into the kafka-data volume")
	}
	for name, s := range c.Services {
		if s.Restart == "" {
			t.Errorf("%s: no restart policy", name)
		}
		if name != "prometheus" && name != "grafana" && name != "loadgen" && (s.Health == nil || len(s.Health.Test) == 0) {
			t.Errorf("%s: no healthcheck", name)
		}
		if s.Image == "" {
			t.Errorf("%s: no image", name)
		}
		for _, d := range s.DependsOn {
			if _, ok := c.Services[d]; !ok {
				t.Errorf("%s depends on unknown service %s", name, d)
			}
		}
		for _, v := range s.Volumes {
			src := strings.Split(v, ":")[0]
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join("compose", src)); err != nil {
					t.Errorf("%s mounts %s, which does not exist", name, src)
				}
			} else if _, ok := c.Volumes[src]; !ok {
				t.Errorf("%s uses undeclared volume %s", name, src)
			}
		}
		if s.Build != nil {
			if _, err := os.Stat(filepath.Join("compose", s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s: build file missing: %v", name, err)
			}
		}
		if len(s.Command) > 0 && s.Image == "imstream/imstream:latest" && s.Command[0] != name {
			t.Errorf("service %s runs role %s", name, s.Command[0])
		}
	}
	b, _ = os.ReadFile("compose/imstream.yaml")
	loadConfig(t, string(b))
}
