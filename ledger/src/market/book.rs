//! The market's part of the ledger state: attestations, sale contracts, trades in escrow and
//! auction rounds, with their canonical encoding for the state hash.

use crate::units::{MicroCredits, Price, WattHours};
use std::collections::BTreeMap;

use serde::Serialize;

use crate::codec::Writer;
use crate::committed_map::{CommittedMap, EntryValue};
use crate::crypto::{Hash32, MemberKey};
use crate::genesis::StateCommitment;

/// A home's attested generation for one interval, and how much of it is still uncommitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AttestationRecord {
    /// Energy the battery attested.
    pub energy_wh: WattHours,
    /// Not yet offered, sold or delivered.
    pub remaining_wh: WattHours,
}

/// A home's market over the whole chain, as running totals: what the rules and the reports
/// need of the records that retention removes (protocol.md §12.9).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HomeTotals {
    /// Energy it attested, Wh.
    pub attested_wh: u64,
    /// Energy of its trades as seller, Wh.
    pub sold_wh: u64,
    /// Energy reported delivered for its trades as seller, Wh.
    pub delivered_wh: u64,
    /// Paid to it as seller, µcredits.
    pub paid_out: u64,
    /// The first interval it may still attest: its intervals below were retired (0: none).
    pub attest_from: u64,
}

/// Where (part of) a contract's or trade's energy comes from: an attested interval of the
/// seller's own generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Allocation {
    /// The attested interval.
    pub interval: u64,
    /// Energy taken from it.
    pub wh: WattHours,
}

/// The life of a sale contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ContractStatus {
    /// Can be bought until its expiry height.
    Open,
    /// Bought; the trade carries on.
    Sold {
        /// The trade id (the purchase transaction's id).
        trade: Hash32,
    },
    /// Expired unsold; its energy went back to the seller.
    Expired,
}

/// A sale contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SaleContract {
    /// The seller.
    pub seller: MemberKey,
    /// Energy.
    pub energy_wh: WattHours,
    /// Price.
    pub price: Price,
    /// Last height it can be bought at.
    pub expiry_height: u64,
    /// How its energy reaches the buyer.
    pub mode: crate::tx::DeliveryMode,
    /// Where its energy comes from.
    pub allocation: Vec<Allocation>,
    /// Its state.
    pub status: ContractStatus,
}

/// What a trade came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TradeSource {
    /// A bought sale contract.
    Sale {
        /// The contract.
        contract: Hash32,
    },
    /// A seller's share of a cleared auction round.
    Auction {
        /// The round.
        round: u64,
    },
}

/// A trade: energy the seller must release once it is final, paid from escrow on delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trade {
    /// Contract or auction round.
    pub source: TradeSource,
    /// The seller home, whose battery releases the energy.
    pub seller: MemberKey,
    /// Energy sold.
    pub energy_wh: WattHours,
    /// Escrowed for the seller.
    pub payment: MicroCredits,
    /// Who paid into escrow, and how much (refunds go back in these proportions).
    pub payers: Vec<(MemberKey, MicroCredits)>,
    /// Height of the purchase (or clearing).
    pub traded_height: u64,
    /// Height at which the trade is final and the release order goes out.
    pub release_height: u64,
    /// Last height at which delivery may be reported.
    pub deadline_height: u64,
    /// Provenance: the seller's attested intervals the energy comes from.
    pub allocation: Vec<Allocation>,
    /// Whether the release order went out.
    pub released: bool,
    /// Metered delivery reported by the seller's battery.
    pub delivered_wh: Option<WattHours>,
    /// Paid out to the seller so far.
    pub paid_out: MicroCredits,
    /// Escrow fully paid out or refunded.
    pub settled: bool,
}

/// A seller in an auction round's coalition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoundSeller {
    /// The seller.
    pub seller: MemberKey,
    /// Energy pooled.
    pub energy_wh: WattHours,
    /// Where it comes from.
    pub allocation: Vec<Allocation>,
}

/// A revealed bid of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RevealedBid {
    /// Energy wanted.
    pub energy_wh: WattHours,
    /// Price.
    pub price: Price,
    /// Order of commitment.
    pub seq: u64,
    /// Held in escrow for it (its maximum payment).
    pub escrowed: MicroCredits,
}

/// An auction round in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuctionRound {
    /// The coalition, in join order.
    pub sellers: Vec<RoundSeller>,
    /// Sealed bids, in commitment order (the order is the bid's `seq`).
    pub commits: Vec<(MemberKey, Hash32)>,
    /// Revealed bids by buyer.
    pub reveals: BTreeMap<MemberKey, RevealedBid>,
}

