//! Day-ahead scheduling (docs/scheduling.md): each home's local step P(i) as a QP solved with
//! clarabel, the aggregator S1 of sharing ADMM (Boyd et al. 2011, §7.3) as a pure,
//! deterministic function of the homes' proposals, and the centralized problem to measure ADMM
//! against.
//!
//! Units: power in kW (positive = import at the point of common coupling), energy in kWh,
//! prices in credits per kWh; an interval lasts `dt_h` hours.

// QP assembly indexes variables as `base + k * t_len + t`: every series is checked to have the
// community's intervals on entry (`check_intervals`), sizes are bounded by the data a home can
// hold, and all arithmetic on the values is f64 (no integer overflow can reach consensus: the
// ledger's dispatch contract replays the aggregator from integer proposals).
#![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use clarabel::algebra::CscMatrix;
use clarabel::solver::{
    DefaultSettingsBuilder, DefaultSolver, IPSolver, SolverStatus, SupportedConeT,
};

/// One home's private data (also the gateway's `forecast.json`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeData {
    /// PV forecast per interval, kW.
    pub pv_kw: Vec<f64>,
    /// Load forecast per interval, kW.
    pub load_kw: Vec<f64>,
    /// Battery capacity, kWh.
    pub capacity_kwh: f64,
    /// Charge power limit, kW.
    pub charge_kw: f64,
    /// Discharge power limit, kW.
    pub discharge_kw: f64,
    /// One-way efficiency (charge and discharge alike).
    pub efficiency: f64,
    /// Initial state of charge, kWh (the day must end with at least this much).
    pub soc0_kwh: f64,
    /// Lowest state of charge, kWh.
    pub soc_min_kwh: f64,
}

/// The community's shared data.
#[derive(Debug, Clone, PartialEq)]
pub struct Community {
    /// Hours per interval.
    pub dt_h: f64,
    /// Grid import tariff per interval, credits/kWh.
    pub import_price: Vec<f64>,
    /// Feed-in price per interval, credits/kWh (below the import tariff).
    pub export_price: Vec<f64>,
    /// Transformer limit on the community's exchange with the grid, kW (both directions).
    pub feeder_kw: f64,
    /// Battery wear, credits per kW² per hour (quadratic, small).
    pub wear: f64,
}

/// A home's schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct HomePlan {
    /// Net exchange per interval, kW.
    pub net_kw: Vec<f64>,
    /// Battery charge power, kW.
    pub charge_kw: Vec<f64>,
    /// Battery discharge power, kW.
    pub discharge_kw: Vec<f64>,
}

/// Why a solve failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// The solver did not reach an optimum.
    #[error("{what}: the solver stopped with {status}")]
    Solver {
        /// Which problem.
        what: String,
        /// The solver's status.
        status: String,
    },
    /// The data do not fit together.
    #[error("bad data: {0}")]
    Data(String),
    /// A series has the wrong number of intervals.
    #[error("{what} has {found} intervals, the community {expected}")]
    Intervals {
        /// Which series.
        what: &'static str,
        /// The community's intervals.
        expected: usize,
        /// The series' length.
        found: usize,
    },
}

/// Every series of `h` (and `target`, if given) has the community's intervals: checked on entry
/// to every solve, so the matrix assembly below indexes only within bounds.
fn check_intervals(
    h: &HomeData,
    c: &Community,
    target: Option<&[f64]>,
) -> Result<(), ScheduleError> {
    let expected = c.import_price.len();
    let series = [
        ("export prices", c.export_price.len()),
        ("pv forecast", h.pv_kw.len()),
        ("load forecast", h.load_kw.len()),
        ("target", target.map_or(expected, <[f64]>::len)),
    ];
    for (what, found) in series {
        if found != expected {
            return Err(ScheduleError::Intervals {
                what,
                expected,
                found,
            });
        }
    }
    Ok(())
}

/// Column-wise sparse matrix builder (triplets, summed on duplicates).
pub(crate) struct Triplets {
    rows: usize,
    cols: usize,
    entries: Vec<(usize, usize, f64)>,
}

