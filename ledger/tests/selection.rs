//! Producer selection over many slots: shares against weights, and nobody with weight starves.

use gridlet_ledger::crypto::deterministic_key;
use gridlet_ledger::selection::{rank_producers, Candidate, SelectionRule};
use gridlet_ledger::{Hash32, MemberKey};

/// splitmix64, so the test's random weights are reproducible without a dependency.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const SLOTS: u64 = 100_000;

fn run(rule: SelectionRule, weights: &[u64]) -> Vec<u64> {
    let candidates: Vec<Candidate> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| Candidate {
            key: MemberKey::from_secret(&deterministic_key(5, i as u64)),
            weight: *w,
        })
        .collect();
    let mut wins = vec![0u64; weights.len()];
    let mut prev = Hash32::sha256(b"genesis");
    for slot in 0..SLOTS {
        let winner = rank_producers(rule, &candidates, &prev, slot, 1)[0];
        let i = candidates.iter().position(|c| c.key == winner).unwrap();
        wins[i] += 1;
        // Chain the previous hash like blocks do, so draws are not all from one seed.
        prev = Hash32::tagged(b"test/next", &[&prev.0, &slot.to_be_bytes()]);
    }
    wins
}

#[test]
fn proportional_shares_track_weights_within_one_point() {
    let mut seed = 2026;
    for _round in 0..3 {
        let weights: Vec<u64> = (0..10).map(|_| 1 + splitmix(&mut seed) % 100).collect();
        let total: u64 = weights.iter().sum();
        let wins = run(SelectionRule::Proportional, &weights);
        for (w, n) in weights.iter().zip(&wins) {
            let expected = *w as f64 / total as f64;
            let share = *n as f64 / SLOTS as f64;
            assert!(
                (share - expected).abs() < 0.01,
                "weight {w}: share {share:.4} vs {expected:.4} (weights {weights:?})"
            );
            assert!(*n > 0);
        }
    }
}

#[test]
fn every_member_with_weight_produces_under_the_paper_rule() {
    let mut seed = 7;
    let weights: Vec<u64> = (0..10).map(|_| 1 + splitmix(&mut seed) % 100).collect();
    let wins = run(SelectionRule::Paper, &weights);
    for (w, n) in weights.iter().zip(&wins) {
        assert!(*n > 0, "weight {w} never produced: {wins:?}");
    }
    // The paper rule favours heavy members more than proportionally.
    let heaviest = weights
        .iter()
        .enumerate()
        .max_by_key(|(_, w)| **w)
        .unwrap()
        .0;
    let total: u64 = weights.iter().sum();
    assert!(wins[heaviest] as f64 / SLOTS as f64 > weights[heaviest] as f64 / total as f64);
}

#[test]
fn zero_weight_members_never_win_while_others_have_weight() {
    let wins = run(SelectionRule::Proportional, &[0, 3, 0, 1]);
    assert_eq!(wins[0], 0);
    assert_eq!(wins[2], 0);
    let wins = run(SelectionRule::Paper, &[0, 3, 0, 1]);
    assert_eq!(wins[0] + wins[2], 0);
}
