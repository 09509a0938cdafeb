package deploy_test

import (
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	networkingv1 "k8s.io/api/networking/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// TestNetworkPolicies: deploy/k8s/networkpolicy passes kubeconform against
// the Kubernetes 1.31 schema, decodes strictly into the Kubernetes API's own
// NetworkPolicy type, and admits what docs/gateway.md
// says: the gateway's imr port from IM server pods only, every admin port
// from the monitoring namespace only, and egress to Kafka, Redis and DNS
// only.
func TestNetworkPolicies(t *testing.T) {
	b, err := os.ReadFile("k8s/networkpolicy/networkpolicy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := runKubeconform(t, "k8s/networkpolicy/networkpolicy.yaml"); err != nil || !strings.Contains(out, "Valid: 3, Invalid: 0, Errors: 0, Skipped: 0") {
		t.Fatalf("kubeconform: %v\n%s", err, out)
	}
	policies := map[string]networkingv1.NetworkPolicy{}
	for _, doc := range yamlDocs[any](t, "k8s/networkpolicy/networkpolicy.yaml") {
		raw, _ := yaml.Marshal(doc)
		var np networkingv1.NetworkPolicy
		if err := sigsyaml.UnmarshalStrict(raw, &np); err != nil {
			t.Fatalf("not a NetworkPolicy: %v\n%s", err, raw)
		}
		if np.Kind != "NetworkPolicy" || np.APIVersion != "networking.k8s.io/v1" {
			t.Fatalf("%s/%s", np.APIVersion, np.Kind)
		}
		policies[np.Name] = np
	}
	ports := func(ps []networkingv1.NetworkPolicyPort) string {
		var out []string
		for _, p := range ps {
			out = append(out, string(*p.Protocol)+"/"+p.Port.String())
		}
		return strings.Join(out, ",")
	}

	gw := policies["imstream-gateway"]
	if gw.Spec.PodSelector.MatchLabels["app.kubernetes.io/component"] != "gateway" || len(gw.Spec.Ingress) != 1 {
		t.Fatalf("imstream-gateway: %+v", gw.Spec)
	}
	in := gw.Spec.Ingress[0]
	if ports(in.Ports) != "TCP/4444" || len(in.From) != 1 || in.From[0].PodSelector.MatchLabels["imstream.dev/im-server"] != "true" {
		t.Errorf("imstream-gateway admits %s from %+v: want TCP/4444 from IM server pods", ports(in.Ports), in.From)
	}

	admin := policies["imstream-admin"]
	if len(admin.Spec.Ingress) != 1 || ports(admin.Spec.Ingress[0].Ports) != "TCP/9100" ||
		admin.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
		t.Errorf("imstream-admin: %+v", admin.Spec.Ingress)
	}

	eg := policies["imstream-egress"]
	var all []string
	for _, r := range eg.Spec.Egress {
		all = append(all, ports(r.Ports))
	}
	if got := strings.Join(all, " "); got != "TCP/9092 TCP/6379 UDP/53,TCP/53" {
		t.Errorf("imstream-egress allows %s: want Kafka, Redis and DNS only", got)
	}
	for name, np := range policies {
		if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != "imstream" {
			t.Errorf("%s selects %v, not imstream's pods", name, np.Spec.PodSelector.MatchLabels)
		}
	}
	// The Deployments' ports are the ones the policies name.
	for f, port := range map[string]string{"gateway": "containerPort: 4444", "fanout": "containerPort: 9100"} {
		d, _ := os.ReadFile("k8s/" + f + ".yaml")
		if !strings.Contains(string(d), port) {
			t.Errorf("k8s/%s.yaml has no %s", f, port)
		}
	}
	// Strict decoding catches a misspelt field.
	bad := strings.Replace(string(b), "policyTypes", "policyType", 1)
	var np networkingv1.NetworkPolicy
	first, _, _ := strings.Cut(bad, "\n---")
	if err := sigsyaml.UnmarshalStrict([]byte(first), &np); err == nil {
		t.Error("a misspelt field decoded")
	}
}
