//! The community scenario of `gridlet sim`: the day-ahead parameters and forecasts it gives
//! the homes, what it observes of a scheduled day, and the report with its invariants,
//! recomputed from the chain and the homes' release journals. The CLI adapter in the gateway
//! runs the processes and hands the facts in; nothing here starts a gateway.

use std::collections::BTreeMap;

use gridlet_ledger::market::book::TradeSource;
use gridlet_ledger::{Genesis, Hash32, LedgerState, MemberKey};
use serde_json::json;

use crate::home::{Counters, HomeProfile, SimHome};

/// What the simulation saw of a scheduled day.
pub struct DayObservations {
    /// The community's net exchange per interval, W·ms.
    pub grid_wms: Vec<i64>,
    /// The same for the shadow homes (self-consumption only).
    pub self_consumption_wms: Vec<i64>,
    /// Energy stored in all batteries at the end of the simulated hours (midnight for a
    /// day), Wh: actual, shadow.
    pub stored_at_midnight: Option<(u64, i64)>,
    /// Home 0's `/api/schedule` at the end.
    pub home_0_api: Option<serde_json::Value>,
    /// The homes' load over the run, W·ms.
    pub load_wms: u64,
}

/// A day, ms.
pub const DAY_MS: u64 = 86_400_000;
/// A market interval, ms.
pub const INTERVAL_MS: u64 = 15 * 60_000;
/// How long schedule mode runs into the next day for the bills, ms.
pub const BILLING_MS: u64 = 30 * 60_000;

/// The community's side of the day-ahead problem: a time-of-use tariff (night 0.22, day
/// 0.30, evening peak 17–21 h 0.40 credits/kWh), feed-in 0.08, a feeder of 3 kW per home.
pub fn schedule_params(homes: usize) -> gridlet_ledger::genesis::ScheduleParams {
    let mut p = gridlet_ledger::genesis::ScheduleParams::with_feeder(3_000 * homes as u64);
    p.import_prices = (0..96)
        .map(|t| match t / 4 {
            0..=6 => 220_000,
            17..=20 => 400_000,
            21..=23 => 260_000,
            _ => 300_000,
        })
        .collect();
    p
}

/// A home's forecast for the day: its load and clear-sky PV averaged over each interval, and
/// its battery as the simulator models it (lossless).
pub fn forecast(profile: &HomeProfile) -> serde_json::Value {
    let mean = |f: &dyn Fn(u64) -> f64, t: u64| -> f64 {
        (0..15)
            .map(|m| f(t * INTERVAL_MS + m * 60_000 + 30_000))
            .sum::<f64>()
            / 15.0
            / 1000.0
    };
    let pv = |ms: u64| f64::from(crate::devices::solar_profile_w(profile.nameplate_w, ms));
    let load = |ms: u64| f64::from(profile.load_w(ms));
    let capacity = f64::from(profile.capacity_wh) / 1000.0;
    let soc0 = capacity * f64::from(profile.soc_pct.min(100)) / 100.0;
    json!({
        "pv_kw": (0..96).map(|t| mean(&pv, t)).collect::<Vec<_>>(),
        "load_kw": (0..96).map(|t| mean(&load, t)).collect::<Vec<_>>(),
        "capacity_kwh": capacity,
        "charge_kw": f64::from(profile.battery_w) / 1000.0,
        "discharge_kw": f64::from(profile.battery_w) / 1000.0,
        "efficiency": 1.0,
        "soc0_kwh": soc0,
        // The simulated battery runs down to empty, as its twin without trading does.
        "soc_min_kwh": 0.0,
    })
}

/// The community's largest mean export over an interval, W.
pub fn worst_export_w(wms: &[i64]) -> i64 {
    wms.iter()
        .map(|e| -e / INTERVAL_MS as i64)
        .max()
        .unwrap_or(0)
        .max(0)
}

/// The cost of a day's net exchange per interval (W·ms) at the import tariff and feed-in
/// price of `p`, µcredits.
pub fn grid_cost(p: &gridlet_ledger::genesis::ScheduleParams, tariff: u64, wms: &[i64]) -> i64 {
    wms.iter()
        .enumerate()
        .map(|(t, e)| {
            let wh = *e as f64 / 3_600_000.0;
            let price = if wh >= 0.0 {
                p.import_price_at(tariff, t)
            } else {
                p.feed_in_price
            };
            (wh * price as f64 / 1000.0).round() as i64
        })
        .sum()
}

