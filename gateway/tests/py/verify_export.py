#!/usr/bin/env python3
"""Independent verifier of an exported gridlet chain, written only from docs/protocol.md.

Usage: verify_export.py GENESIS_JSON EXPORT_JSONL
Prints one JSON line {"height", "tip_hash", "state_hash"} on success; exits 1 naming the first
violation otherwise. Uses the pure-Python `ecdsa` package, not libsecp256k1, so it shares no
code with the Rust node.
"""
import hashlib
import json
import struct
import sys

from ecdsa import SECP256k1, VerifyingKey, BadSignatureError
from ecdsa.util import sigdecode_string

ORDER = SECP256k1.order


def H(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def u8(v): return struct.pack(">B", v)
def u32(v): return struct.pack(">I", v)
def u64(v): return struct.pack(">Q", v)
def var(b): return u32(len(b)) + b


def fail(msg):
    print(f"INVALID: {msg}", file=sys.stderr)
    sys.exit(1)


def finality(g):
    f = g.get("finality", {"quorum_num": 2, "quorum_den": 3, "max_unfinal_blocks": 120})
    return u32(f["quorum_num"]) + u32(f["quorum_den"]) + u64(f["max_unfinal_blocks"])


def quorum(g):
    f = g.get("finality", {"quorum_num": 2, "quorum_den": 3})
    return len(g["members"]) * f["quorum_num"] // f["quorum_den"] + 1


def verify_certificate(raw, chain_id, members, q, height, bhash, last_checkpoint):
    """protocol.md §9: precommits from q members, ascending keys, on this block."""
    if raw[0] != 1:
        fail(f"block {height}: certificate version")
    checkpoint, rnd = struct.unpack(">QI", raw[1:13])
    c_height, c_hash = struct.unpack(">Q", raw[13:21])[0], raw[21:53]
    count = struct.unpack(">I", raw[53:57])[0]
    if len(raw) != 57 + count * 97:
        fail(f"block {height}: certificate length")
    if c_height != height or c_hash != bhash or checkpoint <= last_checkpoint:
        fail(f"block {height}: certificate names another block or checkpoint")
    digest = H(b"gridlet/vote/v1", chain_id, u64(checkpoint), u32(rnd), u8(2), u8(1),
               u64(c_height), c_hash)
    prev = None
    for i in range(count):
        key, sig = raw[57 + i * 97: 57 + i * 97 + 33], raw[57 + i * 97 + 33: 57 + (i + 1) * 97]
        if key not in members or (prev is not None and key <= prev):
            fail(f"block {height}: certificate signer")
        if not verify_sig(key, digest, sig):
            fail(f"block {height}: certificate signature")
        prev = key
    if count < q:
        fail(f"block {height}: certificate without a quorum")
    return checkpoint


def trie_commitment(g):
    return {"flat": False, "trie": True}[g.get("state_commitment", "flat")]


def trie_root(entries):
    """§7.2: entries are (key, value) byte strings with unique keys."""
    leaves = sorted((H(b"gridlet/trie/path", k), H(b"gridlet/trie/leaf", k, v)) for k, v in entries)

    def node(s, d):
        if not s:
            return bytes(32)
        if len(s) == 1:
            return s[0][1]
        zero = [e for e in s if not (e[0][d // 8] >> (7 - d % 8)) & 1]
        one = [e for e in s if (e[0][d // 8] >> (7 - d % 8)) & 1]
        return H(b"gridlet/trie/node", node(zero, d + 1), node(one, d + 1))
    return node(leaves, 0)


def flat_or_root(trie, entries):
    if trie:
        return trie_root(entries)
    return u32(len(entries)) + b"".join(k + v for k, v in entries)


def genesis_hash(g):
    s = g["selection"]
    rule = {"paper": 0, "proportional": 1}[s["rule"]]
    out = var(g["chain_id"].encode()) + u64(g["genesis_time_ms"]) + u64(g["slot_ms"]) \
        + finality(g) + u64(g["tx_fee"]) + u64(g["grid_tariff"]) \
        + u64(g["floor_price"]) + u32(g["max_block_txs"]) + u8(rule) \
        + u64(s["alpha"]) + u64(s["beta"]) + u64(s["gamma"]) + u64(s["window_blocks"]) \
        + u64(s["age_cap"]) + u64(s["reputation_cap"]) + u32(s["fallback_ranks"]) \
        + u64(s["fallback_delay_ms"])
    m = g.get("market", {"delivery_blocks": 60, "auction_round_blocks": 20, "pricing": "pay_as_bid"})
    out += u64(m["delivery_blocks"]) + u64(m.get("delivery_power_w", 2000)) \
        + u64(m["auction_round_blocks"]) \
        + u8({"pay_as_bid": 0, "uniform": 1}[m["pricing"]])
    sch = g.get("schedule")
    if sch is None:
        out += u8(0)
    else:
        out += u8(1) + u32(sch["intervals"]) + u32(sch["interval_min"]) + u64(sch["feeder_w"]) \
            + u32(len(sch.get("import_prices", []))) \
            + b"".join(u64(x) for x in sch.get("import_prices", [])) \
            + u64(sch["feed_in_price"]) + u64(sch["rho_milli"]) + u64(sch["tolerance_w"]) \
            + u32(sch["max_iterations"])
    out += u32(len(g["members"]))
    for m in g["members"]:
        out += var(m["name"].encode()) + bytes.fromhex(m["key"]) + bytes.fromhex(m["attestor"]) \
            + equipment(m) + u64(m["balance"])
    # Retention (§12.9) came later: a genesis without it keeps the v1 encoding and tag.
    retention = g.get("market", {}).get("retention_blocks", 0)
    if trie_commitment(g):
        return H(b"gridlet/genesis/v3", out + u64(retention) + u8(1))
    if retention > 0:
        return H(b"gridlet/genesis/v2", out + u64(retention))
    return H(b"gridlet/genesis/v1", out)


def verify_sig(key33, digest, sig64):
    if int.from_bytes(sig64[32:], "big") > ORDER // 2:
        return False  # high S is invalid
    vk = VerifyingKey.from_string(key33, curve=SECP256k1)
    try:
        return vk.verify_digest(sig64, digest, sigdecode=sigdecode_string)
    except BadSignatureError:
        return False


def merkle_root(ids):
    leaves = [H(b"\x00", i) for i in ids]

    def mth(ls):
        if not ls:
            return H(b"")
        if len(ls) == 1:
            return ls[0]
        k = 1
        while k * 2 < len(ls):
            k *= 2
        return H(b"\x01", mth(ls[:k]), mth(ls[k:]))
    return mth(leaves)


def equipment(m):
    """A member's signer byte, battery Wh and PV W (protocol.md §3)."""
    e = m["equipment"]
    signer = {"gateway": 0, "device": 1}[e["signer"]]
    return bytes([signer]) + u64(e["battery_wh"]) + u64(e["pv_w"])


def main():
    genesis = json.load(open(sys.argv[1]))
    chain_id = genesis_hash(genesis)
    sel = genesis["selection"]
    members = sorted(bytes.fromhex(m["key"]) for m in genesis["members"])
    accounts = {bytes.fromhex(m["key"]): [m["balance"], 0] for m in genesis["members"]}
    roster = {bytes.fromhex(m["key"]): (m["name"].encode(), bytes.fromhex(m["attestor"]),
                                        equipment(m))
              for m in genesis["members"]}
    community = 0
    last_produced = {}
    recent = []  # (height, producer, [(key, wh)])
    prev_hash, height, slot = chain_id, 0, 0
    state_hash = None
    q, checkpoint, finalized, certificates = quorum(genesis), 0, 0, 0

    for line in open(sys.argv[2]):
        b = json.loads(line)
        hdr = bytes.fromhex(b["header_hex"])
        if len(hdr) != 1 + 32 + 8 + 8 + 32 + 32 + 4 + 32 + 33 or hdr[0] != 1:
            fail(f"block {b['height']}: header length/version")
        f_chain, f_height, f_slot = hdr[1:33], struct.unpack(">Q", hdr[33:41])[0], struct.unpack(">Q", hdr[41:49])[0]
        f_prev, f_root = hdr[49:81], hdr[81:113]
        f_count = struct.unpack(">I", hdr[113:117])[0]
        f_state, f_producer = hdr[117:149], hdr[149:182]
        bhash = H(b"gridlet/block/v1", hdr)
        if bhash.hex() != b["hash"]:
            fail(f"block {f_height}: hash")
        if f_chain != chain_id:
            fail(f"block {f_height}: chain id")
        if f_height != height + 1 or f_prev != prev_hash or f_slot <= slot:
            fail(f"block {f_height}: link (height/prev/slot)")
        if not verify_sig(f_producer, bhash, bytes.fromhex(b["signature"])):
            fail(f"block {f_height}: producer signature")
        if b.get("certificate"):
            checkpoint = verify_certificate(bytes.fromhex(b["certificate"]), chain_id, members, q,
                                            f_height, bhash, checkpoint)
            finalized, certificates = f_height, certificates + 1

        # Election: the producer must be within the first fallback_ranks under the paper rule.
        nxt = height + 1
        traded, produced = {}, {}
        for (_, p, tw) in recent:
            produced[p] = produced.get(p, 0) + 1
            for k, wh in tw:
                traded[k] = traded.get(k, 0) + wh
        cands = []
        for k in members:
            e = traded.get(k, 0) // 1000
            a = min(nxt - last_produced.get(k, 0), sel["age_cap"])
            r = min(produced.get(k, 0), sel["reputation_cap"])
            w = sel["alpha"] * e + sel["beta"] * a + sel["gamma"] * r
            u = int.from_bytes(H(b"gridlet/u/v1", prev_hash, u64(f_slot), k)[:8], "big")
            cands.append((w, u, k))
        if sel["rule"] != "paper":
            fail("this verifier implements the paper rule only")
        from functools import cmp_to_key

        def cmp(x, y):
            lx, rx = x[0] * (y[1] + 1), y[0] * (x[1] + 1)
            if lx != rx:
                return -1 if lx > rx else 1
            if x[1] != y[1]:
                return -1 if x[1] < y[1] else 1
            return -1 if x[2] < y[2] else (1 if x[2] > y[2] else 0)
        ranked = [c[2] for c in sorted(cands, key=cmp_to_key(cmp))][: sel["fallback_ranks"]]
        if f_producer not in ranked:
            fail(f"block {f_height}: producer not elected")

        ids = []
        for t in b["transactions"]:
            raw = bytes.fromhex(t["hex"])
            tid = H(b"gridlet/txid/v1", raw)
            if tid.hex() != t["id"]:
                fail(f"block {f_height}: tx id")
            ids.append(tid)
            body, sig = raw[:-64], raw[-64:]
            if body[0] != 1 or body[1:33] != chain_id:
                fail(f"block {f_height}: tx version/chain")
            sender = body[33:66]
            nonce, fee = struct.unpack(">QQ", body[66:82])
            kind = body[82]
            if kind != 1 or len(body) != 83 + 33 + 8:
                fail(f"block {f_height}: unknown tx kind {kind}")
            to, amount = body[83:116], struct.unpack(">Q", body[116:124])[0]
            if sender not in accounts or to not in accounts:
                fail(f"block {f_height}: non-member")
            if not verify_sig(sender, H(b"gridlet/tx/v1", body), sig):
                fail(f"block {f_height}: tx signature")
            bal, n = accounts[sender]
            if fee != genesis["tx_fee"] or nonce != n or amount == 0 or to == sender or bal < amount + fee:
                fail(f"block {f_height}: tx rule")
            accounts[sender] = [bal - amount - fee, n + 1]
            accounts[to][0] += amount
            community += fee
        if len(ids) != f_count or merkle_root(ids) != f_root:
            fail(f"block {f_height}: merkle root / count")

        height, slot = f_height, f_slot
        last_produced[f_producer] = height
        recent.append((height, f_producer, []))
        recent = recent[-sel["window_blocks"]:]
        enc = u64(height) + u64(slot) + u64(community) + u32(len(accounts))
        for k in sorted(accounts):
            enc += k + u64(accounts[k][0]) + u64(accounts[k][1])
        enc += u32(len(last_produced))
        for k in sorted(last_produced):
            enc += k + u64(last_produced[k])
        trie = trie_commitment(genesis)
        enc += flat_or_root(trie, [(u64(h), p + u32(len(tw)) + b"".join(k + u64(wh) for k, wh in tw))
                                   for (h, p, tw) in recent])
        # Market (transfers only here): escrow 0, no attestations, contracts or trades, then
        # rounds, scheduled days, home totals, the first day a schedule can be committed for.
        enc += u64(0) + flat_or_root(trie, []) * 3 + u32(0) + u32(0) + u32(0) + u64(0)
        # No double votes recorded, nobody excluded from the ranking.
        enc += u32(0) + u32(0)
        # Membership (§7.1): genesis's members, since height 0; no open proposals.
        enc += u32(len(roster))
        for k in sorted(roster):
            name, attestor, eq = roster[k]
            enc += k + var(name) + attestor + eq + u64(0)
        enc += u32(0)
        state_hash = H(b"gridlet/state/v2" if trie else b"gridlet/state/v1", enc)
        if state_hash != f_state:
            fail(f"block {f_height}: state hash")
        prev_hash = bhash

    print(json.dumps({"height": height, "tip_hash": prev_hash.hex(),
                      "state_hash": state_hash.hex() if state_hash else None,
                      "finalized_height": finalized, "certificates": certificates}))


if __name__ == "__main__":
    main()
