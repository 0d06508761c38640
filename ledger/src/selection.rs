//! Proof-of-Stake producer selection: a pure function of the weights, the previous block hash
//! and the slot, so every node computes the same ranking.
//!
//! - `paper` (the design paper's rule): each member draws `U_k = (u_k + 1) / 2^64` in (0, 1],
//!   with `u_k` the first 8 bytes (big-endian) of `SHA-256("gridlet/u/v1" || prev || slot ||
//!   key)`, and ranks by `W_k / U_k` descending. Ratios are compared by cross-multiplication
//!   in `u128`: `W_a·(u_b+1) > W_b·(u_a+1)`. This rule is not proportional to W: with weights
//!   1 and 0.5 the heavier member wins 75 % of slots.
//! - `proportional`: rank 1 is drawn with probability exactly `W_k / ΣW` by an unbiased draw
//!   (rejection sampling) over the members' cumulative weights in key order; ranks 2, 3, …
//!   repeat the draw without the members already ranked.
//!
//! Members with `W = 0` are never drawn ahead of a member with `W > 0`; they follow in order
//! of `u_k` so the ranking is total.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::crypto::{Hash32, MemberKey};

const U_TAG: &[u8] = b"gridlet/u/v1";
const DRAW_TAG: &[u8] = b"gridlet/draw/v1";

/// Which selection rule the community uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionRule {
    /// argmax `W / U`, as in the design paper.
    Paper,
    /// Probability exactly proportional to `W`.
    Proportional,
}

/// A member and its election weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The member.
    pub key: MemberKey,
    /// `α·E + β·A + γ·R`.
    pub weight: u64,
}

/// `u_k`: the member's 64-bit draw for this slot.
pub fn member_draw(prev_hash: &Hash32, slot: u64, key: &MemberKey) -> u64 {
    let h = Hash32::tagged(U_TAG, &[&prev_hash.0, &slot.to_be_bytes(), &key.0]);
    let mut first = [0u8; 8];
    first.copy_from_slice(h.0.get(..8).unwrap_or(&[0u8; 8]));
    u64::from_be_bytes(first)
}

/// Orders two members by the paper rule: higher `W/U` first, then lower `u`, then lower key.
fn paper_order(a: &(Candidate, u64), b: &(Candidate, u64)) -> Ordering {
    let (ca, ua) = a;
    let (cb, ub) = b;
    // W·(u+1) fits u128: (2^64 - 1) · 2^64 < 2^128.
    let lhs = u128::from(ca.weight).saturating_mul(u128::from(*ub).saturating_add(1));
    let rhs = u128::from(cb.weight).saturating_mul(u128::from(*ua).saturating_add(1));
    rhs.cmp(&lhs)
        .then_with(|| ua.cmp(ub))
        .then_with(|| ca.key.cmp(&cb.key))
}

/// An unbiased draw in `[0, total)` for (prev, slot, rank), by rejection sampling.
fn uniform_below(prev_hash: &Hash32, slot: u64, rank: u64, total: u128) -> u128 {
    // Largest multiple of `total` representable; draws at or above it are redrawn.
    let zone = u128::MAX.saturating_sub(u128::MAX.checked_rem(total).unwrap_or(0));
    let mut counter = 0u64;
    loop {
        let h = Hash32::tagged(
            DRAW_TAG,
            &[
                &prev_hash.0,
                &slot.to_be_bytes(),
                &rank.to_be_bytes(),
                &counter.to_be_bytes(),
            ],
        );
        let mut first = [0u8; 16];
        first.copy_from_slice(h.0.get(..16).unwrap_or(&[0u8; 16]));
        let v = u128::from_be_bytes(first);
        if v < zone {
            return v.checked_rem(total).unwrap_or(0);
        }
        counter = counter.wrapping_add(1);
    }
}

/// The first `count` producers for `slot`, best first.
pub fn rank_producers(
    rule: SelectionRule,
    candidates: &[Candidate],
    prev_hash: &Hash32,
    slot: u64,
    count: usize,
) -> Vec<MemberKey> {
    let mut with_draws: Vec<(Candidate, u64)> = candidates
        .iter()
        .map(|c| (*c, member_draw(prev_hash, slot, &c.key)))
        .collect();
    match rule {
        SelectionRule::Paper => {
            with_draws.sort_by(paper_order);
            with_draws
                .into_iter()
                .take(count)
                .map(|(c, _)| c.key)
                .collect()
        }
        SelectionRule::Proportional => {
            let (mut weighted, mut zero): (Vec<_>, Vec<_>) =
                with_draws.into_iter().partition(|(c, _)| c.weight > 0);
            weighted.sort_by_key(|(c, _)| c.key);
            zero.sort_by(paper_order);
            let mut out = Vec::with_capacity(count.min(candidates.len()));
            let mut rank = 0u64;
            while out.len() < count && !weighted.is_empty() {
                let total: u128 = weighted.iter().fold(0u128, |acc, (c, _)| {
                    acc.saturating_add(u128::from(c.weight))
                });
                let mut x = uniform_below(prev_hash, slot, rank, total);
                let mut chosen = weighted.len().saturating_sub(1);
                for (i, (c, _)) in weighted.iter().enumerate() {
                    let w = u128::from(c.weight);
                    if x < w {
                        chosen = i;
                        break;
                    }
                    x = x.saturating_sub(w);
                }
                let (c, _) = weighted.remove(chosen);
                out.push(c.key);
                rank = rank.saturating_add(1);
            }
            out.extend(
                zero.into_iter()
                    .take(count.saturating_sub(out.len()))
                    .map(|(c, _)| c.key),
            );
            out
        }
    }
}

/// The 1-based rank of `producer` among the first `count`, if it is among them.
pub fn rank_of(
    rule: SelectionRule,
    candidates: &[Candidate],
    prev_hash: &Hash32,
    slot: u64,
    count: usize,
    producer: &MemberKey,
) -> Option<u32> {
    rank_producers(rule, candidates, prev_hash, slot, count)
        .iter()
        .position(|k| k == producer)
        .and_then(|p| u32::try_from(p).ok())
        .map(|p| p.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::deterministic_key;

    fn cands(weights: &[u64]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Candidate {
                key: MemberKey::from_secret(&deterministic_key(9, i as u64)),
                weight: *w,
            })
            .collect()
    }

    #[test]
    fn paper_rule_favours_heavier_member_three_to_one() {
        let c = cands(&[2, 1]);
        let slots = 40_000u64;
        let mut heavy = 0u64;
        for slot in 0..slots {
            if rank_producers(SelectionRule::Paper, &c, &Hash32::ZERO, slot, 1)[0] == c[0].key {
                heavy += 1;
            }
        }
        let share = heavy as f64 / slots as f64;
        assert!((share - 0.75).abs() < 0.01, "share {share}");
    }

    #[test]
    fn ranking_is_a_permutation_and_zero_weights_come_last() {
        let c = cands(&[0, 5, 0, 7, 1]);
        for rule in [SelectionRule::Paper, SelectionRule::Proportional] {
            for slot in 0..200 {
                let ranked = rank_producers(rule, &c, &Hash32::sha256(b"p"), slot, 5);
                assert_eq!(ranked.len(), 5);
                let mut sorted = ranked.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(sorted.len(), 5);
                for k in &ranked[..3] {
                    assert!(*k != c[0].key && *k != c[2].key);
                }
            }
        }
    }
}