impl Triplets {
    pub(crate) fn new(rows: usize, cols: usize) -> Triplets {
        Triplets {
            rows,
            cols,
            entries: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, r: usize, c: usize, v: f64) {
        if v != 0.0 {
            self.entries.push((r, c, v));
        }
    }

    fn csc(mut self) -> CscMatrix<f64> {
        self.entries.sort_by_key(|e| (e.1, e.0));
        let mut colptr = vec![0usize; self.cols + 1];
        let mut rowval = Vec::with_capacity(self.entries.len());
        let mut nzval: Vec<f64> = Vec::with_capacity(self.entries.len());
        let mut last: Option<(usize, usize)> = None;
        for (r, c, v) in self.entries {
            if last == Some((r, c)) {
                if let Some(x) = nzval.last_mut() {
                    *x += v;
                }
                continue;
            }
            last = Some((r, c));
            rowval.push(r);
            nzval.push(v);
            colptr[c + 1] += 1;
        }
        for c in 0..self.cols {
            colptr[c + 1] += colptr[c];
        }
        CscMatrix::new(self.rows, self.cols, colptr, rowval, nzval)
    }
}

/// The constraints of one home, for variables at `base`: per interval `x` (net), `c`, `d`,
/// `p` (PV used), `s` (state of charge at the interval's end). Equalities first in `eq`,
/// inequalities (`A x ≤ b`) in `le`.
pub(crate) struct Rows {
    pub(crate) eq: Triplets,
    pub(crate) eq_b: Vec<f64>,
    pub(crate) le: Triplets,
    pub(crate) le_b: Vec<f64>,
}

pub(crate) const VARS_PER_INTERVAL: usize = 5;

/// How a home's constraints are built.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HomeRules {
    /// PV may be used below its forecast (a planner may curtail; a physical home does not).
    pub(crate) curtail: bool,
    /// The day must leave the battery no emptier than the home's own control would
    /// ([`own_control_end_kwh`]).
    pub(crate) keep_charge: bool,
}

/// The day-ahead schedule's rules.
const SCHEDULE_RULES: HomeRules = HomeRules {
    curtail: true,
    keep_charge: true,
};

fn home_rows(h: &HomeData, dt: f64, base: usize, rows: &mut Rows) {
    home_rows_with(h, dt, base, rows, SCHEDULE_RULES);
}

pub(crate) fn home_rows_with(
    h: &HomeData,
    dt: f64,
    base: usize,
    rows: &mut Rows,
    rules: HomeRules,
) {
    let t_len = h.load_kw.len();
    let var = |k: usize, t: usize| base + k * t_len + t; // k: 0 x, 1 c, 2 d, 3 p, 4 s
    for t in 0..t_len {
        // Balance: x − c + d + p = load.
        let r = rows.eq_b.len();
        rows.eq.push(r, var(0, t), 1.0);
        rows.eq.push(r, var(1, t), -1.0);
        rows.eq.push(r, var(2, t), 1.0);
        rows.eq.push(r, var(3, t), 1.0);
        rows.eq_b.push(h.load_kw[t]);
        // Storage: s_t − s_{t−1} − η Δ c_t + Δ/η d_t = 0 (s_{−1} = soc0).
        let r = rows.eq_b.len();
        rows.eq.push(r, var(4, t), 1.0);
        if t > 0 {
            rows.eq.push(r, var(4, t - 1), -1.0);
        }
        rows.eq.push(r, var(1, t), -h.efficiency * dt);
        rows.eq.push(r, var(2, t), dt / h.efficiency);
        rows.eq_b.push(if t == 0 { h.soc0_kwh } else { 0.0 });
        // Bounds.
        let mut le = |col: usize, sign: f64, bound: f64| {
            let r = rows.le_b.len();
            rows.le.push(r, col, sign);
            rows.le_b.push(bound);
        };
        le(var(1, t), 1.0, h.charge_kw);
        le(var(1, t), -1.0, 0.0);
        le(var(2, t), 1.0, h.discharge_kw);
        le(var(2, t), -1.0, 0.0);
        le(var(3, t), 1.0, h.pv_kw[t].max(0.0));
        le(
            var(3, t),
            -1.0,
            if rules.curtail {
                0.0
            } else {
                -h.pv_kw[t].max(0.0)
            },
        );
        le(var(4, t), 1.0, h.capacity_kwh);
        le(var(4, t), -1.0, -h.soc_min_kwh);
    }
    if rules.keep_charge {
        let r = rows.le_b.len();
        rows.le.push(r, var(4, t_len - 1), -1.0);
        rows.le_b
            .push(-own_control_end_kwh(h, dt).max(h.soc_min_kwh));
    }
}

