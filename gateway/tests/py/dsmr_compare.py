#!/usr/bin/env python3
"""dsmr-parser as the reference decoder: parses TELEGRAM with SPEC and compares every OBIS value
it recognises with our JSON (`gridlet dsmr parse`), coercing our raw strings with the same types
dsmr-parser produced (Decimal, int, timestamp, str).

Usage: dsmr_compare.py SPEC TELEGRAM OURS_JSON [TELEGRAM OURS_JSON ...]
Prints one line per pair: {"crc_ok": bool, "compared": n, "mismatches": [...]}; crc_ok false
if dsmr-parser rejects the checksum (with "missing" when there is none).
"""
import datetime
import json
import sys
from decimal import Decimal

from dsmr_parser import telegram_specifications
from dsmr_parser.exceptions import InvalidChecksumError, ParseError
from dsmr_parser.objects import DSMRObject
from dsmr_parser.parsers import TelegramParser
from dsmr_parser.value_types import timestamp


def same(theirs, mine):
    if theirs is None:
        return mine is None
    if mine is None:
        return False
    if isinstance(theirs, Decimal):
        return Decimal(mine) == theirs
    if isinstance(theirs, bool):
        return False
    if isinstance(theirs, int):
        return int(mine) == theirs
    if isinstance(theirs, datetime.datetime):
        return timestamp(mine) == theirs
    return str(mine) == str(theirs)


def compare(spec, telegram_path, ours_path):
    with open(telegram_path, newline="") as f:
        text = f.read()
    ours = json.load(open(ours_path))
    parser = TelegramParser(spec)
    try:
        parser.parse(text, throw_ex=True)
    except InvalidChecksumError:
        return {"crc_ok": False, "compared": 0, "mismatches": []}
    except ParseError as e:
        # A telegram without its checksum, under a specification that requires one.
        return {"crc_ok": False, "missing": str(e), "compared": 0, "mismatches": []}
    compared, mismatches = 0, []
    for obj in spec["objects"]:
        pattern = parser.telegram_specification_regexes[obj["obis_reference"]]
        for match in pattern.findall(text):
            code = match.split("(")[0]
            parsed = obj["value_parser"].parse(match)
            if not isinstance(parsed, DSMRObject):
                continue
            mine = ours.get("values", {}).get(code)
            if mine is None:
                mismatches.append(f"{code}: missing in ours")
                continue
            if isinstance(mine, dict):
                mine = [mine]
            theirs = parsed.values
            if len(mine) != len(theirs):
                mismatches.append(f"{code}: {len(mine)} groups vs {len(theirs)}")
                continue
            for i, (t, m) in enumerate(zip(theirs, mine)):
                if not same(t["value"], m.get("value")):
                    mismatches.append(f"{code}[{i}]: {m.get('value')!r} vs {t['value']!r}")
                if (t.get("unit") or None) != (m.get("unit") or None):
                    mismatches.append(f"{code}[{i}] unit: {m.get('unit')!r} vs {t.get('unit')!r}")
            compared += 1
    return {"crc_ok": True, "compared": compared, "mismatches": mismatches}


def main():
    spec = getattr(telegram_specifications, sys.argv[1])
    args = sys.argv[2:]
    for i in range(0, len(args), 2):
        print(json.dumps(compare(spec, args[i], args[i + 1])))


if __name__ == "__main__":
    main()
