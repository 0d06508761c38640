//! The community file: who the members are and the rules they agreed on.
//!
//! Stored as JSON for people; its hash is taken over a canonical binary encoding (not the
//! JSON text), so reformatting the file does not change the chain it names. Every transaction
//! and block carries that hash as its chain id.

use crate::units::{MicroCredits, Price};
use std::collections::{BTreeMap, BTreeSet};

use secp256k1::PublicKey;
use serde::{Deserialize, Serialize};

use crate::codec::Writer;
use crate::crypto::{Hash32, MemberKey};
use crate::error::GenesisError;
use crate::selection::SelectionRule;

const GENESIS_TAG: &[u8] = b"gridlet/genesis/v1";
const GENESIS_TAG_V2: &[u8] = b"gridlet/genesis/v2";
const GENESIS_TAG_V3: &[u8] = b"gridlet/genesis/v3";

/// How the state hash commits to the state (protocol.md §7, §7.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateCommitment {
    /// The whole state encoded and hashed every block: a genesis made before the trie.
    #[default]
    Flat,
    /// The large parts (selection window, attestations, contracts, trades) by their Merkle trie
    /// roots, so a block costs what it changed.
    Trie,
}

/// One home of the community.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// A label for people (not used by consensus rules, but part of the genesis hash).
    pub name: String,
    /// The home's key: it signs transactions and blocks.
    pub key: MemberKey,
    /// The key of the home's battery (ESS) attestor, which signs stored generation.
    pub attestor: MemberKey,
    /// What holds the attestor key and what the home's devices can physically deliver.
    pub equipment: Equipment,
    /// Initial balance.
    pub balance: MicroCredits,
}

/// Who holds a home's attestor key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttestorSigner {
    /// The gateway holds it (a home without a signing device): lower trust, flagged on chain.
    Gateway,
    /// The battery (or the home's energy device) holds it and signs its own measurements.
    Device,
}

impl AttestorSigner {
    /// The byte in the canonical encodings (protocol.md §3).
    pub fn code(self) -> u8 {
        match self {
            AttestorSigner::Gateway => 0,
            AttestorSigner::Device => 1,
        }
    }

    /// The signer a code names.
    pub fn from_code(code: u8) -> Option<AttestorSigner> {
        match code {
            0 => Some(AttestorSigner::Gateway),
            1 => Some(AttestorSigner::Device),
            _ => None,
        }
    }
}

/// A home's attesting device and the physics that bounds what it can claim on chain: even a
/// stolen attestor key cannot promise more than a full battery and an hour of PV at nameplate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Equipment {
    /// Who holds the attestor key.
    pub signer: AttestorSigner,
    /// Usable battery capacity, Wh.
    pub battery_wh: u64,
    /// PV nameplate (peak) power, W.
    pub pv_w: u64,
}

impl Equipment {
    /// A home whose battery signs its own attestations.
    pub fn device(battery_wh: u64, pv_w: u64) -> Equipment {
        Equipment {
            signer: AttestorSigner::Device,
            battery_wh,
            pv_w,
        }
    }

    /// A home whose gateway holds the attestor key (lower trust).
    pub fn gateway(battery_wh: u64, pv_w: u64) -> Equipment {
        Equipment {
            signer: AttestorSigner::Gateway,
            battery_wh,
            pv_w,
        }
    }

    /// Most attested energy a home may have outstanding (attested and not yet delivered), Wh:
    /// `battery_wh + pv_w × 1 h` (protocol.md §12.1).
    pub fn attest_bound_wh(&self) -> u64 {
        self.battery_wh.saturating_add(self.pv_w)
    }

    pub(crate) fn encode_into(&self, w: &mut Writer) {
        w.u8(self.signer.code()).u64(self.battery_wh).u64(self.pv_w);
    }
}