/// One home at the end of a run.
#[derive(Debug, Clone)]
pub struct HomeOutcome {
    /// Its name (`home-0`, …).
    pub name: String,
    /// Its member key.
    pub member: MemberKey,
    /// The tip of its stored chain, re-verified from genesis.
    pub tip: String,
    /// Its battery journal: each released trade and the Wh delivered, once done.
    pub releases: Vec<(Hash32, Option<u64>)>,
}

/// What the run was and what the orchestrator saw.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// Homes.
    pub homes: usize,
    /// Simulated hours.
    pub hours: f64,
    /// Hour of the day the run started at.
    pub start_hour: f64,
    /// Scenario time per wall time.
    pub speedup: f64,
    /// Seed.
    pub seed: u64,
    /// Slot length, scenario ms.
    pub slot_ms: u64,
    /// Day-ahead schedule mode.
    pub schedule: bool,
    /// Where the homes' data dirs are.
    pub data_dirs: String,
    /// Whether the homes agreed on the last slot's block before they were stopped.
    pub agreed: bool,
    /// Meter telegrams or messages that could not be sent.
    pub meter_errors: u64,
    /// Credits at genesis.
    pub initial_credits: u128,
}

/// The report: `report.json`'s content, the trade prices for the chart, and every invariant
/// that failed (empty: all hold).
#[derive(Debug, Clone)]
pub struct CommunityReport {
    /// The summary written to `report.json`.
    pub summary: serde_json::Value,
    /// Trade prices by community hour (hours since the first midnight, as the chart's samples):
    /// a sale's contract price, an auction trade's revenue per kWh.
    pub prices: Vec<(f64, u64)>,
    /// The invariants that do not hold, as messages.
    pub failures: Vec<String>,
}

