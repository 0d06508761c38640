//! `gridlet faults`: the consensus fault suite on a simulated community of real gateways. Each
//! gateway reaches the broker through its own TCP relay ([`gridlet_hil::relay`]); a partition
//! points one side's relays at a second broker, a disconnect cuts one relay, and processes are
//! stopped (SIGSTOP) and killed (SIGKILL, then restarted) while trades flow. After every heal
//! the suite watches the homes rejoin one final chain; at the end it compares every home's
//! stored final blocks and checks every battery release against the final chain.
//!
//! One JSON line (`"bench": "faults"`) reports the figures of `../shared/notes/reliability.md`'s
//! consensus rows: perturbations and partition cycles run, conflicting final blocks, homes on
//! different final chains after a heal, releases of trades not final on every home, and the time
//! to rejoin after each heal.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gridlet_hil::relay::{Relay, Upstream};
use serde_json::json;

use super::procs::{api_get_within, api_post};

/// What the suite does.
#[derive(Debug, Clone)]
pub struct FaultOptions {
    /// Cycles; each runs a 2 | 3 and a 1 | 4 partition, a disconnect, a SIGSTOP and a SIGKILL.
    pub cycles: u32,
    /// How long a partition lasts, s.
    pub partition_s: u64,
    /// How long a home is disconnected, s.
    pub disconnect_s: u64,
    /// How long a home is stopped, s.
    pub stop_s: u64,
    /// How long the suite waits after each heal before the next fault, s.
    pub settle_s: u64,
}

impl FaultOptions {
    /// The suite's wall time, ms (phases have fixed lengths, so the simulated day can be sized).
    pub fn duration_ms(&self) -> u64 {
        let per_cycle = 2 * (self.partition_s + self.settle_s)
            + self.disconnect_s
            + self.settle_s
            + self.stop_s
            + self.settle_s
            + 2
            + self.settle_s;
        // A warm-up before the first fault and a quiet end.
        (20 + u64::from(self.cycles) * per_cycle + 20) * 1000
    }
}

#[derive(Debug, Clone)]
enum Action {
    Warmup,
    Partition {
        minority: Vec<usize>,
    },
    Cut(usize),
    Stop(usize),
    Kill(usize),
    /// Undo the last fault and watch these homes rejoin.
    Heal(Vec<usize>),
    End,
}

/// One home as the suite sees it.
pub(super) struct Target {
    /// Its relay.
    pub relay: Relay,
    /// Its API port (changes when it is restarted).
    pub api_port: u16,
}

struct Watch {
    /// Which fault was healed (`partition_2_3`, `partition_1_4`, `disconnect`, `sigstop`,
    /// `sigkill`).
    kind: &'static str,
    homes: Vec<usize>,
    since: Instant,
    /// The majority's final height when the fault was healed.
    target: u64,
    rejoined: Vec<Option<Duration>>,
}

/// The running suite.
pub(super) struct FaultRun {
    plan: Vec<(Action, Duration)>,
    step: usize,
    phase_end: Instant,
    next_poll: Instant,
    broker_a: SocketAddr,
    broker_b: SocketAddr,
    slot_ms: u64,
    watch: Option<Watch>,
    /// Homes whose final height is watched during a partition (minority), with their start.
    minority_start: Vec<(usize, u64)>,
    majority_start: Vec<(usize, u64)>,
    one_four: bool,
    last_final: Vec<(u64, Vec<(u64, String)>)>,
    // Figures.
    perturbations: u32,
    partition_cycles: u32,
    rejoin_ms: Vec<u64>,
    /// The longest rejoin after each kind of fault, ms.
    rejoin_max_by_kind: BTreeMap<&'static str, u64>,
    not_rejoined: u32,
    split_after_heal: u32,
    minority_finalized: u32,
    majority_stalled_in_1_4: u32,
    // Trades the suite places through the homes' APIs, so that releases happen under faults.
    next_offer: Instant,
    offers_made: u64,
    purchases: Vec<PendingPurchase>,
    purchases_submitted: u64,
    /// The home stopped with SIGSTOP now (its API cannot answer: not asked).
    stopped: Option<usize>,
}

