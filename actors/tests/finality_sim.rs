//! Quorum finality in lock-step (`gridlet_hil::lockstep`): blocks become final only with a
//! quorum's certificate, a cut-off minority finalizes nothing, a split without a quorum on
//! either side finalizes nothing, and after every heal all homes share one final chain.

use gridlet_hil::lockstep::LockstepNet;
use gridlet_ledger::crypto::deterministic_key;
use gridlet_ledger::genesis::Member;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::store::{MemStore, PersistentChain, SignerGuard, VoteGuard};
use gridlet_ledger::{Genesis, MemberKey, MicroCredits};
use secp256k1::SecretKey;

fn community(n: usize) -> (Genesis, Vec<SecretKey>) {
    let keys: Vec<SecretKey> = (0..n as u64).map(|i| deterministic_key(55, i)).collect();
    let members = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Member {
            name: format!("home-{i}"),
            key: MemberKey::from_secret(k),
            attestor: MemberKey::from_secret(&deterministic_key(56, i as u64)),
            equipment: gridlet_ledger::genesis::Equipment::device(20_000, 10_000),
            balance: MicroCredits::new(1_000_000),
        })
        .collect();
    (
        Genesis::with_defaults("finality-sim", 0, members, SelectionRule::Paper),
        keys,
    )
}

/// Runs `ms` in 100 ms steps, checking after every step that no two homes disagree on a block
/// both hold final.
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

fn max(v: &[u64]) -> u64 {
    v.iter().copied().max().unwrap_or(0)
}

#[test]
fn five_homes_finalize_every_block_within_its_slot() {
    let (genesis, keys) = community(5);
    let mut net = LockstepNet::new(&genesis, &keys).unwrap();
    run(&mut net, 20_000);
    let heads: Vec<u64> = net.heads().iter().map(|h| h.0).collect();
    let finals = net.final_heights();
    assert!(heads[0] >= 18, "production went on: {heads:?}");
    for (h, f) in heads.iter().zip(&finals) {
        assert!(
            h - f <= 1,
            "final lags the head by more than a block: {heads:?} {finals:?}"
        );
    }
    // Every final block has a stored certificate that verifies on its own.
    let chain = net.nodes[0].chain();
    let rules = chain.chain().rules();
    let certs = chain.certificates(1, finals[0]).unwrap();
    assert!(
        certs.len() as u64 >= finals[0] / 2,
        "{} certificates",
        certs.len()
    );
    let voters = chain.chain().finalized_state().members();
    for c in &certs {
        c.verify(&rules.chain_id, voters, &rules.finality).unwrap();
        assert_eq!(chain.hash_at(c.block.height), Some(c.block.hash));
    }
    let consensus_refusals: Vec<_> = net
        .refusals
        .iter()
        .filter(|(what, _, _)| what == "consensus")
        .collect();
    assert!(consensus_refusals.is_empty(), "{consensus_refusals:?}");
}

#[test]
fn a_cut_off_home_finalizes_nothing_and_rejoins_the_final_chain() {
    let (genesis, keys) = community(5);
    let mut net = LockstepNet::new(&genesis, &keys).unwrap();
    run(&mut net, 5_000);
    // 1 | 4 for 30 s: the four are a quorum (4 of 5), the one is not.
    net.side[4] = 1;
    let cut_at = net.final_heights()[4];
    run(&mut net, 30_000);
    let finals = net.final_heights();
    assert!(
        finals[4] <= cut_at + 1,
        "the cut-off home finalized alone: {finals:?}"
    );
    assert!(
        finals[0] >= cut_at + 25,
        "the majority kept finalizing: {finals:?}"
    );
    net.side[4] = 0;
    let mut rejoined_after = None;
    for step in 0..100 {
        run(&mut net, 100);
        let f = net.final_heights();
        if f[4] + 1 >= max(&f) && f[4] > finals[0] {
            rejoined_after = Some(step);
            break;
        }
    }
    let steps = rejoined_after.expect("the home rejoined the final chain");
    assert!(steps <= 50, "rejoined after {steps} steps of 100 ms");
}

#[test]
fn a_split_without_a_quorum_finalizes_nothing_then_heals_onto_one_chain() {
    let (genesis, keys) = community(5);
    let mut net = LockstepNet::new(&genesis, &keys).unwrap();
    run(&mut net, 5_000);
    // 2 | 3: with 5 members the quorum is 4, so neither side may finalize.
    net.side = vec![0, 0, 1, 1, 1];
    run(&mut net, 2_000);
    let before = net.final_heights();
    run(&mut net, 30_000);
    let during = net.final_heights();
    assert_eq!(
        max(&during),
        max(&before),
        "a side without a quorum finalized: {before:?} → {during:?}"
    );
    // Both sides kept producing (blocks nobody may act on).
    assert!(
        net.heads().iter().all(|h| h.0 > max(&during) + 10),
        "{:?}",
        net.heads()
    );
    net.side = vec![0; 5];
    run(&mut net, 10_000);
    let after = net.final_heights();
    assert!(
        after.iter().all(|f| *f > max(&during) + 5),
        "finality resumed: {after:?}"
    );
    let heads = net.heads();
    assert!(
        after.iter().all(|f| max(&after) - f <= 1),
        "every home on one final chain: {after:?} {heads:?}"
    );
}

