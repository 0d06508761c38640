//! `gridlet sim` (ledger stage): a community of homes on one machine, each with its own data
//! directory, block store and signer guard, producing and validating Proof-of-Stake blocks of
//! credit transfers on a scenario clock. Devices, the market and the MQTT bus join this loop as
//! their issues land; today it shows the ledger at work end to end.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use gridlet_ledger::chain::Checks;
use gridlet_ledger::crypto::deterministic_key;
use gridlet_ledger::genesis::Member;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::store::{open_sled, PersistentChain, SignerGuard, SledStore};
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
    member: MemberKey,
    chain: PersistentChain<SledStore>,
    guard: SignerGuard,
    next_nonce: u64,
}

/// Runs the scenario and returns the summary (also written to `report.json`).
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
            balance: 100_000_000,
        })
        .collect();
    let genesis = Genesis::with_defaults(
        &format!("gridlet-sim-{}", o.seed),
        0,
        members.clone(),
        o.rule,
    );
    let initial_credits: u128 = members.iter().map(|m| u128::from(m.balance)).sum();

    let mut homes = Vec::with_capacity(o.homes);
    for (i, k) in keys.iter().enumerate() {
        let dir = homes_dir.join(i.to_string());
        chain_cmd::install_genesis(&dir, &genesis)?;
        keys::write_new(&dir.join("home.key"), k)?;
        let (chain, _) = open_sled(&dir, genesis.clone(), u64::MAX)
            .with_context(|| format!("opening {}", dir.display()))?;
        homes.push(Home {
            name: format!("home-{i}"),
            key: *k,
            member: MemberKey::from_secret(k),
            chain,
            guard: SignerGuard::open(&dir)?,
            next_nonce: 0,
        });
    }

    let mut rng = Rng(o.seed);
    let mut mempool: Vec<SignedTransaction> = Vec::new();
    let mut produced_by: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_rank: BTreeMap<u32, u64> = BTreeMap::new();
    let mut committed_txs = 0u64;
    let mut rejected_txs = 0u64;
    let progress_every = (o.slots / 10).max(1);

    for slot in 1..=o.slots {
        for _ in 0..o.txs_per_slot {
            let from = rng.below(o.homes as u64) as usize;
            let mut to = rng.below(o.homes as u64 - 1) as usize;
            if to >= from {
                to += 1;
            }
            let h = &mut homes[from];
            let tx = Transaction {
                chain_id: genesis.hash(),
                sender: h.member,
                nonce: h.next_nonce,
                fee: genesis.tx_fee,
                payload: TxPayload::Transfer {
                    to: MemberKey::from_secret(&keys[to]),
                    amount: 1 + rng.below(50_000),
                },
            }
            .sign(&h.key);
            h.next_nonce += 1;
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
        homes[p].guard.authorize(slot, block.hash())?;
        for h in homes.iter_mut() {
            h.chain
                .commit(
                    block.clone(),
                    Checks {
                        signatures: true,
                        current_slot: Some(slot),
                    },
                )
                .with_context(|| format!("{} rejected block {}", h.name, block.header.height))?;
        }
        let included: HashSet<_> = block.transactions.iter().map(|t| t.id()).collect();
        let dropped: HashSet<_> = out.rejected.iter().map(|(id, _)| *id).collect();
        committed_txs += included.len() as u64;
        rejected_txs += dropped.len() as u64;
        mempool.retain(|t| !included.contains(&t.id()) && !dropped.contains(&t.id()));
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
        "invariants": {
            "credits_conserved": credits_conserved,
            "all_homes_same_tip": same_tip,
            "every_home_produced": every_home_produced,
        },
        "data_dirs": homes_dir.display().to_string(),
    });
    std::fs::write(
        o.report.join("report.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    ensure!(credits_conserved, "credits not conserved");
    ensure!(same_tip, "homes disagree on the tip: {tips:?}");
    Ok(summary)
}
