package deploy_test

import (
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestAutoscalingCaps: every autoscaler's replica cap is the partition
// count of its role's topics as the ConfigMap creates them (more pods would
// sit idle, fewer leave partitions to too few pods), KEDA reads the brokers
// the pods use, and every KEDA trigger authenticates.
func TestAutoscalingCaps(t *testing.T) {
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	b, _ := os.ReadFile("k8s/configmap.yaml")
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	k := loadConfig(t, cm.Data["imstream.yaml"]).Kafka
	topics := map[string][]string{ // a Deployment's consumed topics
		"imstream-presence": {k.Topics.Presence, k.Topics.Groups},
		"imstream-fanout":   {k.Topics.Publish, k.Topics.Bulk},
		"imstream-pusher":   {k.Topics.Push},
	}
	limit := func(deployment string) int {
		n := 0
		for _, topic := range topics[deployment] {
			n = max(n, k.PartitionsOf(topic))
		}
		return n
	}
	if limit("imstream-fanout") == limit("imstream-pusher") {
		t.Fatalf("the ConfigMap gives every topic %d partitions; the test wants per-topic counts", limit("imstream-fanout"))
	}

	type trigger struct {
		Metadata          map[string]string `yaml:"metadata"`
		AuthenticationRef *struct {
			Name string `yaml:"name"`
		} `yaml:"authenticationRef"`
	}
	type object struct {
		Kind     string `yaml:"kind"`
		Metadata struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
		Spec struct {
			ScaleTargetRef struct {
				Name string `yaml:"name"`
			} `yaml:"scaleTargetRef"`
			MaxReplicaCount int       `yaml:"maxReplicaCount"` // KEDA
			MaxReplicas     int       `yaml:"maxReplicas"`     // HPA
			Triggers        []trigger `yaml:"triggers"`
		} `yaml:"spec"`
	}
	auths := map[string]bool{}
	scaled := 0
	for _, o := range yamlDocs[object](t, "k8s/autoscaling/keda.yaml") {
		switch o.Kind {
		case "TriggerAuthentication":
			auths[o.Metadata.Name] = true
		case "ScaledObject":
			scaled++
			d := o.Spec.ScaleTargetRef.Name
			if want := limit(d); o.Spec.MaxReplicaCount != want {
				t.Errorf("KEDA %s: maxReplicaCount %d, its topics have %d partitions", d, o.Spec.MaxReplicaCount, want)
			}
			for _, tr := range o.Spec.Triggers {
				if got, want := tr.Metadata["bootstrapServers"], strings.Join(k.Brokers, ","); got != want {
					t.Errorf("KEDA %s: bootstrapServers %q, the pods use %q", d, got, want)
				}
				if tr.AuthenticationRef == nil || !auths[tr.AuthenticationRef.Name] {
					t.Errorf("KEDA %s: a trigger without a TriggerAuthentication defined before it", d)
				}
				found := false
				for _, topic := range topics[d] {
					found = found || tr.Metadata["topic"] == topic
				}
				if !found {
					t.Errorf("KEDA %s: trigger on %q, not one of the role's topics %v", d, tr.Metadata["topic"], topics[d])
				}
			}
		}
	}
	hpas := 0
	for _, o := range yamlDocs[object](t, "k8s/autoscaling/hpa.yaml") {
		if o.Kind != "HorizontalPodAutoscaler" {
			continue
		}
		hpas++
		d := o.Spec.ScaleTargetRef.Name
		if want := limit(d); o.Spec.MaxReplicas != want {
			t.Errorf("HPA %s: maxReplicas %d, its topics have %d partitions", d, o.Spec.MaxReplicas, want)
		}
	}
	if scaled != len(topics) || hpas != len(topics) {
		t.Errorf("%d ScaledObjects and %d HPAs, want %d each", scaled, hpas, len(topics))
	}
}