/// What the battery would hold at the end of the forecast day under the home's own control
/// (self-consumption: it covers the home's deficit and stores its surplus, within its limits).
/// The plan must leave at least this much: the community may share what the homes have, never
/// borrow from tomorrow. (Holding the starting charge instead made the plan import in the
/// evening what the home's own battery would have given.)
pub fn own_control_end_kwh(h: &HomeData, dt: f64) -> f64 {
    h.pv_kw
        .iter()
        .zip(&h.load_kw)
        .fold(h.soc0_kwh, |stored, (pv, load)| {
            crate::spare::own_control_step(h, stored, *pv, *load, dt).0
        })
}

pub(crate) fn solve(
    what: &str,
    p: Triplets,
    q: Vec<f64>,
    rows: Rows,
) -> Result<Vec<f64>, ScheduleError> {
    let n = q.len();
    let n_eq = rows.eq_b.len();
    let n_le = rows.le_b.len();
    let mut a = Triplets::new(n_eq + n_le, n);
    a.entries.extend(rows.eq.entries);
    a.entries.extend(
        rows.le
            .entries
            .into_iter()
            .map(|(r, c, v)| (r + n_eq, c, v)),
    );
    let mut b = rows.eq_b;
    b.extend(rows.le_b);
    let cones = [
        SupportedConeT::ZeroConeT(n_eq),
        SupportedConeT::NonnegativeConeT(n_le),
    ];
    let settings = DefaultSettingsBuilder::default()
        .verbose(false)
        .build()
        .map_err(|e| ScheduleError::Data(format!("{e:?}")))?;
    let p = p.csc();
    let a = a.csc();
    let mut solver = DefaultSolver::new(&p, &q, &a, &b, &cones, settings)
        .map_err(|e| ScheduleError::Data(format!("{what}: {e:?}")))?;
    solver.solve();
    match solver.solution.status {
        SolverStatus::Solved | SolverStatus::AlmostSolved => Ok(solver.solution.x.clone()),
        s => Err(ScheduleError::Solver {
            what: what.to_owned(),
            status: format!("{s:?}"),
        }),
    }
}

fn plan_from(x: &[f64], base: usize, t_len: usize) -> HomePlan {
    let slice = |k: usize| x[base + k * t_len..base + (k + 1) * t_len].to_vec();
    HomePlan {
        net_kw: slice(0),
        charge_kw: slice(1),
        discharge_kw: slice(2),
    }
}

/// The local step P(i): minimise the home's wear plus `ρ/2 ‖x − target‖²`, knowing only its
/// own data and the aggregator's target.
pub fn local_step(
    h: &HomeData,
    c: &Community,
    rho: f64,
    target: &[f64],
) -> Result<HomePlan, ScheduleError> {
    check_intervals(h, c, Some(target))?;
    let t_len = h.load_kw.len();
    let n = VARS_PER_INTERVAL * t_len;
    let mut p = Triplets::new(n, n);
    let mut q = vec![0.0; n];
    for t in 0..t_len {
        p.push(t, t, rho);
        q[t] = -rho * target[t];
        // Wear: w Δ (c² + d²) → P = 2 w Δ.
        p.push(t_len + t, t_len + t, 2.0 * c.wear * c.dt_h);
        p.push(2 * t_len + t, 2 * t_len + t, 2.0 * c.wear * c.dt_h);
    }
    let mut rows = Rows {
        eq: Triplets::new(0, n),
        eq_b: Vec::new(),
        le: Triplets::new(0, n),
        le_b: Vec::new(),
    };
    home_rows(h, c.dt_h, 0, &mut rows);
    let x = solve("local step", p, q, rows)?;
    Ok(plan_from(&x, 0, t_len))
}

