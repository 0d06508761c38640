//! The day-ahead dispatch contract (aggregator S1 of docs/scheduling.md): the sharing-ADMM
//! coordination step as a pure, deterministic function of the homes' proposals, a hash chain
//! over every iteration's inputs, and the committed schedule (integer Wh per home and interval,
//! clearing prices in micro-credits per kWh) that any node recomputes from the same inputs.
//!
//! Determinism: only correctly rounded IEEE-754 operations (`+ − × ÷`, comparisons) in a fixed
//! order — no fused multiply-add, no parallel sums, no transcendental functions — so every node
//! computes the same bits; the inputs are hashed by their bit patterns.

use crate::crypto::{Hash32, MemberKey};
use crate::genesis::ScheduleParams;

/// A home's proposal for one iteration: its net exchange per interval, milliwatts (positive =
/// import; ±2.1 MW fit). Integers keep the bus messages and the commitment exact; milliwatts
/// keep the rounding of a hundred homes far below the 10 W tolerance (whole watts did not: their
/// rounding alone held the primal residual of 100 homes near 45 W). The step converts them to
/// kW by one correctly rounded division.
pub type ProposalMw = Vec<i32>;

/// kW of a proposal value.
pub fn kw(mw: i32) -> f64 {
    f64::from(mw) / 1_000_000.0
}

/// Rounds a local solution (kW) to a proposal value (mW), saturating.
pub fn to_mw(kw: f64) -> i32 {
    // `as` saturates and maps NaN to 0: no panic on any input.
    (kw * 1_000_000.0).round() as i32
}

/// The digest a home signs for its proposal of `round` on `day`.
pub fn proposal_digest(
    chain_id: &Hash32,
    day: u64,
    round: u32,
    home: &MemberKey,
    values_mw: &[i32],
) -> Hash32 {
    let mut bytes = Vec::with_capacity(values_mw.len().saturating_mul(4));
    for v in values_mw {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    Hash32::tagged(
        b"gridlet/dispatch-proposal/v1",
        &[
            &chain_id.0,
            &day.to_be_bytes(),
            &round.to_be_bytes(),
            &home.0,
            &bytes,
        ],
    )
}

/// Whether a step's residuals end the iterations.
pub fn converged(report: &StepReport, tolerance_kw: f64) -> bool {
    report.primal <= tolerance_kw && report.dual <= tolerance_kw
}

/// The community's side of the problem.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchParams {
    /// Hours per interval.
    pub dt_h: f64,
    /// Grid import tariff per interval, credits/kWh.
    pub import_price: Vec<f64>,
    /// Feed-in price per interval, credits/kWh.
    pub export_price: Vec<f64>,
    /// Feeder limit, kW (both directions).
    pub feeder_kw: f64,
    /// ADMM penalty ρ.
    pub rho: f64,
}

/// The aggregator's state between iterations (scaled sharing ADMM).
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregator {
    /// Penalty parameter.
    pub rho: f64,
    /// Average of the homes' last proposals, kW.
    pub x_bar: Vec<f64>,
    /// Average exchange the grid step chose, kW.
    pub z_bar: Vec<f64>,
    /// Scaled dual; the clearing price is `ρ u / Δ`.
    pub u: Vec<f64>,
}

/// Residuals of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Largest mismatch between the homes' total and the grid exchange, kW.
    pub primal: f64,
    /// Largest change of the grid exchange, times ρ, kW.
    pub dual: f64,
}

impl DispatchParams {
    /// The parameters a genesis fixes (prices from micro-credits to credits per kWh, the
    /// feeder from W to kW, ρ from thousandths), by exact integer-to-float conversions and
    /// one correctly rounded division each.
    pub fn from_schedule(p: &ScheduleParams, grid_tariff: u64) -> DispatchParams {
        let credits = |micro: u64| to_f64(micro) / 1_000_000.0;
        let intervals = usize::try_from(p.intervals).unwrap_or(0);
        DispatchParams {
            dt_h: f64::from(p.interval_min) / 60.0,
            import_price: (0..intervals)
                .map(|t| credits(p.import_price_at(grid_tariff, t)))
                .collect(),
            export_price: vec![credits(p.feed_in_price); intervals],
            feeder_kw: to_f64(p.feeder_w) / 1000.0,
            rho: to_f64(p.rho_milli) / 1000.0,
        }
    }