/// Something the market did in a block that the world outside the ledger must act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MarketEvent {
    /// The trade is final: the seller's battery must release the energy by the deadline.
    Release {
        /// Trade id (idempotency key for the battery command).
        trade: Hash32,
        /// The seller home.
        seller: MemberKey,
        /// The buying homes (the trade's payers): the release follows their measured import.
        buyers: Vec<MemberKey>,
        /// The part of the buyers' import this release covers, parts per million: all of it for
        /// a sale; for an auction round, whose sellers all serve the same buyers, this seller's
        /// share of the energy the round sold.
        share_ppm: u32,
        /// Discharge: the seller's battery covers the buyers' import. Charge: the buyer's
        /// battery takes the seller's export.
        mode: crate::tx::DeliveryMode,
        /// Energy to release.
        energy_wh: WattHours,
        /// Last height for the delivery report.
        deadline_height: u64,
    },
    /// A trade's escrow was fully paid out and refunded.
    Settled {
        /// Trade id.
        trade: Hash32,
        /// Energy delivered.
        delivered_wh: WattHours,
        /// Paid to the seller.
        paid_to_seller: MicroCredits,
        /// Refunded to the payers.
        refunded: MicroCredits,
    },
    /// An auction round cleared.
    RoundCleared {
        /// The round.
        round: u64,
        /// Energy sold.
        sold_wh: WattHours,
        /// Paid by the buyers.
        revenue: MicroCredits,
    },
    /// A sale contract expired unsold.
    ContractExpired {
        /// The contract.
        contract: Hash32,
    },
    /// A day-ahead schedule was committed.
    ScheduleCommitted {
        /// The day.
        day: u64,
    },
    /// A scheduled day was billed.
    DayBilled {
        /// The day.
        day: u64,
        /// What each home paid (negative: received), µcredits.
        bills: Vec<(MemberKey, i64)>,
    },
    /// A member joined or left, from the next block on.
    MembershipChanged(crate::membership::MembershipChanged),
    /// What is over left the consensus state (protocol.md §12.9): the trades in full, for an
    /// archive outside the state (`gridlet chain trades`), and how much of the rest.
    Retired {
        /// The retired trades, by id.
        trades: Vec<(Hash32, Trade)>,
        /// Contracts retired.
        contracts: u64,
        /// Attestation records retired.
        attestations: u64,
        /// Billed days retired.
        days: Vec<u64>,
    },
}

/// The market state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MarketState {
    /// Attested generation by (home, interval).
    pub attestations: CommittedMap<(MemberKey, u64), AttestationRecord>,
    /// Sale contracts by id.
    pub contracts: CommittedMap<Hash32, SaleContract>,
    /// Trades by id.
    pub trades: CommittedMap<Hash32, Trade>,
    /// Auction rounds not yet cleared.
    pub rounds: BTreeMap<u64, AuctionRound>,
    /// Held in escrow.
    pub escrow: MicroCredits,
    /// Day-ahead schedules by day.
    pub days: BTreeMap<u64, DayRecord>,
    /// Running totals of each home that took part (attested, sold or delivered).
    pub homes: BTreeMap<MemberKey, HomeTotals>,
    /// The first day a schedule can be committed for: the days below were retired.
    pub days_from: u64,
}

/// A committed day-ahead schedule and its billing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DayRecord {
    /// Each home's scheduled net energy per interval, Wh.
    pub schedule_wh: BTreeMap<MemberKey, Vec<i64>>,
    /// Clearing price per interval, micro-credits per kWh.
    pub prices: Vec<i64>,
    /// The iteration hash chain's last link.
    pub inputs_hash: Hash32,
    /// ADMM iterations.
    pub iterations: u32,
    /// Final residuals, W.
    pub primal_w: i64,
    /// Final dual residual, W.
    pub dual_w: i64,
    /// Each home's verified meter readings, Wh per interval.
    pub metered_wh: BTreeMap<MemberKey, Vec<i64>>,
    /// Once every home's readings are in: what each paid (negative: received), µcredits.
    pub bills: Option<BTreeMap<MemberKey, i64>>,
    /// The height of the block that billed it (retention counts from there).
    pub billed_height: u64,
}

fn len(w: &mut Writer, n: usize) {
    w.u32(u32::try_from(n).unwrap_or(u32::MAX));
}

fn allocations(w: &mut Writer, a: &[Allocation]) {
    len(w, a.len());
    for x in a {
        w.u64(x.interval).u64(x.wh.get());
    }
}

impl EntryValue for AttestationRecord {
    fn encode_value(&self, w: &mut Writer) {
        w.u64(self.energy_wh.get()).u64(self.remaining_wh.get());
    }
}