/// The community's cost of a schedule: grid energy bought minus sold, plus battery wear.
pub fn community_cost(c: &Community, plans: &[HomePlan]) -> f64 {
    let t_len = c.import_price.len();
    let mut cost = 0.0;
    for t in 0..t_len {
        let z: f64 = plans.iter().map(|p| p.net_kw[t]).sum();
        cost += c.dt_h
            * if z >= 0.0 {
                c.import_price[t] * z
            } else {
                c.export_price[t] * z
            };
    }
    for p in plans {
        for t in 0..t_len {
            cost += c.wear * c.dt_h * (p.charge_kw[t].powi(2) + p.discharge_kw[t].powi(2));
        }
    }
    cost
}

/// The worst excess of the community's exchange over the feeder limit, kW.
pub fn feeder_violation(c: &Community, plans: &[HomePlan]) -> f64 {
    (0..c.import_price.len())
        .map(|t| {
            let z: f64 = plans.iter().map(|p| p.net_kw[t]).sum();
            (z.abs() - c.feeder_kw).max(0.0)
        })
        .fold(0.0, f64::max)
}

/// The centralized problem: every home's data in one QP with clarabel.
pub fn central(homes: &[HomeData], c: &Community) -> Result<Vec<HomePlan>, ScheduleError> {
    for h in homes {
        check_intervals(h, c, None)?;
    }
    let t_len = c.import_price.len();
    let per_home = VARS_PER_INTERVAL * t_len;
    let n = per_home * homes.len() + 2 * t_len; // + import and export at the PCC
    let zp = per_home * homes.len();
    let zm = zp + t_len;
    let mut p = Triplets::new(n, n);
    let mut q = vec![0.0; n];
    let mut rows = Rows {
        eq: Triplets::new(0, n),
        eq_b: Vec::new(),
        le: Triplets::new(0, n),
        le_b: Vec::new(),
    };
    for (i, h) in homes.iter().enumerate() {
        let base = i * per_home;
        for t in 0..t_len {
            p.push(base + t_len + t, base + t_len + t, 2.0 * c.wear * c.dt_h);
            p.push(
                base + 2 * t_len + t,
                base + 2 * t_len + t,
                2.0 * c.wear * c.dt_h,
            );
        }
        home_rows(h, c.dt_h, base, &mut rows);
    }
    for t in 0..t_len {
        // Σ x_i − import + export = 0; import, export within the feeder limit.
        let r = rows.eq_b.len();
        for i in 0..homes.len() {
            rows.eq.push(r, i * per_home + t, 1.0);
        }
        rows.eq.push(r, zp + t, -1.0);
        rows.eq.push(r, zm + t, 1.0);
        rows.eq_b.push(0.0);
        for col in [zp + t, zm + t] {
            let r = rows.le_b.len();
            rows.le.push(r, col, 1.0);
            rows.le_b.push(c.feeder_kw);
            let r = rows.le_b.len();
            rows.le.push(r, col, -1.0);
            rows.le_b.push(0.0);
        }
        q[zp + t] = c.dt_h * c.import_price[t];
        q[zm + t] = -c.dt_h * c.export_price[t];
    }
    let x = solve("centralized problem", p, q, rows)?;
    Ok((0..homes.len())
        .map(|i| plan_from(&x, i * per_home, t_len))
        .collect())
}

pub use gridlet_ledger::market::dispatch::{
    converged, kw, to_mw, Aggregator, DispatchParams, ProposalMw, StepReport,
};

impl Community {
    /// The contract's view of the community, with the penalty `rho`.
    pub fn dispatch_params(&self, rho: f64) -> DispatchParams {
        DispatchParams {
            dt_h: self.dt_h,
            import_price: self.import_price.clone(),
            export_price: self.export_price.clone(),
            feeder_kw: self.feeder_kw,
            rho,
        }
    }
}

/// The outcome of an ADMM run.
#[derive(Debug, Clone)]
pub struct AdmmResult {
    /// Each home's schedule.
    pub plans: Vec<HomePlan>,
    /// Iterations run.
    pub iterations: usize,
    /// Final residuals.
    pub report: StepReport,
    /// Clearing prices, credits/kWh.
    pub prices: Vec<f64>,
    /// Every iteration's proposals (home order), when recorded: what the contract replays.
    pub rounds: Vec<Vec<ProposalMw>>,
}