/// Parameters of producer selection (weights `W = α·E + β·A + γ·R`, see [`crate::selection`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionParams {
    /// `paper` (argmax W/U) or `proportional` (probability exactly proportional to W).
    pub rule: SelectionRule,
    /// Weight of E, the voting tokens (one per kWh traded in the window).
    pub alpha: u64,
    /// Weight of A, the blocks since the member last produced (capped at `age_cap`).
    pub beta: u64,
    /// Weight of R, the blocks the member produced in the window (capped at `reputation_cap`).
    pub gamma: u64,
    /// The window, in blocks, over which E and R are counted.
    pub window_blocks: u64,
    /// Cap on A, so a long-silent member cannot dominate every election.
    pub age_cap: u64,
    /// Cap on R, so the producer set cannot freeze around past producers.
    pub reputation_cap: u64,
    /// How many ranks may produce: rank r waits `(r-1) × fallback_delay_ms` into the slot.
    pub fallback_ranks: u32,
    /// Delay before each fallback rank may produce.
    pub fallback_delay_ms: u64,
}

/// Market timing and pricing rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketParams {
    /// Blocks after a trade is final (released) within which the seller's battery must report
    /// delivery, on top of the time the energy takes at `delivery_power_w`; the undelivered
    /// part is refunded after that.
    pub delivery_blocks: u64,
    /// The power deliveries are planned with, W: a trade's window grows by the slots its
    /// energy takes at this power (1 000 Wh at 2 kW: 30 minutes), so a trade fits its window.
    #[serde(default = "default_delivery_power_w")]
    pub delivery_power_w: u64,
    /// Length of an auction round in blocks: bids are committed in the first half and revealed
    /// in the second; the round clears at its last block. 0 disables auctions.
    pub auction_round_blocks: u64,
    /// How auction fills are priced.
    pub pricing: crate::market::Pricing,
    /// Blocks what is over stays in the consensus state before it is retired (settled trades
    /// after their deadline, expired or sold contracts with their trade, used-up attestations,
    /// billed days; protocol.md §12.9). 0 keeps everything: a community made before retention
    /// (its genesis hash is unchanged).
    #[serde(default)]
    pub retention_blocks: u64,
}

/// What `gridlet genesis` and the simulators give a new community: a day of one-second slots.
pub const DEFAULT_RETENTION_BLOCKS: u64 = 86_400;

impl Default for MarketParams {
    fn default() -> Self {
        MarketParams {
            delivery_blocks: 60,
            delivery_power_w: default_delivery_power_w(),
            auction_round_blocks: 20,
            pricing: crate::market::Pricing::PayAsBid,
            retention_blocks: 0,
        }
    }
}

fn default_delivery_power_w() -> u64 {
    2_000
}

/// The day-ahead schedule (docs/scheduling.md): the community's side of the problem, in
/// integers so that the genesis hash is exact; the dispatch contract converts them to the
/// floating-point parameters of its deterministic ADMM step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleParams {
    /// Intervals per day.
    pub intervals: u32,
    /// Length of an interval, minutes (`intervals × interval_min` = 1440).
    pub interval_min: u32,
    /// Transformer limit at the point of common coupling, W (both directions).
    pub feeder_w: u64,
    /// Grid import tariff per interval, micro-credits per kWh (empty: `grid_tariff` all day).
    #[serde(default)]
    pub import_prices: Vec<u64>,
    /// Feed-in price, micro-credits per kWh (below every import price).
    pub feed_in_price: u64,
    /// ADMM penalty ρ, thousandths of a credit per kWh² (50 = 0.05).
    pub rho_milli: u64,
    /// Stop when both residuals are at most this, W.
    pub tolerance_w: u64,
    /// Most ADMM iterations; a schedule that has not converged by then is committed as is.
    pub max_iterations: u32,
}

impl ScheduleParams {
    /// 96 × 15 min, 0.05 penalty, 10 W tolerance, 300 iterations, feed-in 80 000 µcredits/kWh.
    pub fn with_feeder(feeder_w: u64) -> ScheduleParams {
        ScheduleParams {
            intervals: 96,
            interval_min: 15,
            feeder_w,
            import_prices: Vec::new(),
            feed_in_price: 80_000,
            rho_milli: 50,
            tolerance_w: 10,
            max_iterations: 300,
        }
    }

