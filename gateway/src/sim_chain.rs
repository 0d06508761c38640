//! `gridlet sim` (ledger and market stage): a community of homes on one machine, each with its
//! own data directory, block store and signer guard, producing and validating Proof-of-Stake
//! blocks over a simulated day. Each home's battery attests the hour's surplus solar energy
//! (the same solar profile as the HIL inverter), homes offer it in sale contracts, homes short
//! of energy buy, release orders go out once purchases are final, and the seller's battery
//! reports what it delivered. Devices over Modbus/DSMR/MQTT and the bus join this loop with the
//! gateway issue; the decisions here stand in for the market actor's strategy.

use gridlet_ledger::{MicroCredits, Price, WattHours};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use gridlet_ledger::chain::Checks;
use gridlet_ledger::crypto::{deterministic_key, Signature};
use gridlet_ledger::genesis::Member;
use gridlet_ledger::market::book::ContractStatus;
use gridlet_ledger::market::clearing::payment;
use gridlet_ledger::market::{attestation_digest, receipt_digest, MarketEvent};
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::store::{BlockStore, MemStore, PersistentChain, RedbStore, SignerGuard};
use gridlet_ledger::tx::Attestation;
use gridlet_ledger::{Genesis, MemberKey, SignedTransaction, Transaction, TxPayload};
use secp256k1::SecretKey;
use serde_json::json;

use crate::chain_cmd;
use crate::keys;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Number of homes.
    pub homes: usize,
    /// Number of slots to play.
    pub slots: u64,
    /// Seed for keys and the scenario.
    pub seed: u64,
    /// Report directory (`homes/<n>/` data dirs and `report.json`).
    pub report: PathBuf,
    /// Producer selection rule.
    pub rule: SelectionRule,
    /// Transfers submitted per slot across the community.
    pub txs_per_slot: usize,
    /// Percent of slots in which the elected producer is silent and a fallback produces.
    pub silent_percent: u64,
    /// Whether homes trade energy (false: credit transfers only).
    pub market: bool,
    /// The genesis retention window, blocks (0: nothing is retired).
    pub retention_blocks: u64,
    /// Blocks in a simulated day: the scenario's sun and hourly attestations repeat each day,
    /// and the report gives per-day figures (none: the whole run is one day).
    pub day_blocks: Option<u64>,
    /// Keep each home's blocks in memory instead of redb (no disk, no fsync: measures the
    /// ledger alone over long runs; the data dirs then hold no chain).
    pub memory_store: bool,
    /// The genesis `state_commitment`.
    pub state_commitment: gridlet_ledger::genesis::StateCommitment,
}

/// splitmix64: the scenario's reproducible randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Home {
    name: String,
    key: SecretKey,
    attestor: SecretKey,
    member: MemberKey,
    chain: PersistentChain<Box<dyn BlockStore>>,
    /// `None` with the memory store: a measurement run signs without the guard's fsync.
    guard: Option<SignerGuard>,
    /// Nonces used by transactions built in the current slot.
    pending: u64,
    nameplate_w: u32,
    load_w: u32,
}

/// Runs the scenario and returns the summary (also written to `report.json`).
/// The certificate every home would sign for `block` at checkpoint `checkpoint`.
fn certify(
    homes: &[Home],
    chain_id: &gridlet_ledger::Hash32,
    checkpoint: u64,
    block: &gridlet_ledger::Block,
) -> gridlet_ledger::finality::Certificate {
    let block = gridlet_ledger::finality::BlockRef {
        height: block.header.height,
        hash: block.hash(),
    };
    gridlet_ledger::finality::Certificate::signed_by(
        chain_id,
        checkpoint,
        0,
        block,
        homes.iter().map(|h| &h.key),
    )
}