/// Runs ADMM to `tolerance` (kW, both residuals) or `max_iter`, solving the homes' local steps
/// on `threads` threads (each home's step depends only on its data and the aggregator).
pub fn admm(
    homes: &[HomeData],
    c: &Community,
    rho: f64,
    tolerance: f64,
    max_iter: usize,
    threads: usize,
    record: bool,
) -> Result<AdmmResult, ScheduleError> {
    let t_len = c.import_price.len();
    let params = c.dispatch_params(rho);
    let mut agg = Aggregator::new(t_len, rho);
    let mut rounds = Vec::new();
    let mut xs: Vec<Vec<f64>> = vec![vec![0.0; t_len]; homes.len()];
    let mut plans: Vec<HomePlan> = Vec::new();
    let mut report = StepReport {
        primal: f64::INFINITY,
        dual: f64::INFINITY,
    };
    let mut iterations = 0;
    while iterations < max_iter {
        iterations += 1;
        let targets: Vec<Vec<f64>> = xs.iter().map(|x| agg.target(x)).collect();
        plans = solve_all(homes, c, agg.rho, &targets, threads)?;
        // What goes on the bus: milliwatts, the same numbers every node aggregates.
        let proposals: Vec<ProposalMw> = plans
            .iter()
            .map(|p| p.net_kw.iter().map(|x| to_mw(*x)).collect())
            .collect();
        xs = proposals
            .iter()
            .map(|p| p.iter().map(|w| kw(*w)).collect())
            .collect();
        let refs: Vec<&[f64]> = xs.iter().map(|x| x.as_slice()).collect();
        report = agg.step(&params, &refs);
        if record {
            rounds.push(proposals);
        }
        if converged(&report, tolerance) {
            break;
        }
    }
    Ok(AdmmResult {
        prices: agg.prices(c.dt_h),
        plans,
        iterations,
        report,
        rounds,
    })
}