struct PendingPurchase {
    contract: String,
    buyer: usize,
    payment: u64,
    next_try: Instant,
    tries: u32,
}

/// Energy of each offer the suite places, Wh (small: the batteries must cover many).
const OFFER_WH: u64 = 30;
/// Price of those offers, µcredits/kWh.
const OFFER_PRICE: u64 = 200_000;

/// What the suite asks the simulation to do to a gateway process.
pub(super) enum ProcessOp {
    Stop(usize),
    Continue(usize),
    Kill(usize),
    Restart(usize),
}

impl FaultRun {
    pub(super) fn new(
        o: &FaultOptions,
        homes: usize,
        broker_a: SocketAddr,
        broker_b: SocketAddr,
        slot_ms: u64,
    ) -> FaultRun {
        let mut plan = vec![(Action::Warmup, Duration::from_secs(20))];
        let settle = Duration::from_secs(o.settle_s);
        for c in 0..o.cycles as usize {
            let k = |d: usize| (c + d) % homes;
            let two = vec![k(0), k(1)];
            plan.push((
                Action::Partition {
                    minority: two.clone(),
                },
                Duration::from_secs(o.partition_s),
            ));
            plan.push((Action::Heal(two), settle));
            plan.push((
                Action::Partition {
                    minority: vec![k(2)],
                },
                Duration::from_secs(o.partition_s),
            ));
            plan.push((Action::Heal(vec![k(2)]), settle));
            plan.push((Action::Cut(k(3)), Duration::from_secs(o.disconnect_s)));
            plan.push((Action::Heal(vec![k(3)]), settle));
            plan.push((Action::Stop(k(4)), Duration::from_secs(o.stop_s)));
            plan.push((Action::Heal(vec![k(4)]), settle));
            plan.push((Action::Kill(k(0)), Duration::from_secs(2)));
            plan.push((Action::Heal(vec![k(0)]), settle));
        }
        plan.push((Action::End, Duration::from_secs(3600)));
        FaultRun {
            plan,
            step: 0,
            phase_end: Instant::now() + Duration::from_secs(20),
            next_poll: Instant::now(),
            broker_a,
            broker_b,
            slot_ms,
            watch: None,
            minority_start: Vec::new(),
            majority_start: Vec::new(),
            one_four: false,
            last_final: vec![(0, Vec::new()); homes],
            perturbations: 0,
            partition_cycles: 0,
            rejoin_ms: Vec::new(),
            rejoin_max_by_kind: BTreeMap::new(),
            not_rejoined: 0,
            split_after_heal: 0,
            minority_finalized: 0,
            majority_stalled_in_1_4: 0,
            next_offer: Instant::now() + Duration::from_secs(10),
            offers_made: 0,
            purchases: Vec::new(),
            purchases_submitted: 0,
            stopped: None,
        }
    }

