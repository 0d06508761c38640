#!/usr/bin/env python3
"""Regenerates drivers/models/sunspec.json from the official SunSpec model definitions that
pysunspec2 ships (sunspec2/models/json/model_<n>.json), keeping only what decoding needs:
names, types, sizes, scale-factor references, units, access, mandatory flags and group counts.

Usage: .venv/bin/python scripts/vendor-sunspec-models.py > drivers/models/sunspec.json
"""
import glob
import json
import os
import sys

import sunspec2

KEEP = ("name", "type", "size", "sf", "units", "access", "mandatory", "static", "value")


def group(g):
    out = {"name": g["name"]}
    if "count" in g:
        out["count"] = g["count"]
    out["points"] = [{k: p[k] for k in KEEP if k in p} for p in g.get("points", [])]
    if g.get("groups"):
        out["groups"] = [group(sg) for sg in g["groups"]]
    return out


def main():
    folder = os.path.join(os.path.dirname(sunspec2.__file__), "models", "json")
    models = []
    for path in glob.glob(os.path.join(folder, "model_*.json")):
        m = json.load(open(path))
        models.append({"id": m["id"], "group": group(m["group"])})
    models.sort(key=lambda m: m["id"])
    json.dump({"source": "pysunspec2 " + getattr(sunspec2, "__version__", "?"), "models": models},
              sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
