//! The home's trading strategy, as a pure function of what the devices say and what the chain
//! holds: offer stored solar energy above a reserve, buy when the home draws from the grid and
//! its own battery is low. The market actor calls [`decide`] once per period and sends what it
//! returns; nothing here does I/O or reads a clock.
//!
//! Rules (a home gateway must never trade on data it cannot trust):
//! - no decision at all without a valid meter reading (and a valid battery reading to sell);
//! - one open sale contract and one outstanding purchase at a time, so a slow chain never
//!   piles up commitments the battery cannot honour;
//! - offered energy is what the battery holds above the reserve, minus what is already
//!   promised (open contracts, trades not yet delivered);
//! - prices stay inside `[floor_price, grid_tariff]` of the genesis.

use gridlet_ledger::market::book::{ContractStatus, MarketState, SaleContract};
use gridlet_ledger::market::clearing::payment;
use gridlet_ledger::{DeliveryMode, Hash32, MemberKey};
use gridlet_ledger::{MicroCredits, Price, WattHours};
use serde::{Deserialize, Serialize};

/// Strategy settings (the `[strategy]` section of the gateway config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StrategyConfig {
    /// Whether the gateway trades on its own (off: only through the HTTP API).
    pub enabled: bool,
    /// How often to decide, in ms of community time.
    pub period_ms: u64,
    /// State of charge kept for the home itself, %.
    pub reserve_soc_pct: u8,
    /// Smallest offer worth a transaction, Wh.
    pub min_offer_wh: WattHours,
    /// Largest single offer, Wh.
    pub max_offer_wh: WattHours,
    /// Asking price, micro-credits per kWh.
    pub offer_price: Price,
    /// How many blocks an offer stays open.
    pub offer_blocks: u64,
    /// Highest price paid, micro-credits per kWh.
    pub max_buy_price: Price,
    /// Buy only while the battery is below this state of charge, %.
    pub buy_below_soc_pct: u8,
    /// Buy only while the home imports at least this much from the grid, W: a seller covers
    /// what the buyer's meter imports, so while the buyer's own battery still covers its load
    /// there is nothing to deliver.
    pub buy_above_import_w: u32,
    /// Largest single purchase, Wh.
    pub max_buy_wh: WattHours,
    /// Sell by joining auction rounds and buy by sealed bids (at `max_buy_price`) instead of
    /// sale contracts, where the community runs auctions.
    pub auctions: bool,
    /// A battery at or above this state of charge is full: its PV surplus is offered as a
    /// charge sale (into a neighbour's battery) instead of going to the main grid, %.
    pub full_soc_pct: u8,
    /// Offer surplus only while the home exports at least this much, W.
    pub surplus_above_w: u32,
    /// Asking price of surplus, micro-credits per kWh (below `offer_price`: the alternative
    /// is the feed-in tariff).
    pub surplus_price: Price,
    /// Buy a neighbour's surplus into the battery while it is below this state of charge, %.
    pub charge_below_soc_pct: u8,
}

impl Default for StrategyConfig {
    fn default() -> Self {
        StrategyConfig {
            enabled: true,
            period_ms: 15 * 60 * 1000,
            reserve_soc_pct: 30,
            min_offer_wh: WattHours::new(200),
            max_offer_wh: WattHours::new(2_000),
            offer_price: Price::new(200_000),
            offer_blocks: 30,
            max_buy_price: Price::new(250_000),
            buy_below_soc_pct: 20,
            buy_above_import_w: 300,
            max_buy_wh: WattHours::new(2_000),
            auctions: false,
            full_soc_pct: 95,
            surplus_above_w: 500,
            surplus_price: Price::new(120_000),
            charge_below_soc_pct: 80,
        }
    }
}