    /// Advances the plan; returns what to do to gateway processes now.
    pub(super) async fn tick(&mut self, targets: &[Target]) -> Vec<ProcessOp> {
        let now = Instant::now();
        if now >= self.next_poll {
            self.next_poll = now + Duration::from_millis(500);
            self.poll(targets).await;
        }
        self.trade(targets, now).await;
        if now < self.phase_end {
            return Vec::new();
        }
        // The phase is over: close it, then start the next one.
        let mut ops = Vec::new();
        if let Some((Action::Heal(_), _)) = self.plan.get(self.step) {
            self.close_watch();
        }
        self.step += 1;
        let Some((action, hold)) = self.plan.get(self.step).cloned() else {
            return ops;
        };
        self.phase_end = now + hold;
        match action {
            Action::Warmup | Action::End => {}
            Action::Partition { minority } => {
                self.perturbations += 1;
                self.partition_cycles += 1;
                self.one_four = minority.len() == 1;
                for (i, t) in targets.iter().enumerate() {
                    let side = if minority.contains(&i) {
                        self.broker_b
                    } else {
                        self.broker_a
                    };
                    t.relay.set(Upstream::To(side));
                }
                self.minority_start = minority
                    .iter()
                    .map(|i| (*i, self.last_final[*i].0))
                    .collect();
                self.majority_start = (0..targets.len())
                    .filter(|i| !minority.contains(i))
                    .map(|i| (i, self.last_final[i].0))
                    .collect();
            }
            Action::Cut(i) => {
                self.perturbations += 1;
                if let Some(t) = targets.get(i) {
                    t.relay.set(Upstream::Cut);
                }
            }
            Action::Stop(i) => {
                self.perturbations += 1;
                self.stopped = Some(i);
                ops.push(ProcessOp::Stop(i));
            }
            Action::Kill(i) => {
                self.perturbations += 1;
                ops.push(ProcessOp::Kill(i));
            }
            Action::Heal(homes) => {
                let previous = self.step.checked_sub(1).and_then(|s| self.plan.get(s));
                let kind = match previous.map(|p| &p.0) {
                    Some(Action::Partition { minority }) => {
                        let kind = if minority.len() == 1 {
                            "partition_1_4"
                        } else {
                            "partition_2_3"
                        };
                        self.close_partition();
                        kind
                    }
                    Some(Action::Stop(i)) => {
                        ops.push(ProcessOp::Continue(*i));
                        self.stopped = None;
                        "sigstop"
                    }
                    Some(Action::Kill(i)) => {
                        ops.push(ProcessOp::Restart(*i));
                        "sigkill"
                    }
                    _ => "disconnect",
                };
                for t in targets {
                    t.relay.set(Upstream::To(self.broker_a));
                }
                let target = (0..targets.len())
                    .filter(|i| !homes.contains(i))
                    .map(|i| self.last_final[i].0)
                    .max()
                    .unwrap_or(0);
                self.watch = Some(Watch {
                    kind,
                    rejoined: vec![None; homes.len()],
                    homes,
                    // Now, not when this tick began: a poll may have taken a while.
                    since: Instant::now(),
                    target,
                });
            }
        }
        ops
    }

    /// Every 3 s one home offers a little energy and the next home buys it once the offer is on
    /// its chain (retrying for 20 s): trades keep flowing through partitions and restarts.
    async fn trade(&mut self, targets: &[Target], now: Instant) {
        let n = targets.len();
        if now >= self.next_offer && n > 1 {
            self.next_offer = now + Duration::from_secs(3);
            let seller = (self.offers_made as usize) % n;
            let buyer = (seller + 1) % n;
            self.offers_made += 1;
            let body = json!({
                // A fresh interval each time: one attestation per interval.
                "interval": 1_000_000 + self.offers_made,
                "energy_wh": OFFER_WH,
                "price": OFFER_PRICE,
                "expiry_height": self.last_final[seller].0 + 40,
            });
            let port = targets[seller].api_port;
            if port != 0 && self.stopped != Some(seller) {
                if let Some((201, v)) = api_post(port, "/api/offers", &body).await {
                    if let Some(contract) = v["tx"].as_str() {
                        self.purchases.push(PendingPurchase {
                            contract: contract.to_owned(),
                            buyer,
                            payment: OFFER_WH * OFFER_PRICE / 1000,
                            next_try: now + Duration::from_secs(2),
                            tries: 0,
                        });
                    }
                }
            }
        }
        let mut left = Vec::new();
        for mut p in std::mem::take(&mut self.purchases) {
            if now < p.next_try {
                left.push(p);
                continue;
            }
            let port = targets[p.buyer].api_port;
            let body = json!({"contract": p.contract, "payment": p.payment});
            let done = port != 0
                && self.stopped != Some(p.buyer)
                && matches!(
                    api_post(port, "/api/purchases", &body).await,
                    Some((201, _))
                );
            if done {
                self.purchases_submitted += 1;
            } else if p.tries < 10 {
                p.tries += 1;
                p.next_try = now + Duration::from_secs(2);
                left.push(p);
            }
        }
        self.purchases = left;
    }

