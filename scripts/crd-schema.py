#!/usr/bin/env python3
"""Writes a strict JSON schema for kubeconform from a CustomResourceDefinition
(its openAPIV3Schema), so deploy/k8s/autoscaling validates offline. Regenerate
the KEDA ScaledObject schema:

  go mod download -json github.com/kedacore/keda/v2@v2.21.0   # prints its Dir
  scripts/crd-schema.py <Dir>/config/crd/bases/keda.sh_scaledobjects.yaml v1alpha1 \
      deploy/k8s/schemas/scaledobject-keda-v1alpha1.json
  scripts/crd-schema.py <Dir>/config/crd/bases/keda.sh_triggerauthentications.yaml v1alpha1 \
      deploy/k8s/schemas/triggerauthentication-keda-v1alpha1.json
"""
import json, sys
import yaml

def strict(node):
    if isinstance(node, list):
        return [strict(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items()}
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out

def main(crd_path, version, out_path):
    crd = yaml.safe_load(open(crd_path))
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema = strict(v["schema"]["openAPIV3Schema"])
            schema["$schema"] = "http://json-schema.org/schema#"
            json.dump(schema, open(out_path, "w"), indent=1, sort_keys=True)
            return
    sys.exit(f"{crd_path}: no version {version}")

if __name__ == "__main__":
    main(*sys.argv[1:])
