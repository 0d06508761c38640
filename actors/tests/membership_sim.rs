//! Members who join and leave, with real nodes in lock-step (`gridlet_hil::lockstep`): a home
//! outside the genesis is admitted by an on-chain proposal and a quorum's approvals, syncs from
//! genesis (certificates included), then produces and votes; a member who leaves stops counting,
//! and the others keep finalizing — with no two homes ever disagreeing on a final block.

use gridlet_core::node::Input;
use gridlet_hil::lockstep::LockstepNet;
use gridlet_ledger::crypto::deterministic_key;
use gridlet_ledger::genesis::Member;
use gridlet_ledger::membership::MemberChange;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::{Genesis, Hash32, MemberKey, MicroCredits, TxPayload};
use secp256k1::SecretKey;

/// Four genesis members and a fifth key (index 4) that is not one.
fn four_and_a_joiner() -> (Genesis, Vec<SecretKey>) {
    let keys: Vec<SecretKey> = (0..5u64).map(|i| deterministic_key(77, i)).collect();
    let members = keys[..4]
        .iter()
        .enumerate()
        .map(|(i, k)| Member {
            name: format!("home-{i}"),
            key: MemberKey::from_secret(k),
            attestor: MemberKey::from_secret(&deterministic_key(78, i as u64)),
            equipment: gridlet_ledger::genesis::Equipment::device(20_000, 10_000),
            balance: MicroCredits::new(1_000_000),
        })
        .collect();
    let genesis = Genesis::with_defaults("membership-sim", 0, members, SelectionRule::Paper);
    (genesis, keys)
}

fn run(net: &mut LockstepNet, ms: u64) {
    for _ in 0..ms / 100 {
        net.step(100).unwrap();
        let conflicts = net.conflicting_final_blocks();
        assert!(
            conflicts.is_empty(),
            "conflicting final blocks: {conflicts:?}"
        );
    }
}

/// Runs until `done` holds (checked every 100 ms), at most `ms`; whether it did.
fn run_until(net: &mut LockstepNet, ms: u64, done: impl Fn(&LockstepNet) -> bool) -> bool {
    for _ in 0..ms / 100 {
        run(net, 100);
        if done(net) {
            return true;
        }
    }
    false
}

/// Home 0 proposes `change`; once it is on home 0's chain, `approvers` approve it.
fn propose_and_approve(net: &mut LockstepNet, change: MemberChange, approvers: &[usize]) {
    net.input(0, Input::Sign(Box::new(TxPayload::MemberPropose(change))))
        .unwrap();
    let open = |n: &LockstepNet| -> Option<Hash32> {
        let state = n.nodes[0].chain().chain().head_state();
        state.membership().proposals().keys().next().copied()
    };
    assert!(run_until(net, 5_000, |n| open(n).is_some()));
    let id = open(net).expect("an open proposal");
    for i in approvers {
        let approve = TxPayload::MemberApprove { proposal: id };
        net.input(*i, Input::Sign(Box::new(approve))).unwrap();
    }
}

fn final_member(net: &LockstepNet, node: usize, key: &MemberKey) -> bool {
    let state = net.nodes[node].chain().chain().finalized_state();
    state.membership().contains(key)
}

#[test]
fn a_new_home_is_admitted_syncs_votes_and_a_leaving_one_stops_counting() {
    let (genesis, keys) = four_and_a_joiner();
    let joiner = MemberKey::from_secret(&keys[4]);
    let mut net = LockstepNet::new(&genesis, &keys).unwrap();
    // The joining home's gateway is not running yet: it will sync everything from genesis.
    net.online[4] = false;
    run(&mut net, 5_000);

    // Home 0 proposes the new home; homes 1 and 2 approve (3 of 4 is the quorum).
    let add = MemberChange::Add {
        name: "home-4".into(),
        key: joiner,
        attestor: MemberKey::from_secret(&deterministic_key(78, 4)),
        equipment: gridlet_ledger::genesis::Equipment::device(20_000, 10_000),
    };
    propose_and_approve(&mut net, add, &[1, 2]);
    assert!(
        run_until(&mut net, 10_000, |n| (0..4)
            .all(|i| final_member(n, i, &joiner))),
        "the admission became final on every member"
    );
    let admitted_at = net.final_heights()[0];
    // It joins with no credits; a neighbour gives it some for its fees.
    let credit = TxPayload::Transfer {
        to: joiner,
        amount: MicroCredits::new(100_000),
    };
    net.input(0, Input::Sign(Box::new(credit))).unwrap();

    // The new home starts, syncs from genesis and verifies every certificate on the way.
    net.online[4] = true;
    assert!(
        run_until(&mut net, 20_000, |n| {
            let f = n.final_heights();
            f[4] > admitted_at && f[4] + 2 >= f[0]
        }),
        "the new home caught up: {:?}",
        net.final_heights()
    );
    run(&mut net, 15_000);
    let finals = net.final_heights();
    assert!(finals[4] + 2 >= finals[0], "{finals:?}");
    let chain = net.nodes[4].chain();
    let certs = chain.certificates(1, finals[4]).unwrap();
    assert!(!certs.is_empty());
    assert!(
        certs
            .iter()
            .any(|c| c.signatures.iter().any(|(k, _)| *k == joiner)),
        "the new home's precommits are in certificates"
    );
    let produced = (admitted_at + 1..=finals[4])
        .filter_map(|h| chain.block_at(h).unwrap())
        .filter(|b| b.header.producer == joiner)
        .count();
    assert!(produced > 0, "the new home produced final blocks");

    // Home 3 leaves: 4 of the 5 approve (the proposer, then three more).
    let leaver = MemberKey::from_secret(&keys[3]);
    let remove = MemberChange::Remove { key: leaver };
    propose_and_approve(&mut net, remove, &[1, 2, 4]);
    assert!(
        run_until(&mut net, 10_000, |n| [0, 1, 2, 4]
            .iter()
            .all(|i| !final_member(n, *i, &leaver))),
        "the departure became final"
    );
    // Its gateway stops; the four left (quorum 3 of 4) keep finalizing.
    net.online[3] = false;
    let before = net.final_heights()[0];
    run(&mut net, 10_000);
    let after = net.final_heights();
    for i in [0, 1, 2, 4] {
        assert!(
            after[i] >= before + 7,
            "home {i} kept finalizing: {after:?}"
        );
    }
}