    fn close_partition(&mut self) {
        for (i, start) in &self.minority_start {
            // One decision may have been under way when the partition began.
            if self.last_final[*i].0 > start + 1 {
                self.minority_finalized += 1;
            }
        }
        if self.one_four {
            let stalled = self
                .majority_start
                .iter()
                .any(|(i, start)| self.last_final[*i].0 <= *start + 1);
            if stalled {
                self.majority_stalled_in_1_4 += 1;
            }
        }
    }

    fn close_watch(&mut self) {
        if let Some(w) = self.watch.take() {
            for r in &w.rejoined {
                match r {
                    Some(d) => {
                        let ms = d.as_millis() as u64;
                        self.rejoin_ms.push(ms);
                        let max = self.rejoin_max_by_kind.entry(w.kind).or_insert(0);
                        *max = (*max).max(ms);
                    }
                    None => self.not_rejoined += 1,
                }
            }
        }
        // Every home on one final chain: all agree on the block at the lowest final height.
        let floor = self.last_final.iter().map(|f| f.0).min().unwrap_or(0);
        let at_floor: Vec<Option<&String>> = self
            .last_final
            .iter()
            .map(|(_, recent)| recent.iter().find(|(h, _)| *h == floor).map(|(_, x)| x))
            .collect();
        let top = self.last_final.iter().map(|f| f.0).max().unwrap_or(0);
        let behind = self.last_final.iter().any(|f| f.0 + 5 < top);
        let split = at_floor.windows(2).any(|w| w[0] != w[1] || w[0].is_none());
        if floor > 0 && (split || behind) {
            self.split_after_heal += 1;
        }
    }

