#!/usr/bin/env python3
"""Writes standalone, strict JSON schemas for the Kubernetes kinds imstream's
manifests use, from the Kubernetes OpenAPI spec (swagger.json), the way
openapi2jsonschema --stand-alone --strict does, so kubeconform can validate
deploy/k8s offline.  Regenerate:

  go mod download -json k8s.io/kubernetes@v1.31.0   # prints its Dir
  scripts/k8s-schemas.py <Dir>/api/openapi-spec/swagger.json deploy/k8s/schemas
"""
import json, sys

KINDS = {
    "io.k8s.api.apps.v1.Deployment": "deployment-apps-v1",
    "io.k8s.api.core.v1.Service": "service-v1",
    "io.k8s.api.core.v1.ConfigMap": "configmap-v1",
    "io.k8s.api.policy.v1.PodDisruptionBudget": "poddisruptionbudget-policy-v1",
    "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler": "horizontalpodautoscaler-autoscaling-v2",
    "io.k8s.api.networking.v1.NetworkPolicy": "networkpolicy-networking-v1",
}
SPECIAL = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"oneOf": [{"type": "string"}, {"type": "number"}]},
}

def main(spec_path, out):
    defs = json.load(open(spec_path))["definitions"]

    def expand(node, stack):
        if isinstance(node, list):
            return [expand(x, stack) for x in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            name = node["$ref"].split("/")[-1]
            if name in SPECIAL:
                return SPECIAL[name]
            if name in stack:  # recursive types: leave open
                return {}
            return expand(defs[name], stack + [name])
        out = {}
        for k, v in node.items():
            if k in ("description", "x-kubernetes-patch-strategy", "x-kubernetes-patch-merge-key",
                     "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
                     "x-kubernetes-unions"):
                continue
            out[k] = expand(v, stack) if k in ("properties", "items", "additionalProperties", "allOf", "oneOf", "anyOf") or isinstance(v, (dict, list)) else v
        if "properties" in out:
            out["properties"] = {k: expand(v, stack) for k, v in node["properties"].items()}
            out.setdefault("additionalProperties", False)  # strict: unknown fields are errors
            out["type"] = "object"
        return out

    for name, fname in KINDS.items():
        schema = expand(defs[name], [name])
        gvk = defs[name]["x-kubernetes-group-version-kind"][0]
        api = (gvk["group"] + "/" if gvk["group"] else "") + gvk["version"]
        schema["properties"]["apiVersion"] = {"type": "string", "enum": [api]}
        schema["properties"]["kind"] = {"type": "string", "enum": [gvk["kind"]]}
        schema["$schema"] = "http://json-schema.org/schema#"
        with open(f"{out}/{fname}.json", "w") as f:
            json.dump(schema, f, separators=(",", ":"), sort_keys=True)

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