    /// The stopping tolerance, kW.
    pub fn tolerance_kw(p: &ScheduleParams) -> f64 {
        to_f64(p.tolerance_w) / 1000.0
    }
}

/// Exact below 2^53, which the genesis checks.
fn to_f64(v: u64) -> f64 {
    // Values are validated below 2^53, where the conversion is exact.
    v as f64
}

impl Aggregator {
    /// The start: nothing proposed, no price.
    pub fn new(intervals: usize, rho: f64) -> Aggregator {
        Aggregator {
            rho,
            x_bar: vec![0.0; intervals],
            z_bar: vec![0.0; intervals],
            u: vec![0.0; intervals],
        }
    }

    /// The target a home approaches from its last proposal `x_i`: `x_i − x̄ + z̄ − u`.
    pub fn target(&self, x_i: &[f64]) -> Vec<f64> {
        x_i.iter()
            .zip(&self.x_bar)
            .zip(&self.z_bar)
            .zip(&self.u)
            .map(|(((x, xb), zb), u)| x - xb + zb - u)
            .collect()
    }

    /// One aggregation of the homes' new proposals (in member order).
    pub fn step(&mut self, p: &DispatchParams, proposals: &[&[f64]]) -> StepReport {
        let n = proposals.len().max(1) as f64;
        let mut primal: f64 = 0.0;
        let mut dual: f64 = 0.0;
        let rows = self
            .x_bar
            .iter_mut()
            .zip(self.z_bar.iter_mut())
            .zip(self.u.iter_mut())
            .zip(p.import_price.iter().zip(&p.export_price))
            .enumerate();
        for (t, (((x_bar, z_bar), u), (import, export))) in rows {
            let mut sum = 0.0;
            for prop in proposals {
                sum += prop.get(t).copied().unwrap_or(0.0);
            }
            let mean = sum / n;
            let v = *u + mean;
            // argmin_z Δ·g(N z) + (Nρ/2)(z − v)²: shrink by the import or the export slope,
            // then the feeder box (exact in one dimension).
            let up = v - p.dt_h * import / self.rho;
            let down = v - p.dt_h * export / self.rho;
            let z = if up > 0.0 {
                up
            } else if down < 0.0 {
                down
            } else {
                0.0
            };
            let cap = p.feeder_kw / n;
            let z = z.clamp(-cap, cap);
            dual = dual.max((self.rho * n * (z - *z_bar)).abs());
            *u += mean - z;
            primal = primal.max((n * (mean - z)).abs());
            *x_bar = mean;
            *z_bar = z;
        }
        StepReport { primal, dual }
    }

    /// Clearing prices, credits/kWh.
    pub fn prices(&self, dt_h: f64) -> Vec<f64> {
        self.u.iter().map(|u| self.rho * u / dt_h).collect()
    }
}

/// The hash chain over iteration inputs: `H(prev || u32 iteration || for each home in order:
/// key || i32 mW of every interval)`.
pub fn iteration_digest(
    prev: &Hash32,
    iteration: u32,
    proposals: &[(MemberKey, ProposalMw)],
) -> Hash32 {
    let mut bytes = Vec::with_capacity(
        proposals
            .iter()
            .map(|(_, v)| v.len().saturating_mul(4).saturating_add(33))
            .fold(36usize, usize::saturating_add),
    );
    bytes.extend_from_slice(&prev.0);
    bytes.extend_from_slice(&iteration.to_be_bytes());
    for (key, values) in proposals {
        bytes.extend_from_slice(&key.0);
        for v in values {
            bytes.extend_from_slice(&v.to_be_bytes());
        }
    }
    Hash32::tagged(b"gridlet/dispatch-iteration/v1", &[&bytes])
}