/// A setting that cannot work, named by its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("strategy.{field}: {reason}")]
pub struct StrategyConfigError {
    /// The field.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

impl StrategyConfig {
    /// Checks the settings against the community's price band.
    pub fn check(&self, floor_price: Price, grid_tariff: Price) -> Result<(), StrategyConfigError> {
        let err = |field, reason: String| Err(StrategyConfigError { field, reason });
        if self.period_ms < 1_000 {
            return err("period_ms", format!("{} is below 1000", self.period_ms));
        }
        if self.reserve_soc_pct > 100 || self.buy_below_soc_pct > 100 {
            return err("reserve_soc_pct", "percentages are 0–100".into());
        }
        if self.full_soc_pct > 100 || self.charge_below_soc_pct > 100 {
            return err("full_soc_pct", "percentages are 0–100".into());
        }

        if self.min_offer_wh.is_zero() || self.min_offer_wh > self.max_offer_wh {
            return err(
                "min_offer_wh",
                format!(
                    "must be positive and at most max_offer_wh ({})",
                    self.max_offer_wh
                ),
            );
        }
        for (field, price) in [
            ("offer_price", self.offer_price),
            ("surplus_price", self.surplus_price),
        ] {
            if !(floor_price..=grid_tariff).contains(&price) {
                return err(
                    field,
                    format!(
                        "{} is outside the community's band {}–{}",
                        price.get(),
                        floor_price.get(),
                        grid_tariff.get()
                    ),
                );
            }
        }
        if self.max_buy_price > grid_tariff {
            return err(
                "max_buy_price",
                format!(
                    "{} is above the grid tariff {}",
                    self.max_buy_price.get(),
                    grid_tariff.get()
                ),
            );
        }
        if self.offer_blocks == 0 {
            return err("offer_blocks", "must be positive".into());
        }
        Ok(())
    }
}

/// What the home's devices say now (only valid values; `None` = missing, stale or unreadable).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HomeReadings {
    /// Grid power at the meter, W (positive = import).
    pub grid_w: Option<f64>,
    /// Energy the battery holds, Wh.
    pub battery_wh: Option<f64>,
    /// Battery state of charge, %.
    pub soc_pct: Option<f64>,
    /// Battery power, W (positive = discharge: covering the home's own deficit).
    pub battery_w: Option<f64>,
    /// What the battery can give without the home importing more over the next day, by its
    /// forecast ([`crate::spare::spare_wh`]), Wh; `None` without a forecast (the reserve alone
    /// decides).
    pub spare_wh: Option<f64>,
}

/// What the strategy wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Attest `energy_wh` for `interval` and offer it.
    Offer {
        /// Discharge (from the battery) or charge (PV surplus into the buyer's battery).
        mode: DeliveryMode,
        /// Attestation interval (one per period).
        interval: u64,
        /// Energy, Wh.
        energy_wh: WattHours,
        /// Price, micro-credits per kWh.
        price: Price,
        /// Last height it can be bought at.
        expiry_height: u64,
    },
    /// Attest `energy_wh` for `interval` and pool it in auction `round`.
    Join {
        /// The round (in its commit phase).
        round: u64,
        /// Attestation interval.
        interval: u64,
        /// Energy, Wh.
        energy_wh: WattHours,
    },
    /// Place a sealed bid in the next auction round.
    Bid {
        /// Energy wanted, Wh.
        energy_wh: WattHours,
        /// Price, micro-credits per kWh.
        price: Price,
    },
    /// Buy a contract.
    Buy {
        /// Contract id.
        contract: Hash32,
        /// Exact payment.
        payment: MicroCredits,
    },
}

/// What the strategy reads from the chain and from the market actor.
#[derive(Debug, Clone, Copy)]
pub struct ChainView<'a> {
    /// Height of the head.
    pub height: u64,
    /// The market after the head.
    pub market: &'a MarketState,
    /// This home's balance.
    pub balance: MicroCredits,
    /// Blocks per auction round (0: no auctions).
    pub auction_round_blocks: u64,
    /// Whether this home has a sealed bid not yet finished.
    pub bid_pending: bool,
    /// The most this home may have attested and not delivered (its genesis equipment, §12.1).
    pub attest_bound: WattHours,
}

/// The most a new offer of this home can be, as far as the chain is concerned: what is
/// already attested and uncommitted, plus what its equipment bound leaves room for.
pub fn offer_headroom(market: &MarketState, me: &MemberKey, bound: WattHours) -> WattHours {
    market
        .sellable_wh(me)
        .saturating_add(bound.saturating_sub(market.outstanding_wh(me)))
}

/// The part of an offer of `energy_wh` that needs a fresh attestation: what the chain does
/// not already hold as this home's sellable energy (an expired offer's energy is sold again
/// without claiming it twice). `None`: all of it is already attested.
pub fn fresh_attestation_wh(
    market: &MarketState,
    me: &MemberKey,
    energy_wh: WattHours,
) -> Option<WattHours> {
    Some(energy_wh.saturating_sub(market.sellable_wh(me))).filter(|w| !w.is_zero())
}

