"""Validate custom resources in a YAML stream against CRD schemas, strictly.

usage: python validate_crds.py MANIFESTS.yaml CRD.yaml...

Every document whose apiVersion's group has a CRD among the given files is checked against the
openAPIV3Schema of its version, with unknown fields rejected (additionalProperties: false wherever
the schema lists properties and does not preserve unknown fields), as the API server's strict
field validation does. A custom resource of a group given but with no matching kind or version
is an error too, so nothing passes by being skipped. Prints one line per checked object; exits 1
on any error.
"""
import sys

import jsonschema
import yaml


def strict(schema):
    if isinstance(schema, dict):
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        for v in schema.values():
            strict(v)
    elif isinstance(schema, list):
        for v in schema:
            strict(v)
    return schema


def main():
    manifests, crd_files = sys.argv[1], sys.argv[2:]
    schemas, groups = {}, set()
    for f in crd_files:
        for crd in yaml.safe_load_all(open(f)):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            groups.add(group)
            for v in crd["spec"]["versions"]:
                schemas[(f"{group}/{v['name']}", kind)] = strict(v["schema"]["openAPIV3Schema"])
    errors = checked = 0
    for doc in yaml.safe_load_all(open(manifests)):
        if not doc:
            continue
        api, kind = doc.get("apiVersion", ""), doc.get("kind")
        if api.split("/")[0] not in groups:
            continue
        name = f"{kind.lower()}/{doc.get('metadata', {}).get('name')}"
        schema = schemas.get((api, kind))
        if schema is None:
            print(f"ERROR {name}: no CRD schema for {api} {kind}")
            errors += 1
            continue
        problems = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
        for e in problems:
            print(f"ERROR {name}: {'.'.join(str(p) for p in e.path)}: {e.message}")
        errors += len(problems)
        checked += 1
        if not problems:
            print(f"OK {name} ({api})")
    print(f"{checked} custom resources checked, {errors} errors")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