impl EntryValue for SaleContract {
    fn encode_value(&self, w: &mut Writer) {
        w.fixed(&self.seller.0)
            .u64(self.energy_wh.get())
            .u64(self.price.get())
            .u64(self.expiry_height)
            .u8(match self.mode {
                crate::tx::DeliveryMode::Discharge => 0,
                crate::tx::DeliveryMode::Charge => 1,
            });
        allocations(w, &self.allocation);
        match self.status {
            ContractStatus::Open => {
                w.u8(0);
            }
            ContractStatus::Sold { trade } => {
                w.u8(1).fixed(&trade.0);
            }
            ContractStatus::Expired => {
                w.u8(2);
            }
        }
    }
}

impl EntryValue for Trade {
    fn encode_value(&self, w: &mut Writer) {
        match self.source {
            TradeSource::Sale { contract } => {
                w.u8(0).fixed(&contract.0);
            }
            TradeSource::Auction { round } => {
                w.u8(1).u64(round);
            }
        }
        w.fixed(&self.seller.0)
            .u64(self.energy_wh.get())
            .u64(self.payment.get());
        len(w, self.payers.len());
        for (k, v) in &self.payers {
            w.fixed(&k.0).u64(v.get());
        }
        w.u64(self.traded_height)
            .u64(self.release_height)
            .u64(self.deadline_height);
        allocations(w, &self.allocation);
        w.u8(u8::from(self.released));
        match self.delivered_wh {
            None => {
                w.u8(0);
            }
            Some(d) => {
                w.u8(1).u64(d.get());
            }
        }
        w.u64(self.paid_out.get()).u8(u8::from(self.settled));
    }
}

impl MarketState {
    /// The release order of trade `id`, as the block that released it raised it.
    pub(crate) fn release_event(&self, id: Hash32, t: &Trade) -> MarketEvent {
        MarketEvent::Release {
            trade: id,
            seller: t.seller,
            buyers: t.payers.iter().map(|(k, _)| *k).collect(),
            share_ppm: self.release_share_ppm(t),
            mode: self.trade_mode(t),
            energy_wh: t.energy_wh,
            deadline_height: t.deadline_height,
        }
    }

    /// The release orders still open: trades released but with no delivery reported and not
    /// settled. A gateway that restarts hands them to its battery again (which repeats none
    /// it journaled, and reports again one it finished), since the blocks that raised them
    /// are not replayed.
    pub fn open_releases(&self) -> Vec<MarketEvent> {
        self.trades
            .iter()
            .filter(|(_, t)| t.released && t.delivered_wh.is_none() && !t.settled)
            .map(|(id, t)| self.release_event(*id, t))
            .collect()
    }

    /// How a trade's energy reaches its buyer (auction trades discharge).
    pub fn trade_mode(&self, t: &Trade) -> crate::tx::DeliveryMode {
        match t.source {
            TradeSource::Sale { contract } => self
                .contracts
                .get(&contract)
                .map_or(crate::tx::DeliveryMode::Discharge, |c| c.mode),
            TradeSource::Auction { .. } => crate::tx::DeliveryMode::Discharge,
        }
    }

    /// The part of the buyers' import a trade's release covers, parts per million: all of it
    /// for a sale; for an auction trade its share of the energy its round sold (every seller
    /// of a round serves the same buyers).
    pub fn release_share_ppm(&self, t: &Trade) -> u32 {
        let TradeSource::Auction { round } = t.source else {
            return 1_000_000;
        };
        let total = self
            .trades
            .values()
            .filter(|o| o.source == TradeSource::Auction { round })
            .fold(0u64, |acc, o| acc.saturating_add(o.energy_wh.get()));
        u128::from(t.energy_wh.get())
            .saturating_mul(1_000_000)
            .checked_div(u128::from(total))
            .map_or(1_000_000, |s| u32::try_from(s).unwrap_or(1_000_000))
    }

    /// The home that measures and reports a trade's delivery: the seller for a discharge, the
    /// (single) buyer for a charge.
    pub fn reporter(&self, t: &Trade) -> Option<MemberKey> {
        match self.trade_mode(t) {
            crate::tx::DeliveryMode::Discharge => Some(t.seller),
            crate::tx::DeliveryMode::Charge => t.payers.first().map(|(k, _)| *k),
        }
    }

    /// Sellable energy of a home: attested and not yet committed to any offer or trade.
    pub fn sellable_wh(&self, home: &MemberKey) -> WattHours {
        let total = self
            .attestations
            .range((*home, 0)..=(*home, u64::MAX))
            .fold(0u64, |acc, (_, r)| acc.saturating_add(r.remaining_wh.get()));
        WattHours::new(total)
    }