    /// The import tariff of each interval.
    pub fn import_price_at(&self, grid_tariff: u64, interval: usize) -> u64 {
        self.import_prices
            .get(interval)
            .copied()
            .unwrap_or(grid_tariff)
    }
}

/// Quorum finality: a block is final once more than `quorum_num / quorum_den` of the members
/// signed precommits for it (protocol.md §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalityParams {
    /// Numerator of the quorum fraction (at least 2/3).
    pub quorum_num: u32,
    /// Denominator of the quorum fraction.
    pub quorum_den: u32,
    /// A member produces only while its head is at most this many blocks above the last final
    /// block: without a quorum the community stops trading instead of growing an unbounded
    /// tree of blocks nothing can finalize.
    pub max_unfinal_blocks: u64,
}

impl Default for FinalityParams {
    fn default() -> Self {
        FinalityParams {
            quorum_num: 2,
            quorum_den: 3,
            max_unfinal_blocks: 120,
        }
    }
}

impl FinalityParams {
    /// Signatures needed out of `members`: the least count above `quorum_num / quorum_den`.
    pub fn quorum(&self, members: usize) -> usize {
        let n = u64::try_from(members).unwrap_or(u64::MAX);
        let q = n
            .saturating_mul(u64::from(self.quorum_num))
            .checked_div(u64::from(self.quorum_den))
            .unwrap_or(n)
            .saturating_add(1);
        usize::try_from(q).unwrap_or(usize::MAX)
    }
}

/// The genesis of a community chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// Human-readable chain name.
    pub chain_id: String,
    /// Unix time (ms) at which slot 0 starts.
    pub genesis_time_ms: u64,
    /// Slot length in ms.
    pub slot_ms: u64,
    /// Quorum finality (protocol.md §9).
    #[serde(default)]
    pub finality: FinalityParams,
    /// Flat fee every transaction pays to the community account, micro-credits.
    pub tx_fee: MicroCredits,
    /// Main-grid import tariff, micro-credits per kWh: no sale may ask more.
    pub grid_tariff: Price,
    /// Lowest price a bid may carry, micro-credits per kWh.
    pub floor_price: Price,
    /// Most transactions in one block.
    pub max_block_txs: u32,
    /// Producer selection.
    pub selection: SelectionParams,
    /// Market rules.
    #[serde(default)]
    pub market: MarketParams,
    /// Day-ahead scheduling (absent: the community trades live only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleParams>,
    /// The members, in the order given.
    pub members: Vec<Member>,
    /// How the state hash commits to the state; absent (a genesis made before it): `flat`.
    #[serde(default)]
    pub state_commitment: StateCommitment,
}