/// Energy this home's battery has promised and not yet delivered: open discharge contracts,
/// energy pooled in auction rounds not yet cleared, and unreported discharge trades (a charge
/// sale's surplus comes from the PV, not the battery).
pub fn promised_wh(market: &MarketState, me: &MemberKey) -> WattHours {
    let open = market
        .contracts
        .values()
        .filter(|c| {
            c.seller == *me && c.status == ContractStatus::Open && c.mode == DeliveryMode::Discharge
        })
        .fold(0u64, |acc, c| acc.saturating_add(c.energy_wh.get()));
    let trading = market
        .trades
        .values()
        .filter(|t| {
            t.seller == *me
                && t.delivered_wh.is_none()
                && !t.settled
                && market.trade_mode(t) == DeliveryMode::Discharge
        })
        .fold(0u64, |acc, t| acc.saturating_add(t.energy_wh.get()));
    let pooled = market
        .rounds
        .values()
        .flat_map(|r| r.sellers.iter())
        .filter(|s| s.seller == *me)
        .fold(0u64, |acc, s| acc.saturating_add(s.energy_wh.get()));
    WattHours::new(open.saturating_add(trading).saturating_add(pooled))
}

/// What this home's battery can sell now: what it stores above the reserve — and, with a
/// forecast, no more than is spare by it (`spare_wh`) — minus what is already promised. `None`
/// without a valid battery reading. Offers, the strategy's and the API's alike, draw only on
/// this, so the gateway never attests energy it does not hold.
pub fn sellable_now(
    reserve_soc_pct: u8,
    stored_wh: Option<f64>,
    soc_pct: Option<f64>,
    spare_wh: Option<f64>,
    market: &MarketState,
    me: &MemberKey,
) -> Option<Sellable> {
    let (stored, soc) = (stored_wh?, soc_pct?);
    if !(soc > 0.0 && stored.is_finite() && stored >= 0.0) {
        return None;
    }
    let capacity = stored / (soc / 100.0);
    let reserve = capacity * f64::from(reserve_soc_pct) / 100.0;
    // The forecast keeps what the home will need itself; a missing or broken figure keeps all.
    let kept = match spare_wh {
        Some(spare) if spare.is_finite() => reserve.max(stored - spare.max(0.0)),
        Some(_) => stored,
        None => reserve,
    };
    let above_reserve = WattHours::new((stored - kept).max(0.0) as u64);
    let promised = promised_wh(market, me);
    Some(Sellable {
        stored: WattHours::new(stored as u64),
        reserve: WattHours::new(kept.min(stored) as u64),
        by_forecast: spare_wh.is_some(),
        promised,
        sellable: above_reserve.saturating_sub(promised),
    })
}

/// The PV surplus this home can offer as a charge sale now: an hour of what it exports at this
/// moment (Wh). `None` without a fresh meter reading. The strategy's surplus offers and the
/// API's charge offers alike draw only on this.
pub fn surplus_now(grid_w: Option<f64>) -> Option<WattHours> {
    let export_w = grid_w.filter(|w| w.is_finite())?.min(0.0).abs();
    Some(WattHours::new(export_w as u64))
}

/// [`sellable_now`]'s figures, for an answer that says why an offer is too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sellable {
    /// Stored in the battery.
    pub stored: WattHours,
    /// Kept back: the reserve, or with a forecast what the home will need itself if that is
    /// more.
    pub reserve: WattHours,
    /// Whether the forecast decided what is kept (beside the reserve).
    pub by_forecast: bool,
    /// Already offered, pooled or sold and not delivered.
    pub promised: WattHours,
    /// What can be offered now.
    pub sellable: WattHours,
}

/// The auction round whose commit phase covers the next block and the one after it.
fn commit_round(round_blocks: u64, height: u64) -> Option<u64> {
    use gridlet_ledger::market::auction_phase;
    let now = auction_phase(round_blocks, height.saturating_add(1))?;
    let later = auction_phase(round_blocks, height.saturating_add(3))?;
    (now.commit && later.commit && now.round == later.round).then_some(now.round)
}

/// A home exporting more than this does not buy surplus: its own goes into its battery.
const CHARGE_ONLY_ABOVE_EXPORT_W: u32 = 100;

/// Whether this home would buy contract `c` of `mode`, with `room` Wh to take it.
fn buyable(
    cfg: &StrategyConfig,
    me: &MemberKey,
    height: u64,
    c: &SaleContract,
    mode: DeliveryMode,
    room: WattHours,
) -> bool {
    c.seller != *me
        && c.mode == mode
        && c.status == ContractStatus::Open
        && c.expiry_height > height.saturating_add(1)
        && c.price <= cfg.max_buy_price
        && c.energy_wh <= cfg.max_buy_wh.min(room)
}

