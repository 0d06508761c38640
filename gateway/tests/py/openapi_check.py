#!/usr/bin/env python3
"""The gateway's OpenAPI document against openapi-spec-validator, and live answers against it.

Usage: openapi_check.py DOC.json [PATH ANSWER.json ...]
Validates DOC as OpenAPI 3.1, then each ANSWER (the body of GET PATH with status 200) against
that operation's response schema, with every object schema closed (additionalProperties false),
so a field the document does not name fails as much as a missing or mistyped one.
Prints one JSON line: {"valid": true, "answers": n} or exits 1 naming the problem.
"""
import json
import sys

import jsonschema
from openapi_spec_validator import validate


def closed(node):
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for v in node.values():
            closed(v)
    elif isinstance(node, list):
        for v in node:
            closed(v)
    return node


def main():
    doc = json.load(open(sys.argv[1]))
    validate(doc)
    components = closed(json.loads(json.dumps(doc.get("components", {}))))
    pairs = sys.argv[2:]
    for path, answer_file in zip(pairs[0::2], pairs[1::2]):
        op = doc["paths"][path]["get"]
        schema = op["responses"]["200"]["content"]["application/json"]["schema"]
        root = {"$schema": "https://json-schema.org/draft/2020-12/schema", "components": components}
        root.update(closed(json.loads(json.dumps(schema))))
        answer = json.load(open(answer_file))
        try:
            jsonschema.Draft202012Validator(root).validate(answer)
        except jsonschema.ValidationError as e:
            print(f"GET {path}: {e.message} at {list(e.absolute_path)}", file=sys.stderr)
            sys.exit(1)
    print(json.dumps({"valid": True, "answers": len(pairs) // 2}))


main()
