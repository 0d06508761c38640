//! The end of a run: every data dir re-verified, the journals read, the scenario's report
//! and invariants written.

use anyhow::{ensure, Context, Result};
use gridlet_actors::journal::{ReleaseJournal, ReleaseState};
use gridlet_hil::community::{community_report, DayObservations, HomeOutcome, RunFacts};
use gridlet_hil::home::{Counters, SimHome};
use gridlet_ledger::Genesis;

use super::SimOptions;
use crate::chain_cmd;
use crate::chart::ChartSample;

use super::home_config::HomeSetup;

/// Re-verifies every home's data dir from genesis (as `gridlet chain verify` does), reads its
/// release journal, and has the scenario recompute the report; writes `report.json` and
/// `chart.png` and fails on any broken invariant.
#[allow(clippy::too_many_arguments)]
pub(super) fn report(
    o: &SimOptions,
    genesis: &Genesis,
    setups: &[HomeSetup],
    sims: &[SimHome],
    samples: &[ChartSample],
    energy: (&Counters, &Counters),
    initial_credits: u128,
    agreed: Option<String>,
    meter_errors: u64,
    exchange: &DayObservations,
) -> Result<serde_json::Value> {
    let mut homes = Vec::new();
    for s in setups {
        let v = chain_cmd::verify(&s.dir)
            .with_context(|| format!("{} does not verify", s.dir.display()))?;
        let releases = ReleaseJournal::open(&s.dir)?
            .entries()
            .into_iter()
            .map(|(trade, st)| match st {
                ReleaseState::Done { delivered_wh } => (trade, Some(delivered_wh)),
                _ => (trade, None),
            })
            .collect();
        homes.push(HomeOutcome {
            name: s.name.clone(),
            member: s.member,
            tip: v["tip_hash"].as_str().unwrap_or_default().to_owned(),
            releases,
        });
    }
    let verified = chain_cmd::load_verified(&setups[0].dir)?;
    let facts = RunFacts {
        homes: o.homes,
        hours: o.hours,
        start_hour: o.start_hour,
        speedup: o.speedup,
        seed: o.seed,
        slot_ms: o.slot_ms,
        schedule: o.schedule,
        data_dirs: o.report.join("homes").display().to_string(),
        agreed: agreed.is_some(),
        meter_errors,
        initial_credits,
    };
    let r = community_report(
        &facts,
        genesis,
        verified.chain.head_state(),
        verified.chain.head_height(),
        &verified.producers,
        &verified.slots,
        &homes,
        sims,
        energy,
        exchange,
    );
    std::fs::write(
        o.report.join("report.json"),
        serde_json::to_string_pretty(&r.summary)? + "\n",
    )?;
    let names: Vec<String> = homes.iter().map(|h| h.name.clone()).collect();
    crate::chart::draw(&o.report.join("chart.png"), samples, &r.prices, &names)?;
    ensure!(r.failures.is_empty(), "{}", r.failures.join("; "));
    Ok(r.summary)
}
