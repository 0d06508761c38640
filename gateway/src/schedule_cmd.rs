//! `gridlet schedule`: the day-ahead schedule of a generated community by ADMM beside the
//! centralized optimum, and the dispatch contract's replay of every iteration; one JSON line.

use anyhow::Result;

/// The command's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ScheduleArgs {
    /// Homes.
    #[arg(long, default_value_t = 10)]
    pub homes: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Intervals of the day.
    #[arg(long, default_value_t = 96)]
    pub intervals: usize,
    /// ADMM penalty ρ.
    #[arg(long, default_value_t = 0.05)]
    pub rho: f64,
    /// Stop when both residuals are below this, kW.
    #[arg(long, default_value_t = 0.01)]
    pub tolerance: f64,
    /// Iteration limit.
    #[arg(long, default_value_t = 2000)]
    pub max_iter: usize,
    /// Skip the centralized solve (for very large communities).
    #[arg(long)]
    pub no_central: bool,
}

/// Runs the schedule and prints its JSON line.
pub fn run(a: ScheduleArgs) -> Result<()> {
    let ScheduleArgs {
        homes,
        seed,
        intervals,
        rho,
        tolerance,
        max_iter,
        no_central,
    } = a;
    use gridlet_core::schedule as sch;
    anyhow::ensure!(
        homes >= 1 && intervals >= 1,
        "--homes and --intervals must be positive"
    );
    let (data, community) = sch::generate(homes, intervals, seed);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = std::time::Instant::now();
    let r = sch::admm(&data, &community, rho, tolerance, max_iter, threads, true)?;
    let wall_s = started.elapsed().as_secs_f64();
    // What every node does with the proposals it saw: replay the contract and compare.
    let keys: Vec<gridlet_ledger::MemberKey> = (0..homes as u64)
        .map(|i| {
            gridlet_ledger::MemberKey::from_secret(&gridlet_ledger::crypto::deterministic_key(
                seed, i,
            ))
        })
        .collect();
    let rounds: Vec<Vec<(gridlet_ledger::MemberKey, Vec<i32>)>> = r
        .rounds
        .iter()
        .map(|round| keys.iter().copied().zip(round.iter().cloned()).collect())
        .collect();
    let committed =
        gridlet_ledger::market::dispatch::replay(&community.dispatch_params(rho), &rounds);
    let wh_per_kw = community.dt_h * 1000.0;
    let replay_matches = committed.iterations as usize == r.iterations
        && committed
            .schedule_wh
            .iter()
            .zip(r.rounds.last().into_iter().flatten())
            .all(|((_, wh), proposal)| {
                wh.iter().zip(proposal).all(|(w, p)| {
                    *w == (gridlet_ledger::market::dispatch::kw(*p) * wh_per_kw).round() as i64
                })
            })
        && committed
            .prices
            .iter()
            .zip(&r.prices)
            .all(|(p, c)| *p == (c * 1_000_000.0).round() as i64);
    let admm_cost = sch::community_cost(&community, &r.plans);
    let (central_cost, central_wall_s) = if no_central {
        (None, None)
    } else {
        let started = std::time::Instant::now();
        let plans = sch::central(&data, &community)?;
        (
            Some(sch::community_cost(&community, &plans)),
            Some(started.elapsed().as_secs_f64()),
        )
    };
    let gap = central_cost.map(|c| (admm_cost - c) / c.abs());
    println!(
        "{}",
        serde_json::json!({
            "homes": homes,
            "intervals": intervals,
            "iterations": r.iterations,
            "primal_residual": r.report.primal,
            "dual_residual": r.report.dual,
            "admm_cost": admm_cost,
            "central_cost": central_cost,
            "gap": gap,
            "feeder_violation": sch::feeder_violation(&community, &r.plans),
            "feeder_kw": community.feeder_kw,
            "wall_s": wall_s,
            "central_wall_s": central_wall_s,
            "threads": threads,
            "inputs_hash": committed.inputs_hash.to_hex(),
            "replay_matches": replay_matches,
            "prices_microcredits_per_kwh": committed.prices,
        })
    );
    Ok(())
}
