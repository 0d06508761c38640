//! `gridlet bench ledger`: validation throughput beside the raw signature rate of the same
//! signatures (pre-parsed: the library's best case), in interleaved repetitions so that a
//! noisy or slow machine shows in both; the ratio is the median of the repetitions' ratios.

use gridlet_ledger::MicroCredits;
use std::time::{Duration, Instant};

use anyhow::Result;
use gridlet_ledger::chain::{validate_block, Checks};
use gridlet_ledger::crypto::{deterministic_key, Hash32, Signature};
use gridlet_ledger::genesis::Member;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::state::Rules;
use gridlet_ledger::store::{PersistentChain, RedbStore};
use gridlet_ledger::{Block, Chain, Genesis, LedgerState, MemberKey, Transaction, TxPayload};
use secp256k1::SecretKey;
use serde_json::json;

const MEMBERS: usize = 20;
const TXS_PER_BLOCK: usize = 1_000;
const BLOCKS: usize = 6;

/// Runs `f` repeatedly for at least `min` and returns operations per second, where each call
/// performs `ops` operations.
fn rate(min: Duration, ops: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    let mut calls = 0usize;
    while start.elapsed() < min {
        f();
        calls += 1;
    }
    (calls * ops) as f64 / start.elapsed().as_secs_f64()
}

struct Fixture {
    genesis: Genesis,
    rules: Rules,
    /// (parent hash, parent state, block)
    blocks: Vec<(Hash32, LedgerState, Block)>,
}

fn fixture() -> Result<Fixture> {
    let keys: Vec<SecretKey> = (0..MEMBERS as u64)
        .map(|i| deterministic_key(99, i))
        .collect();
    let members = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Member {
            name: format!("bench-{i}"),
            key: MemberKey::from_secret(k),
            attestor: MemberKey::from_secret(&deterministic_key(100, i as u64)),
            equipment: gridlet_ledger::genesis::Equipment::device(20_000, 10_000),
            balance: MicroCredits::new(1_000_000_000),
        })
        .collect();
    let genesis = Genesis::with_defaults("bench", 0, members, SelectionRule::Paper);
    let rules = Rules::from_genesis(&genesis)?;
    let mut chain = Chain::new(genesis.clone())?;
    let mut nonces = [0u64; MEMBERS];
    let mut blocks = Vec::new();
    for slot in 1..=BLOCKS as u64 {
        let txs: Vec<_> = (0..TXS_PER_BLOCK)
            .map(|i| {
                let from = i % MEMBERS;
                let to = (i + 1 + i / MEMBERS) % MEMBERS;
                let to = if to == from { (to + 1) % MEMBERS } else { to };
                let t = Transaction {
                    chain_id: genesis.hash(),
                    sender: MemberKey::from_secret(&keys[from]),
                    nonce: nonces[from],
                    fee: genesis.tx_fee,
                    payload: TxPayload::Transfer {
                        to: MemberKey::from_secret(&keys[to]),
                        amount: MicroCredits::new(1 + i as u64),
                    },
                }
                .sign(&keys[from]);
                nonces[from] += 1;
                t
            })
            .collect();
        let producer = chain.ranked_producers(slot)[0];
        let sk = keys
            .iter()
            .find(|k| MemberKey::from_secret(k) == producer)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("producer is a member"))?;
        let produced = chain.produce(&sk, slot, &txs)?;
        anyhow::ensure!(
            produced.block.transactions.len() == TXS_PER_BLOCK,
            "bench block rejected transactions: {:?}",
            produced.rejected.first()
        );
        let parent = (chain.head_hash(), chain.head_state().clone());
        chain.insert(produced.block.clone(), Checks::FULL)?;
        blocks.push((parent.0, parent.1, produced.block));
    }
    Ok(Fixture {
        genesis,
        rules,
        blocks,
    })
}

fn validate_all(f: &Fixture, threads: usize) {
    for (parent_hash, parent_state, block) in &f.blocks {
        let ok = validate_block(
            &f.rules,
            parent_hash,
            parent_state,
            block,
            Checks::FULL,
            threads,
        );
        assert!(ok.is_ok(), "bench block must validate: {:?}", ok.err());
    }
}