impl Genesis {
    /// Parses and validates a genesis JSON document.
    pub fn from_json(text: &str) -> Result<Genesis, GenesisError> {
        let genesis: Genesis =
            serde_json::from_str(text).map_err(|e| GenesisError::Parse(e.to_string()))?;
        genesis.validate()?;
        Ok(genesis)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every field a running chain depends on.
    pub fn validate(&self) -> Result<(), GenesisError> {
        fn invalid(field: &'static str, reason: impl Into<String>) -> GenesisError {
            GenesisError::Invalid {
                field,
                reason: reason.into(),
            }
        }
        if self.chain_id.is_empty() {
            return Err(invalid("chain_id", "must not be empty"));
        }
        if self.slot_ms == 0 {
            return Err(invalid("slot_ms", "must be positive"));
        }
        if self.max_block_txs == 0 {
            return Err(invalid("max_block_txs", "must be positive"));
        }
        if self.floor_price > self.grid_tariff {
            return Err(invalid(
                "floor_price",
                format!(
                    "{} is above the grid tariff {}",
                    self.floor_price, self.grid_tariff
                ),
            ));
        }
        let f = &self.finality;
        // A quorum above 2/3 of the members: any two quorums share more than a third, so
        // conflicting blocks cannot both be final while at most ⌊(n−1)/3⌋ members misbehave.
        if f.quorum_den == 0
            || f.quorum_num >= f.quorum_den
            || u64::from(f.quorum_num).saturating_mul(3) < u64::from(f.quorum_den).saturating_mul(2)
        {
            return Err(invalid(
                "finality.quorum_num",
                format!(
                    "{}/{} must be at least 2/3 and below 1",
                    f.quorum_num, f.quorum_den
                ),
            ));
        }
        if f.max_unfinal_blocks == 0 {
            return Err(invalid("finality.max_unfinal_blocks", "must be positive"));
        }
        let s = &self.selection;
        if s.fallback_ranks == 0 {
            return Err(invalid("selection.fallback_ranks", "must be at least 1"));
        }
        if s.window_blocks == 0 {
            return Err(invalid("selection.window_blocks", "must be positive"));
        }
        if s.age_cap == 0 {
            return Err(invalid("selection.age_cap", "must be positive"));
        }
        if s.alpha == 0 && s.beta == 0 && s.gamma == 0 {
            return Err(invalid(
                "selection",
                "alpha, beta and gamma are all zero: nobody could ever be elected",
            ));
        }
        if let Some(p) = &self.schedule {
            if p.intervals == 0
                || u64::from(p.intervals).saturating_mul(u64::from(p.interval_min)) != 1440
            {
                return Err(invalid(
                    "schedule.intervals",
                    format!(
                        "{} intervals of {} min do not make a day of 1440 min",
                        p.intervals, p.interval_min
                    ),
                ));
            }
            if !p.import_prices.is_empty()
                && p.import_prices.len() != usize::try_from(p.intervals).unwrap_or(usize::MAX)
            {
                return Err(invalid(
                    "schedule.import_prices",
                    format!(
                        "{} prices for {} intervals",
                        p.import_prices.len(),
                        p.intervals
                    ),
                ));
            }
            let lowest_import = p
                .import_prices
                .iter()
                .copied()
                .min()
                .unwrap_or(self.grid_tariff.get());
            if p.feed_in_price >= lowest_import {
                return Err(invalid(
                    "schedule.feed_in_price",
                    format!(
                        "{} is not below the lowest import price {lowest_import}",
                        p.feed_in_price
                    ),
                ));
            }
            // Prices and limits become f64 in the dispatch step: keep them exact there.
            const EXACT: u64 = 1 << 53;
            if p.feeder_w == 0 || p.feeder_w >= EXACT || lowest_import >= EXACT {
                return Err(invalid(
                    "schedule.feeder_w",
                    "must be positive and below 2^53",
                ));
            }
            if p.import_prices.iter().any(|x| *x >= EXACT) || p.feed_in_price >= EXACT {
                return Err(invalid(
                    "schedule.import_prices",
                    "prices must be below 2^53",
                ));
            }
            if p.rho_milli == 0 || p.rho_milli >= EXACT || p.tolerance_w >= EXACT {
                return Err(invalid(
                    "schedule.rho_milli",
                    "must be positive and below 2^53",
                ));
            }
            if p.max_iterations == 0 {
                return Err(invalid("schedule.max_iterations", "must be positive"));
            }
        }
        if self.market.delivery_power_w == 0 {
            return Err(invalid("market.delivery_power_w", "must be positive"));
        }
        if self.members.is_empty() {
            return Err(invalid("members", "at least one member is needed"));
        }
        let mut keys = BTreeSet::new();
        let mut names = BTreeSet::new();
        let mut total: u64 = 0;
        for m in &self.members {
            if !keys.insert(m.key) {
                return Err(invalid("members", format!("duplicate key {}", m.key)));
            }
            // Homes are told apart by name in logs, reports and the API.
            if m.name.is_empty() || !names.insert(m.name.as_str()) {
                return Err(invalid(
                    "members",
                    format!("member name {:?} is empty or used twice", m.name),
                ));
            }
            total = total
                .checked_add(m.balance.get())
                .ok_or_else(|| invalid("members", "balances overflow u64"))?;
        }
        Ok(())
    }

    /// The canonical encoding the hash is taken over.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        let rule = match self.selection.rule {
            SelectionRule::Paper => 0u8,
            SelectionRule::Proportional => 1u8,
        };
        w.var(self.chain_id.as_bytes())
            .u64(self.genesis_time_ms)
            .u64(self.slot_ms)
            .u32(self.finality.quorum_num)
            .u32(self.finality.quorum_den)
            .u64(self.finality.max_unfinal_blocks)
            .u64(self.tx_fee.get())
            .u64(self.grid_tariff.get())
            .u64(self.floor_price.get())
            .u32(self.max_block_txs)
            .u8(rule)
            .u64(self.selection.alpha)
            .u64(self.selection.beta)
            .u64(self.selection.gamma)
            .u64(self.selection.window_blocks)
            .u64(self.selection.age_cap)
            .u64(self.selection.reputation_cap)
            .u32(self.selection.fallback_ranks)
            .u64(self.selection.fallback_delay_ms)
            .u64(self.market.delivery_blocks)
            .u64(self.market.delivery_power_w)
            .u64(self.market.auction_round_blocks)
            .u8(match self.market.pricing {
                crate::market::Pricing::PayAsBid => 0,
                crate::market::Pricing::Uniform => 1,
            });
        match &self.schedule {
            None => {
                w.u8(0);
            }
            Some(p) => {
                w.u8(1)
                    .u32(p.intervals)
                    .u32(p.interval_min)
                    .u64(p.feeder_w)
                    .u32(u32::try_from(p.import_prices.len()).unwrap_or(u32::MAX));
                for price in &p.import_prices {
                    w.u64(*price);
                }
                w.u64(p.feed_in_price)
                    .u64(p.rho_milli)
                    .u64(p.tolerance_w)
                    .u32(p.max_iterations);
            }
        }
        w.u32(u32::try_from(self.members.len()).unwrap_or(u32::MAX));
        for m in &self.members {
            w.var(m.name.as_bytes())
                .fixed(&m.key.0)
                .fixed(&m.attestor.0);
            m.equipment.encode_into(&mut w);
            w.u64(m.balance.get());
        }
        // Retention and the trie came later: a genesis without them keeps its v1/v2 encoding
        // and hash.
        match self.state_commitment {
            StateCommitment::Trie => {
                w.u64(self.market.retention_blocks).u8(1);
            }
            StateCommitment::Flat if self.market.retention_blocks > 0 => {
                w.u64(self.market.retention_blocks);
            }
            StateCommitment::Flat => {}
        }
        w.finish()
    }

    /// The chain id every transaction and block is bound to.
    pub fn hash(&self) -> Hash32 {
        let tag = match self.state_commitment {
            StateCommitment::Trie => GENESIS_TAG_V3,
            StateCommitment::Flat if self.market.retention_blocks > 0 => GENESIS_TAG_V2,
            StateCommitment::Flat => GENESIS_TAG,
        };
        Hash32::tagged(tag, &[&self.encode()])
    }

    /// Parsed attestor (battery) keys by member.
    pub fn attestor_public_keys(&self) -> Result<BTreeMap<MemberKey, PublicKey>, GenesisError> {
        self.parse_keys(|m| m.attestor)
    }

    /// Parsed public keys of the members, so signatures are checked without re-parsing keys.
    pub fn member_public_keys(&self) -> Result<BTreeMap<MemberKey, PublicKey>, GenesisError> {
        self.parse_keys(|m| m.key)
    }

    fn parse_keys(
        &self,
        pick: impl Fn(&Member) -> MemberKey,
    ) -> Result<BTreeMap<MemberKey, PublicKey>, GenesisError> {
        self.members
            .iter()
            .map(|m| {
                pick(m)
                    .to_public_key()
                    .map(|pk| (m.key, pk))
                    .map_err(|e| GenesisError::Invalid {
                        field: "members",
                        reason: e.to_string(),
                    })
            })
            .collect()
    }

    /// The slot that contains unix time `now_ms` (slot 0 before genesis time).
    pub fn slot_at(&self, now_ms: u64) -> u64 {
        now_ms
            .saturating_sub(self.genesis_time_ms)
            .checked_div(self.slot_ms)
            .unwrap_or(0)
    }

    /// Unix time (ms) at which `slot` starts.
    pub fn slot_start_ms(&self, slot: u64) -> u64 {
        self.genesis_time_ms
            .saturating_add(slot.saturating_mul(self.slot_ms))
    }

    /// A genesis with sensible defaults for the given members, each starting with `balance`.
    pub fn with_defaults(
        chain_id: &str,
        genesis_time_ms: u64,
        members: Vec<Member>,
        rule: SelectionRule,
    ) -> Genesis {
        Genesis {
            chain_id: chain_id.to_owned(),
            genesis_time_ms,
            slot_ms: 1_000,
            finality: FinalityParams::default(),
            tx_fee: MicroCredits::new(100),
            grid_tariff: Price::new(300_000),
            floor_price: Price::new(50_000),
            max_block_txs: 5_000,
            selection: SelectionParams {
                rule,
                alpha: 1,
                beta: 10,
                gamma: 5,
                window_blocks: 100,
                age_cap: 64,
                reputation_cap: 20,
                fallback_ranks: 3,
                fallback_delay_ms: 300,
            },
            market: MarketParams {
                retention_blocks: DEFAULT_RETENTION_BLOCKS,
                ..MarketParams::default()
            },
            schedule: None,
            members,
            state_commitment: StateCommitment::Trie,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::deterministic_key;

    fn member(i: u64) -> Member {
        Member {
            name: format!("home-{i}"),
            key: MemberKey::from_secret(&deterministic_key(1, i)),
            attestor: MemberKey::from_secret(&deterministic_key(2, i)),
            equipment: Equipment::device(10_000, 5_000),
            balance: MicroCredits::new(1_000),
        }
    }

    #[test]
    fn json_round_trip_keeps_the_hash() {
        let g = Genesis::with_defaults("test", 0, vec![member(0), member(1)], SelectionRule::Paper);
        let back = Genesis::from_json(&g.to_json()).unwrap();
        assert_eq!(back.hash(), g.hash());
        let mut other = g.clone();
        other.tx_fee = MicroCredits::new(other.tx_fee.get() + 1);
        assert_ne!(other.hash(), g.hash());
    }

    #[test]
    fn a_genesis_without_the_commitment_field_is_flat_and_keeps_its_chain_id() {
        let g = Genesis::with_defaults("test", 0, vec![member(0), member(1)], SelectionRule::Paper);
        assert_eq!(g.state_commitment, StateCommitment::Trie);
        let mut json: serde_json::Value = serde_json::from_str(&g.to_json()).unwrap();
        json.as_object_mut().unwrap().remove("state_commitment");
        let old = Genesis::from_json(&json.to_string()).unwrap();
        assert_eq!(old.state_commitment, StateCommitment::Flat);
        // Its id is the v2 one (retention set), computed as before the field existed.
        let mut encoding = old.encode();
        assert_eq!(old.hash(), Hash32::tagged(GENESIS_TAG_V2, &[&encoding]));
        // The trie genesis appends its byte (and names another chain).
        encoding.push(1);
        assert_eq!(g.hash(), Hash32::tagged(GENESIS_TAG_V3, &[&encoding]));
        assert_ne!(g.hash(), old.hash());
        json["state_commitment"] = "merkle".into();
        assert!(matches!(
            Genesis::from_json(&json.to_string()),
            Err(GenesisError::Parse(_))
        ));
    }

    #[test]
    fn broken_genesis_names_the_field() {
        let mut g =
            Genesis::with_defaults("test", 0, vec![member(0), member(0)], SelectionRule::Paper);
        assert!(matches!(
            g.validate(),
            Err(GenesisError::Invalid {
                field: "members",
                ..
            })
        ));
        g.members.pop();
        let mut twin = member(1);
        twin.name = g.members[0].name.clone();
        g.members.push(twin);
        assert!(
            matches!(g.validate(), Err(GenesisError::Invalid { field: "members", ref reason }) if reason.contains("used twice")),
            "{:?}",
            g.validate()
        );
        g.members.pop();
        g.slot_ms = 0;
        assert!(matches!(
            g.validate(),
            Err(GenesisError::Invalid {
                field: "slot_ms",
                ..
            })
        ));
        assert!(matches!(
            Genesis::from_json("{\"chain_id\": 3}"),
            Err(GenesisError::Parse(_))
        ));
    }
}