/// Recomputes the run's figures and invariants from home 0's verified chain (`state`, its
/// `height`, the block `producers` and `slots` by height from 1) and every home's outcome.
#[allow(clippy::too_many_arguments)]
pub fn community_report(
    facts: &RunFacts,
    genesis: &Genesis,
    state: &LedgerState,
    height: u64,
    producers: &[MemberKey],
    slots: &[u64],
    homes: &[HomeOutcome],
    sims: &[SimHome],
    energy: (&Counters, &Counters),
    exchange: &DayObservations,
) -> CommunityReport {
    let same_tip = homes
        .iter()
        .all(|h| homes.first().is_some_and(|f| f.tip == h.tip));
    let market = state.market();
    let name_of = |k: &MemberKey| {
        homes
            .iter()
            .find(|s| s.member == *k)
            .map_or_else(|| k.short(), |s| s.name.clone())
    };
    let mut produced: BTreeMap<String, u64> = BTreeMap::new();
    for p in producers {
        *produced.entry(name_of(p)).or_default() += 1;
    }
    let every_home_produced = homes.iter().all(|s| produced.contains_key(&s.name));
    // Battery releases from every home's journal against the trades on chain.
    let mut releases = 0u64;
    let mut released_wh = 0u64;
    let mut releases_match = true;
    for h in homes {
        for (trade, delivered_wh) in &h.releases {
            releases += 1;
            let on_chain = market.trades.get(trade);
            // The battery that moved the energy: the seller's for a discharge, the buyer's for
            // a charge.
            releases_match &=
                on_chain.is_some_and(|t| market.reporter(t) == Some(h.member) && t.released);
            released_wh += delivered_wh.unwrap_or(0);
        }
    }
    let energy_traced = homes.iter().all(|s| market.provenance_holds(&s.member));
    let credits_conserved = state.total_credits() == facts.initial_credits;
    let auction_trades = market
        .trades
        .values()
        .filter(|t| matches!(t.source, TradeSource::Auction { .. }))
        .count();
    let auction_rounds: std::collections::BTreeSet<u64> = market
        .trades
        .values()
        .filter_map(|t| match t.source {
            TradeSource::Auction { round } => Some(round),
            TradeSource::Sale { .. } => None,
        })
        .collect();
    let (wh_traded, wh_delivered, credits_moved) = market.totals();
    // Charge trades (surplus into a neighbour's battery): how many, and what they delivered.
    let (charge_trades, charge_delivered_wh) = market
        .trades
        .values()
        .filter(|t| market.trade_mode(t) == gridlet_ledger::DeliveryMode::Charge)
        .fold((0u64, 0u64), |(n, wh), t| {
            (n + 1, wh + t.delivered_wh.map_or(0, |d| d.get()))
        });
    let mut prices: Vec<(f64, u64)> = Vec::new();
    for t in market.trades.values() {
        // A sale's price is its contract's; an auction trade's is what its seller earned per
        // kWh (its share of the round's revenue over its sold energy).
        let price = match t.source {
            TradeSource::Sale { contract } => {
                market.contracts.get(&contract).map(|c| c.price.get())
            }
            TradeSource::Auction { .. } => (u128::from(t.payment.get()) * 1_000)
                .checked_div(u128::from(t.energy_wh.get()))
                .and_then(|p| u64::try_from(p).ok()),
        };
        if let Some(price) = price {
            // The hour of the community clock the trade's block was made at (its slot: heights
            // start at 1 whenever the run starts, and skip missed slots).
            let slot = t
                .traded_height
                .checked_sub(1)
                .and_then(|i| slots.get(i as usize))
                .copied()
                .unwrap_or(0);
            let hour = genesis.slot_start_ms(slot) as f64 / 3_600_000.0;
            prices.push((hour, price));
        }
    }
    prices.sort_by(|a, b| a.0.total_cmp(&b.0));
    let battery_discharged_wh: Vec<u64> = sims
        .iter()
        .map(|h| h.battery_discharged_mwh() / 1000)
        .collect();
    // Schedule mode: the first day's commitment and bills.
    let day0 = market.days.get(&0);
    let schedule_ok = !facts.schedule || day0.is_some_and(|d| d.bills.is_some());
    let schedule = match (&genesis.schedule, day0) {
        (Some(p), Some(d)) => {
            let bills: BTreeMap<String, i64> = d
                .bills
                .iter()
                .flatten()
                .map(|(k, v)| (name_of(k), *v))
                .collect();
            let scheduled: BTreeMap<String, i64> = d
                .schedule_wh
                .iter()
                .map(|(k, v)| (name_of(k), v.iter().sum()))
                .collect();
            let metered: BTreeMap<String, i64> = d
                .metered_wh
                .iter()
                .map(|(k, v)| (name_of(k), v.iter().sum()))
                .collect();
            let deviation: BTreeMap<String, i64> = d
                .metered_wh
                .iter()
                .filter_map(|(k, m)| {
                    let s = d.schedule_wh.get(k)?;
                    Some((
                        name_of(k),
                        m.iter().zip(s).map(|(a, b)| (a - b).abs()).sum(),
                    ))
                })
                .collect();
            json!({
                "day": 0,
                "iterations": d.iterations,
                "primal_residual_w": d.primal_w,
                "dual_residual_w": d.dual_w,
                "clearing_price_min": d.prices.iter().min(),
                "clearing_price_max": d.prices.iter().max(),
                "scheduled_net_wh": scheduled,
                "metered_net_wh": metered,
                "abs_deviation_wh": deviation,
                "bills_microcredits": bills,
                "bills_total": d.bills.iter().flatten().map(|(_, v)| *v).sum::<i64>(),
                "community_account": state.community_balance(),
                "community_grid_cost_with_schedule": grid_cost(p, genesis.grid_tariff.get(), &exchange.grid_wms),
                "community_grid_cost_self_consumption_only": grid_cost(p, genesis.grid_tariff.get(), &exchange.self_consumption_wms),
                // What the batteries hold at midnight differs between the two: the schedule
                // ends the day at least as full as it began, self-consumption need not.
                "home_0_api": exchange.home_0_api,
                "feeder_w": p.feeder_w,
                "worst_interval_export_w": worst_export_w(&exchange.grid_wms),
                "worst_interval_export_w_self_consumption_only": worst_export_w(&exchange.self_consumption_wms),
                "stored_wh_at_midnight": exchange.stored_at_midnight.map(|s| s.0),
                "stored_wh_at_midnight_self_consumption_only": exchange.stored_at_midnight.map(|s| s.1),
            })
        }
        (Some(_), None) => json!({"day": 0, "committed": false}),
        _ => serde_json::Value::Null,
    };
    let summary = json!({
        "schedule": schedule,
        "homes": facts.homes,
        "hours": facts.hours,
        "speedup": facts.speedup,
        "seed": facts.seed,
        "slot_ms": facts.slot_ms,
        "height": height,
        "tip_hash": homes.first().map(|h| h.tip.clone()),
        "tips_agreed_before_stop": facts.agreed,
        "blocks_per_producer": produced,
        "market": {
            "contracts": market.contracts.len(),
            "trades": market.trades.len(),
            "auction_trades": auction_trades,
            "charge_trades": charge_trades,
            "charge_wh_delivered": charge_delivered_wh,
            "auction_rounds_cleared_with_trades": auction_rounds.len(),
            "wh_traded": wh_traded,
            "battery_releases": releases,
            "wh_released": released_wh,
            "wh_delivered_on_chain": wh_delivered,
            "credits_paid_to_sellers": credits_moved,
            "credits_in_escrow": market.escrow,
            "trade_prices": prices.iter().map(|p| json!({"hour": p.0, "price": p.1})).collect::<Vec<_>>(),
            // Attestations and receipts the homes' batteries signed, and refused (device-signed
            // homes; both 0 for gateway-signed ones).
            "claims_signed_by_batteries": sims.iter().map(|h| h.signer_counts().0).sum::<u64>(),
            "claims_refused_by_batteries": sims.iter().map(|h| h.signer_counts().1).sum::<u64>(),
        },
        "grid": {
            "community_import_wh": energy.0.import_mwh / 1000,
            "community_export_wh": energy.0.export_mwh / 1000,
            "community_import_without_trading_wh": energy.1.import_mwh / 1000,
            "community_export_without_trading_wh": energy.1.export_mwh / 1000,
            "home_import_wh": sims.iter().map(|h| h.meter.import_mwh / 1000).collect::<Vec<_>>(),
            "community_load_wh": exchange.load_wms / 3_600_000,
            "self_sufficiency_pct": self_sufficiency_pct(exchange.load_wms, energy.0.import_mwh),
            "self_sufficiency_without_trading_pct": self_sufficiency_pct(exchange.load_wms, energy.1.import_mwh),
            "battery_discharged_wh": battery_discharged_wh,
            // A market may use what the batteries hold: what is left at the end, beside the
            // twins without trading.
            "stored_wh_at_end": exchange.stored_at_midnight.map(|s| s.0),
            "stored_wh_at_end_without_trading": exchange.stored_at_midnight.map(|s| s.1),
            "meter_send_errors": facts.meter_errors,
        },
        "reference_day": crate::reference::summary(sims, energy.0, energy.1, facts.start_hour, facts.hours),
        "invariants": {
            "credits_conserved": credits_conserved,
            "all_homes_same_tip": same_tip,
            "every_home_produced": every_home_produced,
            "every_release_matches_one_trade": releases_match,
            "delivered_energy_traces_to_attested_generation": energy_traced,
            // Only a schedule run can say whether its day was committed and billed.
            "scheduled_day_committed_and_billed": facts.schedule.then_some(schedule_ok),
        },
        "profiles": sims.iter().map(|h| h.profile).collect::<Vec<_>>(),
        "data_dirs": facts.data_dirs,
    });
    let mut failures = Vec::new();
    if !same_tip {
        let odd: Vec<&str> = homes
            .iter()
            .filter(|h| homes.first().is_some_and(|f| f.tip != h.tip))
            .map(|h| h.name.as_str())
            .collect();
        failures.push(format!(
            "homes disagree on the tip: {} has {}, {odd:?} do not",
            homes.first().map_or("", |h| h.name.as_str()),
            homes.first().map_or("", |h| h.tip.as_str())
        ));
    }
    let checks = [
        (credits_conserved, "credits not conserved"),
        (
            schedule_ok,
            "schedule mode: day 0 was not committed and billed (see the gateways' logs)",
        ),
        (
            releases_match,
            "a battery release matches no final trade of its home",
        ),
        (
            energy_traced,
            "delivered energy does not trace back to attested generation",
        ),
    ];
    failures.extend(
        checks
            .iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, m)| (*m).to_owned()),
    );
    CommunityReport {
        summary,
        prices,
        failures,
    }
}

/// The share of the load not drawn from the main grid, % to one decimal (`null` without load).
fn self_sufficiency_pct(load_wms: u64, import_mwh: u64) -> serde_json::Value {
    let load_mwh = load_wms as f64 / 3_600.0;
    if load_mwh <= 0.0 {
        return serde_json::Value::Null;
    }
    let pct = (1.0 - import_mwh as f64 / load_mwh) * 100.0;
    json!((pct * 10.0).round() / 10.0)
}