/// Signatures, digests and keys of the fixture's transactions, parsed beforehand: the
/// library's best case for the same verifications the validation makes.
type Prepared = Vec<(
    secp256k1::ecdsa::Signature,
    secp256k1::Message,
    secp256k1::PublicKey,
)>;

fn prepared(f: &Fixture) -> Result<Prepared> {
    f.blocks
        .iter()
        .flat_map(|(_, _, b)| b.transactions.iter())
        .map(|t| {
            let sig = secp256k1::ecdsa::Signature::from_compact(&t.signature().0)?;
            let msg = secp256k1::Message::from_digest(t.tx().signing_digest().0);
            let key = t.tx().sender.to_public_key()?;
            Ok((sig, msg, key))
        })
        .collect()
}

/// Interleaved repetitions of the figures (reference first in each), so that a slow or noisy
/// moment of the machine lands in the reference and the subject alike.
const REPETITIONS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Prints one JSON line with the ledger figures.
pub fn ledger(seconds: f64) -> Result<serde_json::Value> {
    let f = fixture()?;
    let txs = BLOCKS * TXS_PER_BLOCK;
    let reference = prepared(&f)?;
    let verify_prepared = || {
        for (sig, msg, key) in &reference {
            assert!(secp256k1::ecdsa::verify(sig, *msg, key).is_ok());
        }
    };
    // Each repetition times the reference, then 1 and 2 threads, for a third of its share.
    let burst = Duration::from_secs_f64(seconds / REPETITIONS as f64 / 3.0);
    let (mut raw, mut one, mut two) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ratio1, mut ratio2) = (Vec::new(), Vec::new());
    for _ in 0..REPETITIONS {
        let r = rate(burst, txs, verify_prepared);
        let a = rate(burst, txs, || validate_all(&f, 1));
        let b = rate(burst, txs, || validate_all(&f, 2));
        ratio1.push(a / r);
        ratio2.push(b / r);
        raw.push(r);
        one.push(a);
        two.push(b);
    }
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        [round3(lo), round3(hi)]
    };
    let (spread1, spread2) = (spread(&ratio1), spread(&ratio2));
    let raw = median(raw);
    let one = median(one);
    let two = median(two);
    let ratio_1core = median(ratio1);
    let ratio_2core = median(ratio2);

    // Commit: full validation (2 threads), redb put and durable commit, per block of 1 000 transfers.
    let min = Duration::from_secs_f64(seconds);
    let dir = std::env::temp_dir().join(format!("gridlet-bench-{}", std::process::id()));
    let genesis_chain_blocks: Vec<Block> = f.blocks.iter().map(|(_, _, b)| b.clone()).collect();
    let genesis = f.genesis.clone();
    let mut rounds = 0usize;
    let start = Instant::now();
    while start.elapsed() < min || rounds == 0 {
        let _ = std::fs::remove_dir_all(&dir);
        let (mut pc, _) = PersistentChain::open(RedbStore::open(&dir)?, genesis.clone(), u64::MAX)?;
        pc.chain_mut().set_verify_threads(2);
        for b in &genesis_chain_blocks {
            pc.commit(b.clone(), Checks::FULL)?;
        }
        rounds += 1;
    }
    let commit = (rounds * BLOCKS) as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);

    Ok(json!({
        "bench": "ledger",
        "raw_verify_per_s": raw.round(),
        "validate_tx_per_s_1core": one.round(),
        "validate_tx_per_s_2core": two.round(),
        "ratio_1core": round3(ratio_1core),
        "ratio_2core": round3(ratio_2core),
        "ratio_1core_range": spread1,
        "ratio_2core_range": spread2,
        "repetitions": REPETITIONS,
        "commit_blocks_per_s": (commit * 10.0).round() / 10.0,
        "txs_per_block": TXS_PER_BLOCK,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
    }))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `gridlet bench modbus`: a bare tokio-modbus round trip beside a full read cycle (inverter,
/// battery, meter) through our drivers, against the simulators on loopback, in the same run.
pub async fn modbus(seconds: f64) -> Result<serde_json::Value> {
    use std::collections::BTreeMap;

    use gridlet_drivers::device::{DeviceSettings, SunSpecDevice};
    use gridlet_drivers::modbus::{sunspec_scan, Endpoint, LinkConfig, ModbusLink};
    use gridlet_drivers::quality::Limits;
    use gridlet_drivers::sunspec::WordOrder;
    use gridlet_hil::{FaultPlan, ModbusSim, SimDevice};
    use tokio_modbus::client::Reader;
    use tokio_modbus::prelude::SlaveContext;

    let mut devices = BTreeMap::new();
    devices.insert(1, SimDevice::inverter(40000, 6000, 12 * 3_600_000));
    devices.insert(2, SimDevice::battery(40000, 10_000, 5_000, 50));
    devices.insert(3, SimDevice::meter(40000, 800));
    let sim = ModbusSim::start("127.0.0.1:0".parse()?, devices, FaultPlan::default()).await?;
    let min = Duration::from_secs_f64(seconds);

    let mut link = ModbusLink::new(LinkConfig::new(Endpoint::Tcp(sim.addr)));
    let mut roles = Vec::new();
    for unit in [1u8, 2, 3] {
        let scan = sunspec_scan(&mut link, unit, WordOrder::BigEndian)
            .await?
            .ok_or_else(|| anyhow::anyhow!("simulator unit {unit} has no SunSpec marker"))?;
        roles.push(SunSpecDevice::from_scan(
            DeviceSettings {
                unit,
                order: WordOrder::BigEndian,
                invert: false,
                limits: Limits { nameplate_w: None },
                stale_after: Duration::from_secs(10),
            },
            &scan,
        ));
    }
    // The three requests a cycle makes: (unit, address, count) of models 103, 802 and 203.
    let requests: Vec<(u8, u16, u16)> = roles
        .iter()
        .zip([103u16, 802, 203])
        .filter_map(|(d, id)| {
            d.models()
                .iter()
                .find(|m| m.id == id)
                .map(|m| (d.settings_unit(), m.address, m.length + 2))
        })
        .collect();
    anyhow::ensure!(requests.len() == 3, "simulator models missing");

    // Raw: tokio-modbus alone, same requests, own connection.
    let mut raw_ctx = tokio_modbus::client::tcp::connect(sim.addr).await?;
    let mut raw = Vec::new();
    let start = Instant::now();
    while start.elapsed() < min || raw.len() < 300 {
        for (unit, addr, count) in &requests {
            raw_ctx.set_slave(tokio_modbus::Slave(*unit));
            let t = Instant::now();
            let words = raw_ctx.read_holding_registers(*addr, *count).await??;
            raw.push(t.elapsed().as_secs_f64() * 1e6);
            anyhow::ensure!(words.len() == usize::from(*count));
        }
    }

    // Cycle: our drivers, decode and quality included.
    let mut cycles = Vec::new();
    let start = Instant::now();
    let mut valid = 0u64;
    while start.elapsed() < min || cycles.len() < 100 {
        let t = Instant::now();
        let pv = roles[0].read_pv(&mut link).await;
        let bat = roles[1].read_battery(&mut link).await;
        let met = roles[2].read_meter(&mut link).await;
        cycles.push(t.elapsed().as_secs_f64() * 1e6);
        if pv.power_w.is_valid() && bat.soc_pct.is_valid() && met.power_w.is_valid() {
            valid += 1;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        valid == cycles.len() as u64,
        "invalid readings during the benchmark"
    );
    raw.sort_by(f64::total_cmp);
    let n_cycles = cycles.len();
    cycles.sort_by(f64::total_cmp);
    let raw_p50 = percentile(&raw, 0.5);
    let cycle_p50 = percentile(&cycles, 0.5);
    Ok(json!({
        "bench": "modbus",
        "raw_rtt_p50_us": raw_p50.round(),
        "raw_rtt_p99_us": percentile(&raw, 0.99).round(),
        "cycle_p50_us": cycle_p50.round(),
        "cycle_p99_us": percentile(&cycles, 0.99).round(),
        "cycles_per_s": (n_cycles as f64 / wall).round(),
        "requests_per_cycle": requests.len(),
        "ratio": (cycle_p50 / (raw_p50 * requests.len() as f64) * 1000.0).round() / 1000.0,
    }))
}

/// `gridlet bench market`: clearing 100 000 bids against 100 sellers beside sorting 100 000
/// integers, in the same run (medians of repeated runs).
pub fn market(seconds: f64) -> Result<serde_json::Value> {
    use gridlet_ledger::market::clearing::{Bid, SellerOffer};
    use gridlet_ledger::market::{clear, ClearingInput, Pricing};

    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let input = ClearingInput {
        grid_tariff: 300_000,
        floor_price: 50_000,
        pricing: Pricing::PayAsBid,
        sellers: (0..100)
            .map(|i| SellerOffer {
                id: format!("s{i}"),
                energy_wh: 1_000 + next() % 20_000,
            })
            .collect(),
        bids: (0..100_000u64)
            .map(|i| Bid {
                id: format!("b{i}"),
                energy_wh: (next() % 5_000) as i64,
                price: 40_000 + (next() % 270_000) as i64,
                seq: i,
            })
            .collect(),
    };
    let ints: Vec<u64> = (0..100_000).map(|_| next()).collect();
    let min = Duration::from_secs_f64(seconds);
    let (mut clear_ms, mut sort_ms) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while start.elapsed() < min || clear_ms.len() < 5 {
        let mut v = ints.clone();
        let t = Instant::now();
        v.sort_unstable();
        sort_ms.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(&v);
        let t = Instant::now();
        let out = clear(&input)?;
        clear_ms.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(&out);
    }
    clear_ms.sort_by(f64::total_cmp);
    sort_ms.sort_by(f64::total_cmp);
    let (c, s) = (percentile(&clear_ms, 0.5), percentile(&sort_ms, 0.5));
    Ok(json!({
        "bench": "market",
        "bids": input.bids.len(),
        "sellers": input.sellers.len(),
        "clear_ms": (c * 1000.0).round() / 1000.0,
        "sort_ms": (s * 1000.0).round() / 1000.0,
        "ratio": (c / s * 1000.0).round() / 1000.0,
        "runs": clear_ms.len(),
    }))
}

/// `gridlet bench trades`: slots from a purchase being submitted to its release order, over
/// 1 000 trades in a 5-home community on the virtual clock (1 s slots, quorum finality).
pub fn trades(count: usize) -> Result<serde_json::Value> {
    use std::collections::BTreeMap;

    use gridlet_core::node::Input;
    use gridlet_hil::lockstep::LockstepNet;
    use gridlet_ledger::market::book::ContractStatus;
    use gridlet_ledger::market::{attestation_digest, MarketEvent};
    use gridlet_ledger::tx::Attestation;
    use gridlet_ledger::{Hash32, SignedTransaction, TxPayload};
    use gridlet_ledger::{Price, WattHours};

    const HOMES: usize = 5;
    let keys: Vec<SecretKey> = (0..HOMES as u64)
        .map(|i| deterministic_key(700, i))
        .collect();
    let attestors: Vec<SecretKey> = (0..HOMES as u64)
        .map(|i| deterministic_key(701, i))
        .collect();
    let members = (0..HOMES)
        .map(|i| Member {
            name: format!("home-{i}"),
            key: MemberKey::from_secret(&keys[i]),
            attestor: MemberKey::from_secret(&attestors[i]),
            equipment: gridlet_ledger::genesis::Equipment::device(20_000, 10_000),
            balance: MicroCredits::new(1_000_000_000),
        })
        .collect();
    let genesis = Genesis::with_defaults("bench-trades", 0, members, SelectionRule::Paper);
    let chain_id = genesis.hash();
    let mut net = LockstepNet::new(&genesis, &keys)?;
    let per_seller = count.div_ceil(HOMES);
    // Each home attests generation and offers `per_seller` small contracts.
    for (i, att) in attestors.iter().enumerate() {
        let me = MemberKey::from_secret(&keys[i]);
        let wh = WattHours::new(10 * per_seller as u64);
        let digest = attestation_digest(&chain_id, &me, 0, wh);
        let a = Attestation {
            interval: 0,
            energy_wh: wh,
            signature: Signature::sign(&digest, att),
        };
        net.input(i, Input::Sign(Box::new(TxPayload::Attest(a))))?;
        for _ in 0..per_seller {
            net.input(
                i,
                Input::Sign(Box::new(TxPayload::Sale {
                    mode: gridlet_ledger::DeliveryMode::Discharge,
                    energy_wh: WattHours::new(10),
                    price: Price::new(100_000),
                    expiry_height: 1_000_000,
                    attestation: None,
                })),
            )?;
        }
    }
    let offered = |net: &LockstepNet| {
        net.nodes[0]
            .chain()
            .chain()
            .head_state()
            .market()
            .contracts
            .values()
            .filter(|c| c.status == ContractStatus::Open)
            .count()
    };
    let mut guard = 0;
    while offered(&net) < per_seller * HOMES {
        net.step(100)?;
        guard += 1;
        anyhow::ensure!(guard < 10_000, "offers never made it on chain");
    }
    // Purchases: 20 a slot, each home buying from the next home's contracts.
    let mut open: Vec<(Hash32, MemberKey)> = net.nodes[0]
        .chain()
        .chain()
        .head_state()
        .market()
        .contracts
        .iter()
        .map(|(id, c)| (*id, c.seller))
        .collect();
    open.truncate(count);
    let mut submitted: BTreeMap<Hash32, u64> = BTreeMap::new();
    let mut released: BTreeMap<Hash32, u64> = BTreeMap::new();
    let slot_ms = genesis.slot_ms;
    let mut steps = 0u64;
    while released.len() < open.len() {
        if steps.is_multiple_of(10) {
            for _ in 0..20 {
                let Some((contract, seller)) = open.get(submitted.len()).copied() else {
                    break;
                };
                let seller_i = (0..HOMES)
                    .find(|i| MemberKey::from_secret(&keys[*i]) == seller)
                    .unwrap_or(0);
                let buyer = (seller_i + 1) % HOMES;
                net.input(
                    buyer,
                    Input::Sign(Box::new(TxPayload::Purchase {
                        contract,
                        payment: MicroCredits::new(1_000),
                    })),
                )?;
                let hex = net.published_txs[buyer].last().cloned().unwrap_or_default();
                let tx = SignedTransaction::decode(
                    &gridlet_ledger::codec::from_hex(&hex).unwrap_or_default(),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                submitted.insert(tx.id(), net.now_ms);
            }
        }
        net.step(100)?;
        steps += 1;
        for (at, e) in net.events.drain(..) {
            if let MarketEvent::Release { trade, .. } = e {
                released.entry(trade).or_insert(at);
            }
        }
        anyhow::ensure!(
            steps < 200_000,
            "releases stalled at {} of {}",
            released.len(),
            open.len()
        );
    }
    let mut slots: Vec<f64> = released
        .iter()
        .filter_map(|(t, at)| submitted.get(t).map(|s| (at - s) as f64 / slot_ms as f64))
        .collect();
    slots.sort_by(f64::total_cmp);
    Ok(json!({
        "bench": "trades",
        "trades": slots.len(),
        "p50_slots": (percentile(&slots, 0.5) * 10.0).round() / 10.0,
        "p99_slots": (percentile(&slots, 0.99) * 10.0).round() / 10.0,
        "max_slots": (slots.last().copied().unwrap_or(0.0) * 10.0).round() / 10.0,
        "quorum": genesis.finality.quorum(genesis.members.len()),
        "homes": HOMES,
        "slot_ms": slot_ms,
    }))
}