/// What the community commits to the chain for the day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedSchedule {
    /// Each home's scheduled net energy per interval, Wh (positive = import).
    pub schedule_wh: Vec<(MemberKey, Vec<i64>)>,
    /// Clearing price per interval, micro-credits per kWh.
    pub prices: Vec<i64>,
    /// The last link of the iteration hash chain.
    pub inputs_hash: Hash32,
    /// Iterations run.
    pub iterations: u32,
    /// Final primal residual, W (rounded).
    pub primal_w: i64,
    /// Final dual residual, W (rounded).
    pub dual_w: i64,
}

/// Rounds to the nearest integer with ties away from zero; out-of-range values saturate.
fn round_i64(x: f64) -> i64 {
    // `as` saturates and maps NaN to 0: no panic on any input.
    x.round() as i64
}

/// Why a recorded dispatch does not make a valid commitment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// No iteration at all.
    #[error("no iterations")]
    Empty,
    /// More iterations than the genesis allows.
    #[error("{found} iterations, at most {max} allowed")]
    TooManyIterations {
        /// Iterations recorded.
        found: usize,
        /// The limit.
        max: u32,
    },
    /// Iterations went on after the residuals were below the tolerance.
    #[error("iteration {iteration} had already converged")]
    RanPastConvergence {
        /// The iteration that met the tolerance.
        iteration: usize,
    },
    /// Stopped before converging and before the iteration limit.
    #[error("stopped after {iterations} iterations without converging")]
    StoppedEarly {
        /// Iterations recorded.
        iterations: usize,
    },
}

/// Replays the aggregation over every iteration's proposals (member order fixed by the
/// genesis) and returns the commitment. A node verifies a committed schedule by replaying the
/// proposals and comparing.
pub fn replay(p: &DispatchParams, rounds: &[Vec<(MemberKey, ProposalMw)>]) -> CommittedSchedule {
    replay_with(p, rounds, |_, _| {})
}

/// [`replay`] that also checks the stopping rule: the iterations end at the first one whose
/// residuals are within `tolerance_kw`, or at `max_iterations`.
pub fn replay_checked(
    p: &DispatchParams,
    rounds: &[Vec<(MemberKey, ProposalMw)>],
    tolerance_kw: f64,
    max_iterations: u32,
) -> Result<CommittedSchedule, DispatchError> {
    if rounds.is_empty() {
        return Err(DispatchError::Empty);
    }
    let max = usize::try_from(max_iterations).unwrap_or(usize::MAX);
    if rounds.len() > max {
        return Err(DispatchError::TooManyIterations {
            found: rounds.len(),
            max: max_iterations,
        });
    }
    let mut first_converged = None;
    let committed = replay_with(p, rounds, |i, report| {
        if first_converged.is_none() && converged(report, tolerance_kw) {
            first_converged = Some(i);
        }
    });
    let last = rounds.len().saturating_sub(1);
    match first_converged {
        Some(i) if i < last => Err(DispatchError::RanPastConvergence { iteration: i }),
        None if rounds.len() < max => Err(DispatchError::StoppedEarly {
            iterations: rounds.len(),
        }),
        _ => Ok(committed),
    }
}