pub fn run(o: &SimOptions) -> Result<serde_json::Value> {
    ensure!(o.homes >= 2, "--homes must be at least 2");
    let homes_dir = o.report.join("homes");
    if homes_dir.exists() {
        bail!(
            "{} already exists: choose another --report or delete it",
            homes_dir.display()
        );
    }
    let keys: Vec<SecretKey> = (0..o.homes as u64)
        .map(|i| deterministic_key(o.seed, i))
        .collect();
    let members: Vec<Member> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Member {
            name: format!("home-{i}"),
            key: MemberKey::from_secret(k),
            attestor: MemberKey::from_secret(&deterministic_key(o.seed ^ 0xE55, i as u64)),
            equipment: gridlet_ledger::genesis::Equipment::device(20_000, 10_000),
            balance: MicroCredits::new(100_000_000),
        })
        .collect();
    let mut genesis = Genesis::with_defaults(
        &format!("gridlet-sim-{}", o.seed),
        0,
        members.clone(),
        o.rule,
    );
    genesis.market.retention_blocks = o.retention_blocks;
    genesis.state_commitment = o.state_commitment;
    let initial_credits: u128 = members.iter().map(|m| u128::from(m.balance.get())).sum();

    let mut homes = Vec::with_capacity(o.homes);
    for (i, k) in keys.iter().enumerate() {
        let dir = homes_dir.join(i.to_string());
        chain_cmd::install_genesis(&dir, &genesis)?;
        keys::write_new(&dir.join("home.key"), k)?;
        let store: Box<dyn BlockStore> = if o.memory_store {
            Box::new(MemStore::default())
        } else {
            Box::new(RedbStore::open(&dir).with_context(|| format!("opening {}", dir.display()))?)
        };
        let (chain, _) = PersistentChain::open(store, genesis.clone(), u64::MAX)
            .with_context(|| format!("opening {}", dir.display()))?;
        let guard = if o.memory_store {
            None
        } else {
            Some(SignerGuard::open(&dir, 0)?)
        };
        homes.push(Home {
            name: format!("home-{i}"),
            key: *k,
            attestor: deterministic_key(o.seed ^ 0xE55, i as u64),
            member: MemberKey::from_secret(k),
            chain,
            guard,
            pending: 0,
            nameplate_w: 0,
            load_w: 0,
        });
    }

    let mut rng = Rng(o.seed);
    for h in homes.iter_mut() {
        h.nameplate_w = 2_000 + rng.below(6_000) as u32;
        h.load_w = 300 + rng.below(1_200) as u32;
    }
    let chain_id = genesis.hash();
    // The scenario's day: `--day-blocks` slots, or the whole run as one day.
    let day = o.day_blocks.unwrap_or(o.slots).max(1);
    let slots_per_hour = (day / 24).max(1);
    let ms_per_slot = 86_400_000 / day;
    let mut mempool: Vec<SignedTransaction> = Vec::new();
    let mut to_deliver: Vec<(usize, gridlet_ledger::Hash32, u64)> = Vec::new();
    let mut releases: Vec<gridlet_ledger::Hash32> = Vec::new();
    let mut deliveries = 0u64;
    let mut settled = 0u64;
    let mut retired: std::collections::BTreeMap<gridlet_ledger::Hash32, bool> =
        std::collections::BTreeMap::new();
    let mut commit_ms: Vec<f64> = Vec::new();
    let mut produced_by: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_rank: BTreeMap<u32, u64> = BTreeMap::new();
    let mut committed_txs = 0u64;
    let mut rejected_txs = 0u64;
    let progress_every = (o.slots / 10).max(1);

    for slot in 1..=o.slots {
        let state = homes[0].chain.chain().head_state().clone();
        let height = state.height + 1;
        for h in homes.iter_mut() {
            h.pending = 0;
        }
        let sign = |homes: &mut Vec<Home>, i: usize, payload: TxPayload| -> SignedTransaction {
            let h = &mut homes[i];
            let nonce = state.account(&h.member).nonce + h.pending;
            h.pending += 1;
            Transaction {
                chain_id,
                sender: h.member,
                nonce,
                fee: genesis.tx_fee,
                payload,
            }
            .sign(&h.key)
        };
        let time_ms = slot * ms_per_slot;
        if !o.market {
            to_deliver.clear();
        }
        // Batteries report delivery of released trades.
        for (seller, trade, energy) in std::mem::take(&mut to_deliver) {
            let delivered = if rng.below(10) == 0 {
                energy * (50 + rng.below(50)) / 100
            } else {
                energy
            };
            let receipt = Signature::sign(
                &receipt_digest(&chain_id, &trade, WattHours::new(delivered)),
                &homes[seller].attestor,
            );
            let tx = sign(
                &mut homes,
                seller,
                TxPayload::Deliver {
                    trade,
                    delivered_wh: WattHours::new(delivered),
                    receipt,
                },
            );
            mempool.push(tx);
        }
        // Each hour, every battery attests the surplus it stored in the past hour.
        if o.market && slot % slots_per_hour == 0 {
            let hour = slot / slots_per_hour;
            for i in 0..homes.len() {
                let mid = time_ms.saturating_sub(1_800_000);
                let pv = gridlet_hil::devices::solar_profile_w(homes[i].nameplate_w, mid);
                let surplus_wh = WattHours::new(u64::from(pv.saturating_sub(homes[i].load_w)));
                if !surplus_wh.is_zero() {
                    let digest = attestation_digest(&chain_id, &homes[i].member, hour, surplus_wh);
                    let a = Attestation {
                        interval: hour,
                        energy_wh: surplus_wh,
                        signature: Signature::sign(&digest, &homes[i].attestor),
                    };
                    let tx = sign(&mut homes, i, TxPayload::Attest(a));
                    mempool.push(tx);
                }
            }
        }
        // Homes with attested energy offer part of it below the grid tariff.
        for i in 0..homes.len() {
            let sellable = state.market().sellable_wh(&homes[i].member).get();
            if o.market && sellable >= 200 && rng.below(3) == 0 {
                let wh = WattHours::new(sellable.min(200 + rng.below(1_800)));
                let (floor, tariff) = (genesis.floor_price.get(), genesis.grid_tariff.get());
                let price = Price::new(floor + rng.below(tariff - floor));
                let tx = sign(
                    &mut homes,
                    i,
                    TxPayload::Sale {
                        mode: gridlet_ledger::DeliveryMode::Discharge,
                        energy_wh: wh,
                        price,
                        expiry_height: height + 15,
                        attestation: None,
                    },
                );
                mempool.push(tx);
            }
        }
        // Homes short of energy now buy the cheapest open contract they can afford.
        let pv_now: Vec<u32> = homes
            .iter()
            .map(|h| gridlet_hil::devices::solar_profile_w(h.nameplate_w, time_ms))
            .collect();
        let mut open: Vec<(Price, gridlet_ledger::Hash32, MemberKey, MicroCredits)> = state
            .market()
            .contracts
            .iter()
            .filter(|(_, c)| c.status == ContractStatus::Open && c.expiry_height >= height)
            .filter_map(|(id, c)| {
                payment(c.energy_wh, c.price)
                    .ok()
                    .map(|pay| (c.price, *id, c.seller, pay))
            })
            .collect();
        open.sort();
        for i in 0..homes.len() {
            if !o.market || pv_now[i] >= homes[i].load_w || rng.below(3) != 0 {
                continue;
            }
            let balance = state.account(&homes[i].member).balance;
            if let Some(pos) = open.iter().position(|(_, _, seller, pay)| {
                *seller != homes[i].member
                    && pay
                        .checked_add(genesis.tx_fee)
                        .is_some_and(|p| p <= balance)
            }) {
                let (_, contract, _, pay) = open.remove(pos);
                let tx = sign(
                    &mut homes,
                    i,
                    TxPayload::Purchase {
                        contract,
                        payment: pay,
                    },
                );
                mempool.push(tx);
            }
        }
        // And some plain credit transfers.
        for _ in 0..o.txs_per_slot {
            let from = rng.below(o.homes as u64) as usize;
            let mut to = rng.below(o.homes as u64 - 1) as usize;
            if to >= from {
                to += 1;
            }
            let to_key = homes[to].member;
            let tx = sign(
                &mut homes,
                from,
                TxPayload::Transfer {
                    to: to_key,
                    amount: MicroCredits::new(1 + rng.below(50_000)),
                },
            );
            mempool.push(tx);
        }

        let ranked = homes[0].chain.chain().ranked_producers(slot);
        let silent_elected = rng.below(100) < o.silent_percent && ranked.len() > 1;
        let rank = if silent_elected { 2 } else { 1 };
        let producer_key = ranked[rank - 1];
        let p = homes
            .iter()
            .position(|h| h.member == producer_key)
            .context("elected producer is a home")?;
        let out = homes[p]
            .chain
            .chain()
            .produce(&homes[p].key, slot, &mempool)?;
        let block = out.block;
        if let Some(g) = homes[p].guard.as_mut() {
            g.authorize(slot, block.hash())?;
        }
        for (n, h) in homes.iter_mut().enumerate() {
            let started = std::time::Instant::now();
            h.chain
                .commit(
                    block.clone(),
                    Checks {
                        signatures: true,
                        current_slot: Some(slot),
                    },
                )
                .with_context(|| format!("{} rejected block {}", h.name, block.header.height))?;
            if n == 0 {
                commit_ms.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        // A perfect bus: every home precommits the new block in round 0 of its checkpoint, and
        // each home finalizes it with the certificate (what the Tendermint rounds produce).
        let cert = certify(&homes, &chain_id, block.header.height, &block);
        let mut events = Vec::new();
        for (n, h) in homes.iter_mut().enumerate() {
            let finalized = h
                .chain
                .finalize(cert.clone())
                .with_context(|| format!("{} refused certificate {}", h.name, cert.checkpoint))?;
            if n == 0 {
                events = finalized
                    .blocks
                    .into_iter()
                    .flat_map(|(_, ev)| ev)
                    .collect();
            }
        }
        for e in events {
            match e {
                MarketEvent::Release {
                    trade,
                    seller,
                    energy_wh,
                    ..
                } => {
                    releases.push(trade);
                    if let Some(i) = homes.iter().position(|h| h.member == seller) {
                        to_deliver.push((i, trade, energy_wh.get()));
                    }
                }
                MarketEvent::Settled { .. } => settled += 1,
                MarketEvent::Retired { trades, .. } => {
                    retired.extend(trades.into_iter().map(|(id, t)| (id, t.released)));
                }
                _ => {}
            }
        }
        deliveries += block
            .transactions
            .iter()
            .filter(|t| matches!(t.tx().payload, TxPayload::Deliver { .. }))
            .count() as u64;
        let included: HashSet<_> = block.transactions.iter().map(|t| t.id()).collect();
        let dropped: HashSet<_> = out.rejected.iter().map(|(id, _)| *id).collect();
        committed_txs += included.len() as u64;
        rejected_txs += dropped.len() as u64;
        // Everything submitted was either included or rejected: the next slot starts afresh.
        debug_assert_eq!(included.len() + dropped.len(), mempool.len());
        mempool.clear();
        *produced_by.entry(homes[p].name.clone()).or_default() += 1;
        *by_rank.entry(rank as u32).or_default() += 1;
        if slot % progress_every == 0 {
            tracing::info!(
                slot,
                height = block.header.height,
                txs = committed_txs,
                "simulated {}%",
                slot * 100 / o.slots
            );
        }
    }

    let tips: Vec<String> = homes
        .iter()
        .map(|h| h.chain.chain().head_hash().to_hex())
        .collect();
    let state = homes[0].chain.chain().head_state();
    let credits_conserved = state.total_credits() == initial_credits;
    let same_tip = tips.iter().all(|t| *t == tips[0]);
    let every_home_produced = homes.iter().all(|h| produced_by.contains_key(&h.name));
    let market = state.market();
    let mut unique = releases.clone();
    unique.sort();
    unique.dedup();
    // Retired trades count as they left the state.
    let releases_match_trades = unique.len() == releases.len()
        && releases
            .iter()
            .all(|t| market.trades.contains_key(t) || retired.contains_key(t))
        && market.trades.values().filter(|t| t.released).count()
            + retired.values().filter(|r| **r).count()
            == releases.len();
    let energy_traced = homes.iter().all(|h| market.provenance_holds(&h.member));
    let (wh_traded, wh_delivered, credits_to_sellers) = market.totals();
    let summary = json!({
        "homes": o.homes,
        "slots": o.slots,
        "rule": o.rule,
        "height": homes[0].chain.chain().head_height(),
        "finalized_height": homes[0].chain.chain().finalized().1,
        "tip_hash": tips[0],
        "state_hash": state.hash().to_hex(),
        "blocks_per_producer": produced_by,
        "blocks_by_rank": by_rank,
        "transactions_committed": committed_txs,
        "transactions_rejected": rejected_txs,
        "fees_to_community": state.community_balance(),
        "market": {
            "attested_wh": homes.iter().map(|h| market.attested_wh(&h.member).get()).sum::<u64>(),
            "contracts": market.contracts.len(),
            "trades": market.trades.len(),
            "trades_retired": retired.len(),
            "attestation_records": market.attestations.len(),
            "wh_traded": wh_traded,
            "releases": releases.len(),
            "deliveries_reported": deliveries,
            "wh_delivered": wh_delivered,
            "trades_settled": settled,
            "credits_paid_to_sellers": credits_to_sellers,
            "credits_in_escrow": market.escrow,
        },
        "invariants": {
            "credits_conserved": credits_conserved,
            "all_homes_same_tip": same_tip,
            "every_home_produced": every_home_produced,
            "every_release_matches_one_trade": releases_match_trades,
            "delivered_energy_traces_to_attested_generation": energy_traced,
        },
        // What one block costs home 0 (validation, state hash, store) as the chain grows:
        // the median of each tenth of the run, ms.
        "retention_blocks": o.retention_blocks,
        "commit_ms_median_by_tenth": medians_by_tenth(&commit_ms),
        // The same for each day of `--day-blocks` blocks (the scenario's PV and load follow a
        // day of 86 400 one-second slots: only whole days compare).
        "commit_ms_median_by_day": o.day_blocks.map(|d| medians_by_day(&commit_ms, d)),
        "resident_kb": resident_kb(),
        "memory_store": o.memory_store,
        "data_dirs": homes_dir.display().to_string(),
    });
    std::fs::write(
        o.report.join("report.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    ensure!(credits_conserved, "credits not conserved");
    ensure!(same_tip, "homes disagree on the tip: {tips:?}");
    ensure!(
        releases_match_trades,
        "release orders do not match trades one to one"
    );
    ensure!(
        energy_traced,
        "delivered energy does not trace back to attested generation"
    );
    Ok(summary)
}

/// The median of each whole day (`day` blocks) of `v`, rounded to µs.
fn medians_by_day(v: &[f64], day: u64) -> Vec<f64> {
    let day = usize::try_from(day.max(1)).unwrap_or(usize::MAX);
    v.chunks_exact(day)
        .map(|c| {
            let mut c = c.to_vec();
            c.sort_by(f64::total_cmp);
            let m = c.get(c.len() / 2).copied().unwrap_or(0.0);
            (m * 1000.0).round() / 1000.0
        })
        .collect()
}

/// The median of each tenth of `v`, rounded to µs.
fn medians_by_tenth(v: &[f64]) -> Vec<f64> {
    let n = v.len().div_ceil(10).max(1);
    v.chunks(n)
        .map(|c| {
            let mut c = c.to_vec();
            c.sort_by(f64::total_cmp);
            let m = c.get(c.len() / 2).copied().unwrap_or(0.0);
            (m * 1000.0).round() / 1000.0
        })
        .collect()
}

/// This process's resident memory (Linux `VmRSS`), KiB; 0 where it cannot be read.
fn resident_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
