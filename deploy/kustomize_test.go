package deploy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// TestKustomizeOverlay builds overlays/example with kustomize's own
// library (what `kubectl apply -k` runs), validates the result with
// kubeconform, and checks the overlay reached every resource: namespace,
// image, replicas, resources, and a configuration that loads with the
// overlay's brokers.
func TestKustomizeOverlay(t *testing.T) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), "overlays/example")
	if err != nil {
		t.Fatalf("kustomize build: %v", err)
	}
	out, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	built := filepath.Join(t.TempDir(), "built.yaml")
	if err := os.WriteFile(built, out, 0o644); err != nil {
		t.Fatal(err)
	}
	if o, err := runKubeconform(t, built); err != nil || !strings.Contains(o, "Invalid: 0, Errors: 0, Skipped: 0") {
		t.Fatalf("kubeconform on the built overlay: %v\n%s", err, o)
	}

	deployments := 0
	for _, r := range res.Resources() {
		if ns := r.GetNamespace(); ns != "imstream" {
			t.Errorf("%s/%s in namespace %q, want the overlay's imstream", r.GetKind(), r.GetName(), ns)
		}
		y, _ := r.AsYAML()
		switch r.GetKind() {
		case "Deployment":
			deployments++
			var d struct {
				Spec struct {
					Replicas int `yaml:"replicas"`
					Template struct {
						Spec struct {
							Containers []struct {
								Name            string `yaml:"name"`
								Image           string `yaml:"image"`
								ImagePullPolicy string `yaml:"imagePullPolicy"`
								Resources       struct {
									Requests map[string]string `yaml:"requests"`
								} `yaml:"resources"`
							} `yaml:"containers"`
						} `yaml:"spec"`
					} `yaml:"template"`
				} `yaml:"spec"`
			}
			if err := yaml.Unmarshal(y, &d); err != nil {
				t.Fatal(err)
			}
			c := d.Spec.Template.Spec.Containers[0]
			if c.Image != "registry.example.com/imstream/imstream:0.9.0" || c.ImagePullPolicy != "IfNotPresent" {
				t.Errorf("%s runs %s (%s), want the overlay's image", r.GetName(), c.Image, c.ImagePullPolicy)
			}
			if r.GetName() == "imstream-fanout" && (d.Spec.Replicas != 4 || c.Resources.Requests["cpu"] != "2") {
				t.Errorf("imstream-fanout: %d replicas, cpu %s; want the overlay's 4 and 2", d.Spec.Replicas, c.Resources.Requests["cpu"])
			}
		case "ConfigMap":
			var cm struct {
				Data map[string]string `yaml:"data"`
			}
			if err := yaml.Unmarshal(y, &cm); err != nil {
				t.Fatal(err)
			}
			cfg := loadConfig(t, cm.Data["imstream.yaml"])
			if cfg.Kafka.Brokers[0] != "kafka-0.kafka.data:9092" || !cfg.Redis.Cluster || cfg.Kafka.PartitionsOf("imr.publish") != 24 {
				t.Errorf("the built configuration is not the overlay's: brokers %v, cluster %v", cfg.Kafka.Brokers, cfg.Redis.Cluster)
			}
		}
	}
	if deployments != 4 {
		t.Errorf("%d Deployments built, want 4", deployments)
	}
	// The optional parts an overlay adds build too.
	for _, dir := range []string{"k8s/monitoring", "k8s/networkpolicy"} {
		res, err := k.Run(filesys.MakeFsOnDisk(), dir)
		if err != nil || len(res.Resources()) == 0 {
			t.Errorf("kustomize build %s: %v", dir, err)
		}
	}
}