fn replay_with(
    p: &DispatchParams,
    rounds: &[Vec<(MemberKey, ProposalMw)>],
    mut each: impl FnMut(usize, &StepReport),
) -> CommittedSchedule {
    let intervals = p.import_price.len();
    let mut agg = Aggregator::new(intervals, p.rho);
    let mut hash = Hash32::tagged(b"gridlet/dispatch-start/v1", &[]);
    let mut report = StepReport {
        primal: f64::INFINITY,
        dual: f64::INFINITY,
    };
    for (i, round) in rounds.iter().enumerate() {
        hash = iteration_digest(&hash, u32::try_from(i).unwrap_or(u32::MAX), round);
        let kws: Vec<Vec<f64>> = round
            .iter()
            .map(|(_, v)| v.iter().map(|w| kw(*w)).collect())
            .collect();
        let refs: Vec<&[f64]> = kws.iter().map(|v| v.as_slice()).collect();
        report = agg.step(p, &refs);
        each(i, &report);
    }
    let wh_per_kw = p.dt_h * 1000.0;
    let schedule_wh = rounds
        .last()
        .map(|last| {
            last.iter()
                .map(|(k, v)| {
                    (
                        *k,
                        v.iter().map(|w| round_i64(kw(*w) * wh_per_kw)).collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    CommittedSchedule {
        schedule_wh,
        prices: agg
            .prices(p.dt_h)
            .iter()
            .map(|c| round_i64(c * 1_000_000.0))
            .collect(),
        inputs_hash: hash,
        iterations: u32::try_from(rounds.len()).unwrap_or(u32::MAX),
        primal_w: round_i64(report.primal * 1000.0),
        dual_w: round_i64(report.dual * 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::deterministic_key;

    fn params() -> DispatchParams {
        DispatchParams {
            dt_h: 0.25,
            import_price: vec![0.3, 0.3, 0.4],
            export_price: vec![0.08; 3],
            feeder_kw: 10.0,
            rho: 0.05,
        }
    }

    #[test]
    fn replay_is_deterministic_and_the_hash_covers_every_input_bit() {
        let k = |i| MemberKey::from_secret(&deterministic_key(9, i));
        let rounds = vec![
            vec![
                (k(0), vec![1_000_000, -2_000_000, 3_000_000]),
                (k(1), vec![500_000; 3]),
            ],
            vec![
                (k(0), vec![900_000, -1_500_000, 2_000_000]),
                (k(1), vec![400_000, 700_000, 200_000]),
            ],
        ];
        let a = replay(&params(), &rounds);
        assert_eq!(a, replay(&params(), &rounds));
        assert_eq!(a.iterations, 2);
        assert_eq!(a.schedule_wh[0].1, vec![225, -375, 500]);
        let mut changed = rounds.clone();
        changed[0][1].1[2] = 500_001;
        assert_ne!(replay(&params(), &changed).inputs_hash, a.inputs_hash);
    }

    #[test]
    fn the_stopping_rule_is_checked() {
        let k = |i| MemberKey::from_secret(&deterministic_key(9, i));
        let same = vec![(k(0), vec![0, 0, 0]), (k(1), vec![0, 0, 0])];
        // With a loose tolerance the first step converges, so a second round ran past it.
        let p = params();
        assert!(replay_checked(&p, std::slice::from_ref(&same), 100.0, 5).is_ok());
        assert_eq!(
            replay_checked(&p, &[same.clone(), same.clone()], 100.0, 5),
            Err(DispatchError::RanPastConvergence { iteration: 0 })
        );
        let far = vec![(k(0), vec![9_000_000, 0, 0]), (k(1), vec![0, 0, 0])];
        assert_eq!(
            replay_checked(&p, std::slice::from_ref(&far), 0.01, 5),
            Err(DispatchError::StoppedEarly { iterations: 1 })
        );
        // At the iteration limit an unconverged schedule stands.
        assert!(replay_checked(&p, std::slice::from_ref(&far), 0.01, 1).is_ok());
        assert_eq!(replay_checked(&p, &[], 0.01, 1), Err(DispatchError::Empty));
    }

    #[test]
    fn the_grid_step_stays_within_the_feeder() {
        let p = params();
        let mut agg = Aggregator::new(3, p.rho);
        let big = [40.0, -40.0, 0.0];
        let r = agg.step(&p, &[&big, &big]);
        for z in &agg.z_bar {
            assert!(z.abs() * 2.0 <= p.feeder_kw + 1e-12);
        }
        assert!(r.primal > 0.0);
    }
}