#[test]
fn a_restarted_home_resumes_from_its_stored_certificate() {
    let (genesis, keys) = community(4);
    let mut net = LockstepNet::new(&genesis, &keys).unwrap();
    run(&mut net, 8_000);
    let final_height = net.final_heights()[3];
    assert!(final_height >= 6);
    // Reopen home 3's chain from a copy of its store: finality comes back from the certificate.
    let stored: Vec<_> = (1..=net.nodes[3].chain().chain().head_height())
        .map(|h| net.nodes[3].chain().block_at(h).unwrap().unwrap())
        .collect();
    let mut store = MemStore::default();
    use gridlet_ledger::store::BlockStore;
    store.set_chain_id(genesis.hash()).unwrap();
    for b in &stored {
        store.put(b.header.height, &b.encode()).unwrap();
    }
    let cert = net.nodes[3].chain().last_certificate().unwrap().clone();
    store
        .put_certificate(cert.block.height, &cert.encode())
        .unwrap();
    let (chain, _) = PersistentChain::open(store, genesis.clone(), u64::MAX).unwrap();
    assert_eq!(chain.chain().finalized().1, cert.block.height);
    let dir = tempfile::tempdir().unwrap();
    let node = gridlet_core::node::Node::new(
        gridlet_core::node::NodeConfig {
            name: "node-3".into(),
            max_mempool: 1000,
            sync_batch: 50,
            last_slot: u64::MAX,
        },
        keys[3],
        chain,
        SignerGuard::open(dir.path(), 0).unwrap(),
        VoteGuard::open(dir.path(), 0).unwrap(),
    );
    assert_eq!(node.checkpoint().0, cert.checkpoint + 1);
}

#[test]
fn twenty_double_votes_become_twenty_evidence_records_and_nothing_conflicts() {
    use gridlet_core::node::BusMessage;
    use gridlet_ledger::finality::{BlockRef, ConsensusMessage, SignedVote, Vote, VoteStep};
    use gridlet_ledger::{Hash32, Signature};
    let (genesis, keys) = community(5);
    let mut net = LockstepNet::new(&genesis, &keys).unwrap();
    run(&mut net, 5_000);
    // Home 4 turns byzantine: for 20 (checkpoint, round) pairs it signs precommits for two
    // different blocks and publishes both.
    let chain_id = genesis.hash();
    let offender = MemberKey::from_secret(&keys[4]);
    let vote = |checkpoint: u64, round: u32, tag: u8| {
        let vote = Vote {
            checkpoint,
            round,
            step: VoteStep::Precommit,
            value: Some(BlockRef {
                height: checkpoint,
                hash: Hash32([tag; 32]),
            }),
            voter: offender,
        };
        SignedVote {
            vote,
            signature: Signature::sign(&vote.digest(&chain_id), &keys[4]),
        }
    };
    for i in 0..20u64 {
        for tag in [1u8, 2u8] {
            let msg = ConsensusMessage::Vote(vote(1 + i / 2, (i % 2) as u32, tag));
            let hex = gridlet_ledger::codec::to_hex(&msg.encode());
            for to in 0..4 {
                net.input(
                    to,
                    gridlet_core::node::Input::Bus(BusMessage::Consensus { hex: hex.clone() }),
                )
                .unwrap();
            }
        }
        run(&mut net, 200);
    }
    run(&mut net, 5_000);
    for (i, node) in net.nodes.iter().enumerate().take(4) {
        let state = node.chain().chain().finalized_state();
        let offences: Vec<_> = state
            .offences()
            .iter()
            .filter(|(k, ..)| *k == offender)
            .collect();
        assert_eq!(
            offences.len(),
            20,
            "home {i}: {} evidence records",
            offences.len()
        );
        assert!(state.excluded().contains_key(&offender));
        let ranked = node.chain().chain().ranked_producers(state.slot + 1);
        assert!(!ranked.contains(&offender), "the offender still produces");
    }
    assert!(net.conflicting_final_blocks().is_empty());
}

/// The checkpoint home `i` is voting in now (the one after its last certificate).
fn voting_in(net: &LockstepNet, i: usize) -> u64 {
    net.nodes[i].checkpoint().0
}

#[test]
fn a_home_that_lost_its_vote_record_votes_again_only_after_a_checkpoint_decided_without_it() {
    let (genesis, keys) = community(5);
    let mut net = LockstepNet::new(&genesis, &keys).unwrap();
    run(&mut net, 8_000);
    let in_progress = voting_in(&net, 2);
    let before = net.own_votes[2].len();
    assert!(before > 0, "home 2 voted before");
    net.restart(2, &["votes.state", "signer.state"]).unwrap();
    run(&mut net, 20_000);
    let notices: Vec<_> = net
        .signer_notices
        .iter()
        .filter(|n| n.0 == 2)
        .map(|n| (n.1, n.2))
        .collect();
    assert_eq!(
        notices,
        vec![("blocks", true), ("votes", false), ("votes", true)],
        "{:?}",
        net.signer_notices
    );
    // What it signed after the restart: nothing in the checkpoint it may have voted in.
    let after: Vec<(u64, u32)> = net.own_votes[2][before..].to_vec();
    assert!(!after.is_empty(), "home 2 votes again");
    assert!(
        after.iter().all(|(c, _)| *c > in_progress),
        "votes after the restart {after:?}, checkpoint in progress then {in_progress}"
    );
    let finals = net.final_heights();
    assert!(
        finals.iter().all(|f| max(&finals) - f <= 1),
        "one final chain: {finals:?}"
    );
    assert!(
        net.refusals.iter().all(|r| !r.2.contains("not signing")),
        "held votes are not refusals: {:?}",
        net.refusals
    );
}

#[test]
fn a_restart_with_its_records_intact_votes_at_once() {
    let (genesis, keys) = community(5);
    let mut net = LockstepNet::new(&genesis, &keys).unwrap();
    run(&mut net, 8_000);
    net.restart(2, &[]).unwrap();
    run(&mut net, 5_000);
    assert!(net.signer_notices.is_empty(), "{:?}", net.signer_notices);
}