/// Free room in the battery, Wh (from what it stores and its state of charge).
fn battery_room(readings: &HomeReadings) -> Option<WattHours> {
    let (stored, soc) = (readings.battery_wh?, readings.soc_pct?);
    if !(soc > 0.5 && stored.is_finite() && stored >= 0.0) {
        return None;
    }
    let capacity = stored / (soc / 100.0);
    Some(WattHours::new((capacity - stored).max(0.0) as u64))
}

/// One decision round at community time `now_ms`.
pub fn decide(
    cfg: &StrategyConfig,
    me: &MemberKey,
    now_ms: u64,
    readings: &HomeReadings,
    chain: &ChainView<'_>,
) -> Vec<Decision> {
    let (height, market, balance) = (chain.height, chain.market, chain.balance);
    let auctions = cfg.auctions && chain.auction_round_blocks > 0;
    let mut out = Vec::new();
    if !cfg.enabled {
        return out;
    }
    let Some(grid_w) = readings.grid_w else {
        return out;
    };
    let interval = now_ms.checked_div(cfg.period_ms).unwrap_or(0);
    let waiting = market
        .trades
        .values()
        .any(|t| !t.settled && t.delivered_wh.is_none() && t.payers.iter().any(|(p, _)| p == me));
    let battery_low = readings
        .soc_pct
        .is_none_or(|s| s < f64::from(cfg.buy_below_soc_pct));
    // Only grid import can be covered by a neighbour (delivery follows the buyer's meter).
    let importing = grid_w >= f64::from(cfg.buy_above_import_w);
    // A neighbour's surplus into this home's battery, while it has room for it and the home
    // does not export itself (its own surplus comes first) — unless a neighbour's battery
    // should rather cover what it imports now. Buying it comes before offering what the
    // battery holds.
    let wants_discharge = battery_low && importing;
    if !auctions && !waiting && !wants_discharge && grid_w > -f64::from(CHARGE_ONLY_ABOVE_EXPORT_W)
    {
        let room = battery_room(readings).filter(|_| {
            readings
                .soc_pct
                .is_some_and(|s| s < f64::from(cfg.charge_below_soc_pct))
        });
        let surplus = room.and_then(|room| {
            market
                .contracts
                .iter()
                .filter(|(_, c)| buyable(cfg, me, height, c, DeliveryMode::Charge, room))
                .min_by_key(|(id, c)| (c.price, std::cmp::Reverse(c.energy_wh), **id))
        });
        if let Some((id, c)) = surplus {
            if let Some(pay) = payment(c.energy_wh, c.price).ok().filter(|p| *p <= balance) {
                return vec![Decision::Buy {
                    contract: *id,
                    payment: pay,
                }];
            }
        }
    }
    if let (Some(stored), Some(soc)) = (readings.battery_wh, readings.soc_pct) {
        let has_open_offer = market
            .contracts
            .values()
            .any(|c| c.seller == *me && c.status == ContractStatus::Open);
        let attested_this_interval = market.attestations.contains_key(&(*me, interval));
        let sellable = sellable_now(
            cfg.reserve_soc_pct,
            Some(stored),
            Some(soc),
            readings.spare_wh,
            market,
            me,
        );
        // A full battery exporting PV surplus: offer the surplus into a neighbour's battery
        // (an hour of what it exports now) rather than let the main grid take it.
        let surplus_wh = surplus_now(Some(grid_w)).unwrap_or(WattHours::ZERO);
        let surplus = !auctions
            && soc >= f64::from(cfg.full_soc_pct)
            && surplus_wh >= WattHours::new(u64::from(cfg.surplus_above_w));
        let headroom = offer_headroom(market, me, chain.attest_bound);
        if surplus {
            let energy_wh = surplus_wh.min(cfg.max_offer_wh).min(headroom);
            if !has_open_offer && !attested_this_interval && energy_wh >= cfg.min_offer_wh {
                out.push(Decision::Offer {
                    mode: DeliveryMode::Charge,
                    interval,
                    energy_wh,
                    price: cfg.surplus_price,
                    expiry_height: height.saturating_add(cfg.offer_blocks),
                });
            }
        } else if let Some(s) = sellable.filter(|_| !has_open_offer && !attested_this_interval) {
            let offer = s.sellable.min(cfg.max_offer_wh).min(headroom);
            if offer >= cfg.min_offer_wh && auctions {
                let round = commit_round(chain.auction_round_blocks, height);
                let joined = |r: u64| {
                    market
                        .rounds
                        .get(&r)
                        .is_some_and(|x| x.sellers.iter().any(|s| s.seller == *me))
                };
                // A home is a seller or a buyer of a round, never both (protocol §12.5).
                if let Some(round) = round.filter(|r| !joined(*r) && !chain.bid_pending) {
                    out.push(Decision::Join {
                        round,
                        interval,
                        energy_wh: offer,
                    });
                }
            } else if offer >= cfg.min_offer_wh {
                out.push(Decision::Offer {
                    mode: DeliveryMode::Discharge,
                    interval,
                    energy_wh: offer,
                    price: cfg.offer_price,
                    expiry_height: height.saturating_add(cfg.offer_blocks),
                });
            }
        }
    }
    if auctions {
        let selling = market
            .rounds
            .values()
            .any(|r| r.sellers.iter().any(|s| s.seller == *me));
        if battery_low && importing && !waiting && !chain.bid_pending && !selling && out.is_empty()
        {
            let max_pay = payment(cfg.max_buy_wh, cfg.max_buy_price).unwrap_or(MicroCredits::MAX);
            if max_pay <= balance {
                out.push(Decision::Bid {
                    energy_wh: cfg.max_buy_wh,
                    price: cfg.max_buy_price,
                });
            }
        }
        return out;
    }
    let best = if wants_discharge && !waiting {
        // A neighbour's battery covers what this home imports.
        market
            .contracts
            .iter()
            .filter(|(_, c)| buyable(cfg, me, height, c, DeliveryMode::Discharge, WattHours::MAX))
            .min_by_key(|(id, c)| (c.price, std::cmp::Reverse(c.energy_wh), **id))
    } else {
        None
    };
    if let Some((id, c)) = best {
        if let Ok(pay) = payment(c.energy_wh, c.price) {
            if pay <= balance {
                out.push(Decision::Buy {
                    contract: *id,
                    payment: pay,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridlet_ledger::crypto::deterministic_key;
    use gridlet_ledger::market::book::{Allocation, SaleContract, Trade, TradeSource};

    fn decide_plain(
        cfg: &StrategyConfig,
        me: &MemberKey,
        now_ms: u64,
        height: u64,
        readings: &HomeReadings,
        market: &MarketState,
        balance: u64,
    ) -> Vec<Decision> {
        decide(
            cfg,
            me,
            now_ms,
            readings,
            &ChainView {
                height,
                market,
                balance: MicroCredits::new(balance),
                auction_round_blocks: 20,
                bid_pending: false,
                attest_bound: WattHours::new(1_000_000),
            },
        )
    }

    fn key(i: u64) -> MemberKey {
        MemberKey::from_secret(&deterministic_key(7, i))
    }

    fn contract(seller: MemberKey, energy_wh: u64, price: u64) -> SaleContract {
        SaleContract {
            seller,
            energy_wh: WattHours::new(energy_wh),
            price: Price::new(price),
            expiry_height: 100,
            mode: DeliveryMode::Discharge,
            allocation: vec![Allocation {
                interval: 1,
                wh: WattHours::new(energy_wh),
            }],
            status: ContractStatus::Open,
        }
    }

    fn full_battery() -> HomeReadings {
        // 8 kWh at 80 %: a 10 kWh battery.
        HomeReadings {
            grid_w: Some(-1_500.0),
            battery_wh: Some(8_000.0),
            soc_pct: Some(80.0),
            battery_w: Some(0.0),
            spare_wh: None,
        }
    }

    #[test]
    fn offers_what_is_stored_above_the_reserve_up_to_the_cap() {
        let cfg = StrategyConfig {
            max_offer_wh: WattHours::new(10_000),
            ..StrategyConfig::default()
        };
        let d = decide_plain(
            &cfg,
            &key(0),
            3 * cfg.period_ms + 5,
            10,
            &full_battery(),
            &MarketState::default(),
            0,
        );
        // 8000 Wh stored, 30 % of 10 kWh kept: 5000 Wh offered.
        assert_eq!(
            d,
            vec![Decision::Offer {
                mode: DeliveryMode::Discharge,
                interval: 3,
                energy_wh: WattHours::new(5_000),
                price: cfg.offer_price,
                expiry_height: 10 + cfg.offer_blocks,
            }]
        );
        let capped = decide_plain(
            &StrategyConfig::default(),
            &key(0),
            0,
            10,
            &full_battery(),
            &MarketState::default(),
            0,
        );
        assert!(matches!(
            capped[..],
            [Decision::Offer { energy_wh, .. }] if energy_wh == WattHours::new(2_000)
        ));
    }

    #[test]
    fn with_a_forecast_it_offers_what_is_spare_and_never_below_the_reserve() {
        let cfg = StrategyConfig {
            max_offer_wh: WattHours::new(10_000),
            reserve_soc_pct: 10,
            ..StrategyConfig::default()
        };
        let offered = |spare_wh: Option<f64>| {
            let r = HomeReadings {
                spare_wh,
                ..full_battery()
            };
            match decide_plain(&cfg, &key(0), 0, 10, &r, &MarketState::default(), 0)[..] {
                [Decision::Offer { energy_wh, .. }] => Some(energy_wh.get()),
                _ => None,
            }
        };
        // 8000 Wh stored; the reserve keeps 1000 Wh.
        assert_eq!(offered(None), Some(7_000));
        // The home needs 5500 Wh itself by its forecast: 2500 Wh are offered.
        assert_eq!(offered(Some(2_500.0)), Some(2_500));
        // More spare than the reserve allows: the reserve holds.
        assert_eq!(offered(Some(9_000.0)), Some(7_000));
        // Less than the smallest offer, or a figure that makes no sense: nothing.
        assert_eq!(offered(Some(150.0)), None);
        assert_eq!(offered(Some(f64::NAN)), None);
        let s = sellable_now(
            10,
            Some(8_000.0),
            Some(80.0),
            Some(2_500.0),
            &MarketState::default(),
            &key(0),
        )
        .unwrap();
        assert_eq!((s.reserve.get(), s.by_forecast), (5_500, true));
    }

    #[test]
    fn offers_stay_inside_the_homes_equipment_bound_and_reuse_attested_energy() {
        use gridlet_ledger::market::book::AttestationRecord;
        let cfg = StrategyConfig {
            max_offer_wh: WattHours::new(10_000),
            ..StrategyConfig::default()
        };
        let me = key(0);
        // 1 200 Wh attested earlier and still sellable (an offer that expired unsold), out
        // of a bound of 1 500 Wh: at most 1 200 + 300 Wh can be offered, 300 Wh of it fresh.
        let mut market = MarketState::default();
        market.attestations.insert(
            (me, 1),
            AttestationRecord {
                energy_wh: WattHours::new(1_200),
                remaining_wh: WattHours::new(1_200),
            },
        );
        market.homes.entry(me).or_default().attested_wh = 1_200;
        assert_eq!(
            offer_headroom(&market, &me, WattHours::new(1_500)),
            WattHours::new(1_500)
        );
        let view = |market, attest_bound| ChainView {
            height: 10,
            market,
            balance: MicroCredits::new(0),
            auction_round_blocks: 20,
            bid_pending: false,
            attest_bound,
        };
        let now = 3 * cfg.period_ms;
        let d = decide(
            &cfg,
            &me,
            now,
            &full_battery(),
            &view(&market, WattHours::new(1_500)),
        );
        assert!(matches!(
            d[..],
            [Decision::Offer { energy_wh, .. }] if energy_wh == WattHours::new(1_500)
        ));
        assert_eq!(
            fresh_attestation_wh(&market, &me, WattHours::new(1_500)),
            Some(WattHours::new(300))
        );
        assert_eq!(
            fresh_attestation_wh(&market, &me, WattHours::new(1_000)),
            None
        );
        // A home without battery or PV in genesis offers nothing.
        let empty = MarketState::default();
        let d = decide(
            &cfg,
            &key(1),
            now,
            &full_battery(),
            &view(&empty, WattHours::ZERO),
        );
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn promised_energy_is_not_offered_twice_and_one_offer_stays_open() {
        let cfg = StrategyConfig {
            max_offer_wh: WattHours::new(10_000),
            ..StrategyConfig::default()
        };
        let me = key(0);
        let mut m = MarketState::default();
        m.trades.insert(
            Hash32([1; 32]),
            Trade {
                source: TradeSource::Sale {
                    contract: Hash32([2; 32]),
                },
                seller: me,
                energy_wh: WattHours::new(4_500),
                payment: MicroCredits::new(1),
                payers: vec![(key(1), MicroCredits::new(1))],
                traded_height: 1,
                release_height: 4,
                deadline_height: 60,
                allocation: vec![],
                released: true,
                delivered_wh: None,
                paid_out: MicroCredits::new(0),
                settled: false,
            },
        );
        let d = decide_plain(&cfg, &me, 0, 10, &full_battery(), &m, 0);
        assert!(
            matches!(d[..], [Decision::Offer { energy_wh, .. }] if energy_wh == WattHours::new(500))
        );
        m.contracts
            .insert(Hash32([3; 32]), contract(me, 500, 200_000));
        assert!(decide_plain(&cfg, &me, 0, 10, &full_battery(), &m, 0).is_empty());
    }

    #[test]
    fn nothing_without_a_valid_meter_and_no_offer_without_a_battery_reading() {
        let cfg = StrategyConfig::default();
        let mut r = full_battery();
        r.grid_w = None;
        assert!(decide_plain(&cfg, &key(0), 0, 1, &r, &MarketState::default(), 0).is_empty());
        let r = HomeReadings {
            grid_w: Some(-2_000.0),
            battery_wh: None,
            soc_pct: Some(80.0),
            battery_w: None,
            spare_wh: None,
        };
        assert!(decide_plain(&cfg, &key(0), 0, 1, &r, &MarketState::default(), 0).is_empty());
    }

    #[test]
    fn buys_the_cheapest_affordable_offer_when_importing_with_a_low_battery() {
        let cfg = StrategyConfig::default();
        let me = key(0);
        let mut m = MarketState::default();
        m.contracts
            .insert(Hash32([1; 32]), contract(key(1), 1_000, 220_000));
        m.contracts
            .insert(Hash32([2; 32]), contract(key(2), 1_000, 180_000));
        m.contracts
            .insert(Hash32([3; 32]), contract(me, 1_000, 100_000));
        m.contracts
            .insert(Hash32([4; 32]), contract(key(3), 1_000, 290_000));
        let low = HomeReadings {
            grid_w: Some(900.0),
            battery_wh: Some(500.0),
            soc_pct: Some(5.0),
            battery_w: Some(0.0),
            spare_wh: None,
        };
        let d = decide_plain(&cfg, &me, 0, 10, &low, &m, 1_000_000);
        assert_eq!(
            d,
            vec![Decision::Buy {
                contract: Hash32([2; 32]),
                payment: MicroCredits::new(180_000),
            }]
        );
        // Too poor, not importing, or battery not low: no purchase.
        assert!(decide_plain(&cfg, &me, 0, 10, &low, &m, 179_999).is_empty());
        let exporting = HomeReadings {
            grid_w: Some(-100.0),
            ..low
        };
        assert!(decide_plain(&cfg, &me, 0, 10, &exporting, &m, 1_000_000).is_empty());
        // While the home's own battery covers its load it imports nothing: nothing a
        // neighbour could deliver, so nothing is bought.
        let covered = HomeReadings {
            grid_w: Some(0.0),
            battery_w: Some(800.0),
            ..low
        };
        assert!(decide_plain(&cfg, &me, 0, 10, &covered, &m, 1_000_000).is_empty());
        let charged = HomeReadings {
            soc_pct: Some(50.0),
            battery_wh: Some(1_000.0),
            ..low
        };
        assert!(decide_plain(&cfg, &me, 0, 10, &charged, &m, 1_000_000)
            .iter()
            .all(|d| !matches!(d, Decision::Buy { .. })));
        // An expiring contract is left alone.
        assert!(decide_plain(&cfg, &me, 0, 99, &low, &m, 1_000_000).is_empty());
    }

    #[test]
    fn a_full_battery_offers_its_surplus_and_a_neighbour_with_room_buys_it_to_charge() {
        let cfg = StrategyConfig::default();
        // 9.7 of 10 kWh and exporting 1.6 kW: the surplus (an hour of it) as a charge sale.
        let full = HomeReadings {
            grid_w: Some(-1_600.0),
            battery_wh: Some(9_700.0),
            soc_pct: Some(97.0),
            battery_w: Some(0.0),
            spare_wh: None,
        };
        let d = decide_plain(&cfg, &key(0), 0, 10, &full, &MarketState::default(), 0);
        assert_eq!(
            d,
            vec![Decision::Offer {
                mode: DeliveryMode::Charge,
                interval: 0,
                energy_wh: WattHours::new(1_600),
                price: cfg.surplus_price,
                expiry_height: 10 + cfg.offer_blocks,
            }]
        );
        // A neighbour at 40 % of 10 kWh (6 kWh of room), not exporting: it buys the surplus;
        // a discharge offer next to it is for homes that import, not for charging.
        let mut m = MarketState::default();
        let mut surplus = contract(key(0), 1_600, 120_000);
        surplus.mode = DeliveryMode::Charge;
        m.contracts.insert(Hash32([5; 32]), surplus);
        m.contracts
            .insert(Hash32([6; 32]), contract(key(2), 1_000, 100_000));
        let room = HomeReadings {
            grid_w: Some(0.0),
            battery_wh: Some(4_000.0),
            soc_pct: Some(40.0),
            battery_w: Some(-300.0),
            spare_wh: None,
        };
        let me = key(1);
        assert_eq!(
            decide_plain(&cfg, &me, 0, 10, &room, &m, 1_000_000),
            vec![Decision::Buy {
                contract: Hash32([5; 32]),
                payment: MicroCredits::new(192_000),
            }]
        );
        // No room for it, nearly full, or exporting its own surplus: no purchase (the battery
        // may still offer what it holds).
        let buys = |r: &HomeReadings| {
            decide_plain(&cfg, &me, 0, 10, r, &m, 1_000_000)
                .iter()
                .any(|d| matches!(d, Decision::Buy { .. }))
        };
        // (A 5 kWh battery at 79 %: 1 050 Wh of room for a 1 600 Wh sale.)
        let small = HomeReadings {
            battery_wh: Some(3_950.0),
            soc_pct: Some(79.0),
            ..room
        };
        assert!(!buys(&small));
        let nearly_full = HomeReadings {
            battery_wh: Some(4_100.0),
            soc_pct: Some(82.0),
            ..room
        };
        assert!(!buys(&nearly_full));
        let exporting = HomeReadings {
            grid_w: Some(-400.0),
            ..room
        };
        assert!(!buys(&exporting));
        // A home that imports with a low battery buys the discharge offer instead.
        let low = HomeReadings {
            grid_w: Some(900.0),
            battery_wh: Some(500.0),
            soc_pct: Some(5.0),
            battery_w: Some(0.0),
            spare_wh: None,
        };
        assert_eq!(
            decide_plain(&cfg, &me, 0, 10, &low, &m, 1_000_000),
            vec![Decision::Buy {
                contract: Hash32([6; 32]),
                payment: MicroCredits::new(100_000),
            }]
        );
    }

    #[test]
    fn the_surplus_is_an_hour_of_the_present_export_and_unknown_without_a_meter() {
        assert_eq!(surplus_now(Some(-1_234.6)), Some(WattHours::new(1_234)));
        assert_eq!(surplus_now(Some(800.0)), Some(WattHours::ZERO), "importing");
        assert_eq!(surplus_now(None), None);
        assert_eq!(surplus_now(Some(f64::NAN)), None);
    }

    #[test]
    fn settings_outside_the_price_band_are_refused_by_field() {
        let cfg = StrategyConfig {
            offer_price: Price::new(400_000),
            ..StrategyConfig::default()
        };
        assert_eq!(
            cfg.check(Price::new(50_000), Price::new(300_000))
                .unwrap_err()
                .field,
            "offer_price"
        );
        let cfg = StrategyConfig {
            max_buy_price: Price::new(301_000),
            ..StrategyConfig::default()
        };
        assert_eq!(
            cfg.check(Price::new(50_000), Price::new(300_000))
                .unwrap_err()
                .field,
            "max_buy_price"
        );
        assert!(StrategyConfig::default()
            .check(Price::new(50_000), Price::new(300_000))
            .is_ok());
    }

    #[test]
    fn with_auctions_a_seller_joins_the_round_in_its_commit_phase_and_a_buyer_bids() {
        let cfg = StrategyConfig {
            auctions: true,
            max_offer_wh: WattHours::new(10_000),
            ..StrategyConfig::default()
        };
        let me = key(0);
        let m = MarketState::default();
        let view = |height, bid_pending| ChainView {
            height,
            market: &m,
            balance: MicroCredits::new(10_000_000),
            auction_round_blocks: 20,
            bid_pending,
            attest_bound: WattHours::new(1_000_000),
        };
        // Heights 21–30 are round 1's commit phase: at head 20 the next block is in it.
        let d = decide(&cfg, &me, 0, &full_battery(), &view(20, false));
        assert_eq!(
            d,
            vec![Decision::Join {
                round: 1,
                interval: 0,
                energy_wh: WattHours::new(5_000)
            }]
        );
        // Too late in the commit phase, or in the reveal phase: wait for the next round.
        assert!(decide(&cfg, &me, 0, &full_battery(), &view(28, false)).is_empty());
        assert!(decide(&cfg, &me, 0, &full_battery(), &view(32, false)).is_empty());
        let low = HomeReadings {
            grid_w: Some(900.0),
            battery_wh: Some(500.0),
            soc_pct: Some(5.0),
            battery_w: Some(0.0),
            spare_wh: None,
        };
        assert_eq!(
            decide(&cfg, &me, 0, &low, &view(32, false)),
            vec![Decision::Bid {
                energy_wh: cfg.max_buy_wh,
                price: cfg.max_buy_price
            }]
        );
        assert!(
            decide(&cfg, &me, 0, &low, &view(32, true)).is_empty(),
            "one bid at a time"
        );
    }
}