    /// Total attested energy of a home, over the whole chain.
    pub fn attested_wh(&self, home: &MemberKey) -> WattHours {
        WattHours::new(self.homes.get(home).map_or(0, |t| t.attested_wh))
    }

    /// Energy a home attested and has not delivered: sellable, offered, pooled or sold and not
    /// yet reported delivered. Bounded by the home's equipment (protocol.md §12.1).
    pub fn outstanding_wh(&self, home: &MemberKey) -> WattHours {
        self.attested_wh(home)
            .saturating_sub(self.delivered_wh(home))
    }

    /// Whether every Wh `home` sold traces to its attested generation: its trades' allocations
    /// sum to what they sold, and it delivered no more than it attested.
    pub fn provenance_holds(&self, home: &MemberKey) -> bool {
        self.delivered_wh(home) <= self.attested_wh(home)
            && self.trades.values().filter(|t| t.seller == *home).all(|t| {
                WattHours::checked_sum(t.allocation.iter().map(|a| a.wh)) == Some(t.energy_wh)
            })
    }

    /// The market's totals over all trades, retired ones included (for reports): Wh traded,
    /// Wh delivered, paid out to sellers (saturating: figures, not state).
    pub fn totals(&self) -> (u64, u64, u64) {
        self.homes
            .values()
            .fold((0u64, 0u64, 0u64), |(t, d, p), x| {
                (
                    t.saturating_add(x.sold_wh),
                    d.saturating_add(x.delivered_wh),
                    p.saturating_add(x.paid_out),
                )
            })
    }

    /// Total delivered energy of a home (as seller), over the whole chain.
    pub fn delivered_wh(&self, home: &MemberKey) -> WattHours {
        WattHours::new(self.homes.get(home).map_or(0, |t| t.delivered_wh))
    }

    /// A home's running totals, to update.
    pub(crate) fn totals_of(&mut self, home: MemberKey) -> &mut HomeTotals {
        self.homes.entry(home).or_default()
    }

    /// Appends the canonical encoding (see `docs/protocol.md` §7): the attestation, contract
    /// and trade lists in full, or only their trie roots (§7.2).
    pub fn encode_into(&self, w: &mut Writer, commitment: StateCommitment) {
        w.u64(self.escrow.get());
        match commitment {
            StateCommitment::Flat => {
                self.attestations.encode_flat(w);
                self.contracts.encode_flat(w);
                self.trades.encode_flat(w);
            }
            StateCommitment::Trie => {
                w.fixed(&self.attestations.root().0)
                    .fixed(&self.contracts.root().0)
                    .fixed(&self.trades.root().0);
            }
        }
        len(w, self.rounds.len());
        for (round, r) in &self.rounds {
            w.u64(*round);
            len(w, r.sellers.len());
            for s in &r.sellers {
                w.fixed(&s.seller.0).u64(s.energy_wh.get());
                allocations(w, &s.allocation);
            }
            len(w, r.commits.len());
            for (k, h) in &r.commits {
                w.fixed(&k.0).fixed(&h.0);
            }
            len(w, r.reveals.len());
            for (k, b) in &r.reveals {
                w.fixed(&k.0)
                    .u64(b.energy_wh.get())
                    .u64(b.price.get())
                    .u64(b.seq)
                    .u64(b.escrowed.get());
            }
        }
        len(w, self.days.len());
        for (day, d) in &self.days {
            w.u64(*day);
            len(w, d.schedule_wh.len());
            for (k, v) in &d.schedule_wh {
                w.fixed(&k.0);
                len(w, v.len());
                for x in v {
                    w.i64(*x);
                }
            }
            len(w, d.prices.len());
            for x in &d.prices {
                w.i64(*x);
            }
            w.fixed(&d.inputs_hash.0)
                .u32(d.iterations)
                .i64(d.primal_w)
                .i64(d.dual_w);
            len(w, d.metered_wh.len());
            for (k, v) in &d.metered_wh {
                w.fixed(&k.0);
                len(w, v.len());
                for x in v {
                    w.i64(*x);
                }
            }
            match &d.bills {
                None => {
                    w.u8(0);
                }
                Some(bills) => {
                    w.u8(1);
                    len(w, bills.len());
                    for (k, x) in bills {
                        w.fixed(&k.0).i64(*x);
                    }
                    w.u64(d.billed_height);
                }
            }
        }
        len(w, self.homes.len());
        for (k, t) in &self.homes {
            w.fixed(&k.0)
                .u64(t.attested_wh)
                .u64(t.sold_wh)
                .u64(t.delivered_wh)
                .u64(t.paid_out)
                .u64(t.attest_from);
        }
        w.u64(self.days_from);
    }
}
