//! The day-ahead dispatch contract (aggregator S1 of docs/scheduling.md): the sharing-ADMM
//! coordination step as a pure, deterministic function of the homes' proposals, a hash chain
//! over every iteration's inputs, and the committed schedule (integer Wh per home and interval,
//! clearing prices in micro-credits per kWh) that any node recomputes from the same inputs.
//!
//! Determinism: only correctly rounded IEEE-754 operations (`+ − × ÷`, comparisons) in a fixed
//! order — no fused multiply-add, no parallel sums, no transcendental functions — so every node
//! computes the same bits; the inputs are hashed by their bit patterns.

use crate::crypto::{Hash32, MemberKey};

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
/// key || f64 bits of every interval)`.
pub fn iteration_digest(
    prev: &Hash32,
    iteration: u32,
    proposals: &[(MemberKey, Vec<f64>)],
) -> Hash32 {
    let mut bytes = Vec::with_capacity(
        proposals
            .iter()
            .map(|(_, v)| v.len().saturating_mul(8).saturating_add(33))
            .fold(36usize, usize::saturating_add),
    );
    bytes.extend_from_slice(&prev.0);
    bytes.extend_from_slice(&iteration.to_be_bytes());
    for (key, values) in proposals {
        bytes.extend_from_slice(&key.0);
        for v in values {
            bytes.extend_from_slice(&v.to_bits().to_be_bytes());
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

/// Replays the aggregation over every iteration's proposals (member order fixed by the
/// genesis) and returns the commitment. A node verifies a committed schedule by replaying the
/// proposals it saw on the bus and comparing.
pub fn replay(p: &DispatchParams, rounds: &[Vec<(MemberKey, Vec<f64>)>]) -> CommittedSchedule {
    let intervals = p.import_price.len();
    let mut agg = Aggregator::new(intervals, p.rho);
    let mut hash = Hash32::tagged(b"gridlet/dispatch-start/v1", &[]);
    let mut report = StepReport {
        primal: f64::INFINITY,
        dual: f64::INFINITY,
    };
    for (i, round) in rounds.iter().enumerate() {
        hash = iteration_digest(&hash, u32::try_from(i).unwrap_or(u32::MAX), round);
        let refs: Vec<&[f64]> = round.iter().map(|(_, v)| v.as_slice()).collect();
        report = agg.step(p, &refs);
    }
    let wh_per_kw = p.dt_h * 1000.0;
    let schedule_wh = rounds
        .last()
        .map(|last| {
            last.iter()
                .map(|(k, v)| (*k, v.iter().map(|kw| round_i64(kw * wh_per_kw)).collect()))
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
            vec![(k(0), vec![1.0, -2.0, 3.0]), (k(1), vec![0.5, 0.5, 0.5])],
            vec![(k(0), vec![0.9, -1.5, 2.0]), (k(1), vec![0.4, 0.7, 0.2])],
        ];
        let a = replay(&params(), &rounds);
        assert_eq!(a, replay(&params(), &rounds));
        assert_eq!(a.iterations, 2);
        assert_eq!(a.schedule_wh[0].1, vec![225, -375, 500]);
        let mut changed = rounds.clone();
        changed[0][1].1[2] = f64::from_bits(0.5f64.to_bits() + 1);
        assert_ne!(replay(&params(), &changed).inputs_hash, a.inputs_hash);
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
