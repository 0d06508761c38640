#!/usr/bin/env python3
"""pysunspec2 as a foreign SunSpec client: scans HOST:PORT unit UNIT and prints every model's
points (scaled with `cvalue`, None for not implemented) as JSON on one line.

Usage: sunspec_scan.py HOST PORT UNIT
"""
import json
import sys

from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP


def group_values(g):
    out = {}
    for name, p in g.points.items():
        if name in ("ID", "L") or p.pdef.get("type") == "pad":
            continue
        v = p.cvalue
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        out[name] = v
    for name, sub in g.groups.items():
        subs = sub if isinstance(sub, list) else [sub]
        out[name] = [group_values(s) for s in subs]
    return out


def main():
    host, port, unit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    d = SunSpecModbusClientDeviceTCP(slave_id=unit, ipaddr=host, ipport=port, timeout=5)
    d.scan()
    models = []
    for m in d.model_list:
        models.append({"id": m.model_id, "length": m.len, "points": group_values(m)})
    d.close()
    print(json.dumps({"base": d.base_addr, "models": models}))


if __name__ == "__main__":
    main()