fn solve_all(
    homes: &[HomeData],
    c: &Community,
    rho: f64,
    targets: &[Vec<f64>],
    threads: usize,
) -> Result<Vec<HomePlan>, ScheduleError> {
    let threads = threads.clamp(1, homes.len().max(1));
    let chunk = homes.len().div_ceil(threads).max(1);
    let results: Vec<Result<Vec<HomePlan>, ScheduleError>> = std::thread::scope(|s| {
        let handles: Vec<_> = homes
            .chunks(chunk)
            .zip(targets.chunks(chunk))
            .map(|(hs, ts)| {
                s.spawn(move || {
                    hs.iter()
                        .zip(ts)
                        .map(|(h, t)| local_step(h, c, rho, t))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(ScheduleError::Data("a solver thread panicked".into())))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(homes.len());
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// A reproducible community of `homes` homes over `intervals` intervals of 15 minutes.
pub fn generate(homes: usize, intervals: usize, seed: u64) -> (Vec<HomeData>, Community) {
    let mut state = seed ^ 0x5DEE_CE66_D1CE_4E5B;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let dt_h = 24.0 / intervals as f64;
    let hour = |t: usize| (t as f64 + 0.5) * dt_h;
    let data: Vec<HomeData> = (0..homes)
        .map(|_| {
            let pv_peak = if next() < 0.6 {
                2.0 + 6.0 * next()
            } else {
                0.0
            };
            let base = 0.2 + 0.3 * next();
            let peak = 0.8 + 1.5 * next();
            let capacity = if next() < 0.7 {
                5.0 + 8.0 * next()
            } else {
                0.0
            };
            let power = if capacity > 0.0 {
                2.5 + 2.5 * next()
            } else {
                0.0
            };
            let soc0 = capacity * (0.2 + 0.3 * next());
            let pv_kw = (0..intervals)
                .map(|t| {
                    let h = hour(t);
                    if (6.0..18.0).contains(&h) {
                        pv_peak * (std::f64::consts::PI * (h - 6.0) / 12.0).sin()
                    } else {
                        0.0
                    }
                })
                .collect();
            let load_kw = (0..intervals)
                .map(|t| {
                    let h = hour(t);
                    let bump = |from: f64, to: f64| {
                        if (from..to).contains(&h) {
                            (std::f64::consts::PI * (h - from) / (to - from)).sin()
                        } else {
                            0.0
                        }
                    };
                    base + peak * (0.6 * bump(6.0, 9.0) + bump(17.0, 22.0))
                })
                .collect();
            HomeData {
                pv_kw,
                load_kw,
                capacity_kwh: capacity,
                charge_kw: power,
                discharge_kw: power,
                efficiency: 0.95,
                soc0_kwh: soc0,
                soc_min_kwh: capacity * 0.1,
            }
        })
        .collect();
    let import_price = (0..intervals)
        .map(|t| {
            let h = hour(t);
            if (17.0..21.0).contains(&h) {
                0.40
            } else if (7.0..17.0).contains(&h) {
                0.30
            } else {
                0.22
            }
        })
        .collect();
    let export_price = vec![0.08; intervals];
    // A transformer smaller than the sum of the peaks: the limit binds at noon and at the
    // evening peak.
    let feeder_kw = 1.2 * homes as f64;
    (
        data,
        Community {
            dt_h,
            import_price,
            export_price,
            feeder_kw,
            wear: 0.01,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admm_reaches_the_centralized_optimum_within_one_percent() {
        let (homes, c) = generate(10, 96, 3);
        let central_plans = central(&homes, &c).unwrap();
        let central_cost = community_cost(&c, &central_plans);
        assert!(feeder_violation(&c, &central_plans) < 1e-6);
        let r = admm(&homes, &c, 0.05, 0.01, 2_000, 2, false).unwrap();
        let cost = community_cost(&c, &r.plans);
        let gap = (cost - central_cost) / central_cost.abs();
        assert!(
            gap.abs() < 0.01,
            "gap {gap}: admm {cost}, central {central_cost}"
        );
        assert!(feeder_violation(&c, &r.plans) < 0.05, "{r:?}");
    }

    /// A home with no PV that starts half full: its own control empties the battery into its
    /// load (2 kWh of a 4 kWh need), so holding the starting charge would import 2 kWh more.
    fn evening_home() -> (HomeData, Community) {
        let t = 8;
        let home = HomeData {
            pv_kw: vec![0.0; t],
            load_kw: vec![2.0; t],
            capacity_kwh: 4.0,
            charge_kw: 3.0,
            discharge_kw: 3.0,
            efficiency: 1.0,
            soc0_kwh: 2.0,
            soc_min_kwh: 0.0,
        };
        let c = Community {
            dt_h: 0.25,
            import_price: vec![0.3; t],
            export_price: vec![0.08; t],
            feeder_kw: 10.0,
            wear: 0.001,
        };
        (home, c)
    }

    #[test]
    fn own_control_covers_the_deficit_then_stores_the_surplus_within_the_limits() {
        let (mut home, _) = evening_home();
        assert!((own_control_end_kwh(&home, 0.25) - 0.0).abs() < 1e-9);
        // 4 kW of PV surplus for 2 h into a battery that takes 3 kW: 2 kWh room fills.
        home.pv_kw = vec![6.0; 8];
        assert!((own_control_end_kwh(&home, 0.25) - 4.0).abs() < 1e-9);
        // A reserve is kept: 0.5 kWh of 2 kWh is not given out.
        home.pv_kw = vec![0.0; 8];
        home.soc_min_kwh = 0.5;
        assert!((own_control_end_kwh(&home, 0.25) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn the_plan_may_use_what_the_home_would_have_used_and_keeps_what_it_would_have_kept() {
        let (home, c) = evening_home();
        let plan = central(std::slice::from_ref(&home), &c).unwrap();
        let import: f64 = plan[0].net_kw.iter().map(|x| x.max(0.0) * 0.25).sum();
        assert!(
            (import - 2.0).abs() < 0.01,
            "the plan imports only the 2 kWh its battery cannot give: {import}"
        );
        let mut sunny = home.clone();
        sunny.pv_kw = vec![6.0; 8];
        let plan = central(std::slice::from_ref(&sunny), &c).unwrap();
        let end = sunny.soc0_kwh
            + plan[0]
                .charge_kw
                .iter()
                .zip(&plan[0].discharge_kw)
                .map(|(ch, d)| (ch - d) * 0.25)
                .sum::<f64>();
        assert!(end > 4.0 - 0.01, "ends as full as its own control: {end}");
    }
}