    async fn poll(&mut self, targets: &[Target]) {
        // All homes at once: a stopped home's API times out without holding up the others (or
        // the suite's own clock).
        let mut asks = tokio::task::JoinSet::new();
        for (i, t) in targets.iter().enumerate() {
            if self.stopped == Some(i) {
                continue;
            }
            let port = t.api_port;
            asks.spawn(async move {
                let within = Duration::from_millis(400);
                (i, api_get_within(port, "/api/chain/final", within).await)
            });
        }
        let mut answers = Vec::new();
        while let Some(Ok(a)) = asks.join_next().await {
            answers.push(a);
        }
        for (i, answer) in answers {
            if let Some(v) = answer {
                let height = v["height"].as_u64().unwrap_or(0);
                let recent: Vec<(u64, String)> = v["recent"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|e| {
                                Some((e.get(0)?.as_u64()?, e.get(1)?.as_str()?.to_owned()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.last_final[i] = (height, recent);
            }
        }
        if let Some(w) = &mut self.watch {
            let reference = (0..targets.len())
                .find(|i| !w.homes.contains(i))
                .map(|i| self.last_final[i].1.clone())
                .unwrap_or_default();
            for (slot, home) in w.homes.iter().enumerate() {
                if w.rejoined[slot].is_some() {
                    continue;
                }
                let (height, recent) = &self.last_final[*home];
                let same = reference
                    .iter()
                    .rfind(|(h, _)| *h <= *height)
                    .is_some_and(|(h, hash)| recent.iter().any(|(x, y)| x == h && y == hash));
                if *height >= w.target && same {
                    w.rejoined[slot] = Some(w.since.elapsed());
                }
            }
        }
    }

    /// The figures so far, with what the stores and journals showed at the end.
    pub(super) fn summary(&self, end: &EndCheck) -> serde_json::Value {
        let mut r = self.rejoin_ms.clone();
        r.sort_unstable();
        let p99 = r
            .get(((r.len() as f64) * 0.99).ceil() as usize - usize::from(!r.is_empty()))
            .copied()
            .unwrap_or(0);
        let slots = |ms: u64| (ms as f64 / self.slot_ms as f64 * 10.0).round() / 10.0;
        json!({
            "bench": "faults",
            "perturbations": self.perturbations,
            "partition_cycles": self.partition_cycles,
            "conflicting_final_blocks": end.conflicting_final_blocks,
            "homes_on_different_final_chains_after_heal": self.split_after_heal,
            "releases_not_final_on_every_home": end.releases_not_final,
            "releases": end.releases,
            "offers_placed": self.offers_made,
            "purchases_submitted": self.purchases_submitted,
            "minority_finalized_while_cut_off": self.minority_finalized,
            "majority_stalled_in_1_4_split": self.majority_stalled_in_1_4,
            "rejoins": r.len(),
            "not_rejoined_within_settle": self.not_rejoined,
            "rejoin_p99_slots": slots(p99),
            "rejoin_max_slots": slots(r.last().copied().unwrap_or(0)),
            "rejoin_max_slots_by_fault": self
                .rejoin_max_by_kind
                .iter()
                .map(|(k, ms)| (k.to_string(), json!(slots(*ms))))
                .collect::<serde_json::Map<_, _>>(),
            "final_height": end.final_height,
            "first_conflict": end.first_conflict,
        })
    }
}

/// What the stores and journals say once the gateways have stopped.
#[derive(Debug, Default)]
pub(super) struct EndCheck {
    pub conflicting_final_blocks: u64,
    /// Where the stores first disagree, with each home's block and certificate there.
    pub first_conflict: Option<serde_json::Value>,
    pub releases_not_final: u64,
    pub releases: u64,
    pub final_height: u64,
}

/// Compares the stopped homes' stores (every final block, height by height) and checks each
/// battery release against the final chain of every home.
pub(super) fn end_check(setups: &[super::home_config::HomeSetup]) -> anyhow::Result<EndCheck> {
    use gridlet_ledger::store::{BlockStore, RedbStore};
    let mut finals = Vec::new();
    let mut hashes: Vec<Vec<gridlet_ledger::Hash32>> = Vec::new();
    let mut certs: Vec<Vec<(u64, gridlet_ledger::finality::Certificate)>> = Vec::new();
    for s in setups {
        let store = RedbStore::open(&s.dir)?;
        certs.push(
            store
                .certificates(1, u64::MAX)?
                .into_iter()
                .filter_map(|(h, b)| {
                    gridlet_ledger::finality::Certificate::decode(&b)
                        .ok()
                        .map(|c| (h, c))
                })
                .collect(),
        );
        let final_height = match store.last_certificate()? {
            Some(bytes) => {
                gridlet_ledger::finality::Certificate::decode(&bytes)
                    .map_err(|e| anyhow::anyhow!("{}: certificate: {e}", s.name))?
                    .block
                    .height
            }
            None => 0,
        };
        let mut own = Vec::new();
        for h in 1..=final_height {
            let Some(bytes) = store.get(h)? else { break };
            let block = gridlet_ledger::Block::decode(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: block {h}: {e}", s.name))?;
            own.push(block.hash());
        }
        finals.push(final_height);
        hashes.push(own);
    }
    let floor = finals.iter().copied().min().unwrap_or(0) as usize;
    let mut conflicting = 0u64;
    let mut first_conflict = None;
    for h in 0..floor {
        let first = hashes.first().and_then(|v| v.get(h));
        if hashes.iter().any(|v| v.get(h) != first) {
            conflicting += 1;
            first_conflict.get_or_insert(h as u64 + 1);
        }
    }
    // A safety failure must leave its evidence in the output (a CI log is all there may be):
    // at the first conflicting height, each home's block and the first certificate at or above
    // it (checkpoint, round, the block it names, its signers).
    let evidence =
        first_conflict.map(|height| {
            setups
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let block = hashes
                    .get(i)
                    .and_then(|v| v.get(height as usize - 1))
                    .map(|b| b.to_hex());
                let cert = certs.get(i).and_then(|c| c.iter().find(|(h, _)| *h >= height));
                json!({
                    "home": s.name,
                    "final_height": finals.get(i),
                    "block": block,
                    "certificate": cert.map(|(h, c)| json!({
                        "height": h,
                        "checkpoint": c.checkpoint,
                        "round": c.round,
                        "block": c.block.hash.to_hex(),
                        "signers": c.signatures.iter().map(|(k, _)| k.short()).collect::<Vec<_>>(),
                    })),
                    "certificates": certs.get(i).map_or(0, Vec::len),
                })
            })
            .collect::<Vec<_>>()
        });
    let first_conflict = first_conflict.map(|h| json!({"height": h, "homes": evidence}));
    // Every release any battery began must be a released trade in the final state of every
    // home: home 0's chain, final up to the lowest final height (the others agree below it).
    let verified = crate::chain_cmd::load_verified(&setups[0].dir)?;
    let state = verified.chain.finalized_state();
    let mut releases = 0u64;
    let mut not_final = 0u64;
    for s in setups {
        let journal = gridlet_actors::journal::ReleaseJournal::open(&s.dir)
            .map_err(|e| anyhow::anyhow!("{}: {e}", s.name))?;
        for (trade, _) in journal.entries() {
            releases += 1;
            let final_everywhere = state
                .market()
                .trades
                .get(&trade)
                .is_some_and(|t| t.released && t.traded_height <= floor as u64);
            if !final_everywhere {
                not_final += 1;
            }
        }
    }
    Ok(EndCheck {
        conflicting_final_blocks: conflicting,
        first_conflict,
        releases_not_final: not_final,
        releases,
        final_height: floor as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_on_two_chains_are_counted_and_the_first_conflict_shows_its_evidence() {
        // Two communities' home-0 stores, as if two homes had finalized different chains.
        let dir = tempfile::tempdir().unwrap();
        let mut setups = Vec::new();
        for seed in [1u64, 2] {
            let report = dir.path().join(format!("r{seed}"));
            crate::sim_chain::run(&crate::sim_chain::SimOptions {
                homes: 3,
                slots: 30,
                seed,
                report: report.clone(),
                rule: gridlet_ledger::selection::SelectionRule::Paper,
                txs_per_slot: 2,
                silent_percent: 0,
                market: false,
                retention_blocks: gridlet_ledger::genesis::DEFAULT_RETENTION_BLOCKS,
                memory_store: false,
                day_blocks: None,
                state_commitment: gridlet_ledger::genesis::StateCommitment::Trie,
            })
            .unwrap();
            setups.push(super::super::home_config::HomeSetup {
                dir: report.join("homes/0"),
                api_port: 0,
                member: gridlet_ledger::MemberKey::from_secret(
                    &gridlet_ledger::crypto::deterministic_key(1, seed),
                ),
                name: format!("seed-{seed}"),
            });
        }
        let end = end_check(&setups).unwrap();
        assert!(end.conflicting_final_blocks > 0, "{end:?}");
        let c = end.first_conflict.expect("the first conflict is shown");
        assert_eq!(c["height"], 1, "{c}");
        let homes = c["homes"].as_array().unwrap();
        assert_eq!(homes.len(), 2);
        assert_ne!(homes[0]["block"], homes[1]["block"], "{c}");
        for h in homes {
            let cert = &h["certificate"];
            assert!(cert["checkpoint"].as_u64().is_some(), "{c}");
            assert!(cert["signers"].as_array().unwrap().len() >= 3, "{c}");
        }
    }
}
