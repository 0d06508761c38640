//! Members who join and leave (protocol.md §7.1): a change is an on-chain proposal that takes
//! effect after the block in which a quorum of the current members approved it; from then on
//! the new set decides who sends, produces and certifies.

mod common;

use common::Community;
use gridlet_ledger::chain::Checks;
use gridlet_ledger::crypto::deterministic_key;
use gridlet_ledger::market::MarketEvent;
use gridlet_ledger::membership::MemberChange;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::{Block, Chain, Hash32, MemberKey, SignedTransaction, TxError, TxPayload};

/// Produces the next block with `txs` (as the elected producer) and inserts it; the reasons
/// each left-out transaction was refused.
fn block(c: &Community, ch: &mut Chain, txs: &[SignedTransaction]) -> (Block, Vec<TxError>) {
    let (b, refused, _) = block_with_events(c, ch, txs);
    (b, refused)
}

fn block_with_events(
    c: &Community,
    ch: &mut Chain,
    txs: &[SignedTransaction],
) -> (Block, Vec<TxError>, Vec<MarketEvent>) {
    let slot = ch.head_state().slot + 1;
    let producer = ch.ranked_producers(slot)[0];
    let produced = ch.produce(c.key_of(&producer), slot, txs).unwrap();
    let inserted = ch.insert(produced.block.clone(), Checks::FULL).unwrap();
    let refused = produced.rejected.into_iter().map(|(_, e)| e).collect();
    (produced.block, refused, inserted.events)
}

/// A community of four with a fifth key (index 4) outside it.
fn four_and_a_joiner() -> (Community, MemberKey, MemberKey) {
    let mut c = Community::new(4, SelectionRule::Paper);
    c.keys.push(deterministic_key(42, 4));
    let joiner = c.member(4);
    let attestor = MemberKey::from_secret(&deterministic_key(43, 4));
    (c, joiner, attestor)
}

fn nonce(ch: &Chain, c: &Community, i: usize) -> u64 {
    ch.head_state().account(&c.member(i)).nonce
}

#[test]
fn a_home_joins_once_a_quorum_approves_then_sends_produces_and_certifies() {
    let (c, joiner, attestor) = four_and_a_joiner();
    let mut ch = Chain::new(c.genesis.clone()).unwrap();
    let add = MemberChange::Add {
        name: "home-4".into(),
        key: joiner,
        attestor,
        equipment: gridlet_ledger::genesis::Equipment::device(20_000, 10_000),
    };
    // Outside the set, the joiner can neither send nor be elected.
    let (_, refused) = block(&c, &mut ch, &[c.transfer(4, 0, 1, 0)]);
    assert_eq!(refused, vec![TxError::UnknownSender { sender: joiner }]);
    assert!(!ch.ranked_producers(10).contains(&joiner));

    let propose = c.sign(0, nonce(&ch, &c, 0), TxPayload::MemberPropose(add.clone()));
    let id = propose.id();
    let (_, refused) = block(&c, &mut ch, &[propose]);
    assert!(refused.is_empty(), "{refused:?}");
    let p = &ch.head_state().membership().proposals()[&id];
    assert_eq!(p.approvals.len(), 1);
    // The same change again, and an approval by a non-member, are refused.
    let again = c.sign(1, nonce(&ch, &c, 1), TxPayload::MemberPropose(add.clone()));
    let outsider = c.sign(4, 0, TxPayload::MemberApprove { proposal: id });
    let (_, refused) = block(&c, &mut ch, &[again, outsider]);
    assert_eq!(
        refused,
        vec![
            TxError::MemberChangeInvalid {
                reason: "the same change is already proposed"
            },
            TxError::UnknownSender { sender: joiner }
        ]
    );

    // Two approvals of four members: below the quorum of 3 — still open.
    let approve = |ch: &Chain, i: usize| {
        c.sign(
            i,
            nonce(ch, &c, i),
            TxPayload::MemberApprove { proposal: id },
        )
    };
    let first = approve(&ch, 1);
    block(&c, &mut ch, &[first]);
    assert_eq!(ch.head_state().membership().len(), 4);
    let twice = approve(&ch, 1);
    let (_, refused) = block(&c, &mut ch, &[twice]);
    assert_eq!(
        refused,
        vec![TxError::MemberChangeInvalid {
            reason: "already approved by this member"
        }]
    );
    // The third approval: the change is in force from the next block.
    let third = approve(&ch, 2);
    let (approved, _, events) = block_with_events(&c, &mut ch, &[third]);
    let h = approved.header.height;
    let state = ch.head_state();
    assert_eq!(state.membership().len(), 5);
    assert_eq!(state.membership().members()[&joiner].since, h + 1);
    assert!(state.membership().proposals().is_empty());
    assert!(
        events.iter().any(|e| matches!(e,
            MarketEvent::MembershipChanged(m) if m.proposal == id && m.effective_height == h + 1)),
        "{events:?}"
    );
    let closed = approve(&ch, 3);
    let (_, refused) = block(&c, &mut ch, &[closed]);
    assert_eq!(refused, vec![TxError::UnknownProposal { proposal: id }]);

    // Credit the new home, then it sends on its own key.
    let credit = c.transfer(0, 4, 10_000, nonce(&ch, &c, 0));
    block(&c, &mut ch, &[credit]);
    let (_, refused) = block(&c, &mut ch, &[c.transfer(4, 0, 100, 0)]);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(ch.head_state().account(&joiner).nonce, 1);

    // It is elected (it never produced, so its age term is the largest; who wins a slot also
    // depends on the previous block's hash) and produces.
    let produced: Vec<MemberKey> = (0..12)
        .map(|_| block(&c, &mut ch, &[]).0.header.producer)
        .collect();
    assert!(produced.contains(&joiner), "{produced:?}");

    // Certificates: the approving block by the old set's quorum (3 of 4); after it, the new
    // set's (4 of 5), where the old three alone no longer suffice.
    let cert = c.certify(1, &approved, 3);
    cert.verify(
        &ch.chain_id(),
        ch.finalized_state().members(),
        &c.genesis.finality,
    )
    .unwrap();
    ch.finalize(&approved.hash()).unwrap();
    let tip = ch.block(&ch.head_hash()).unwrap();
    let voters = ch.finalized_state().members().clone();
    assert_eq!(voters.len(), 5);
    let three = c.certify(2, &tip, 3);
    assert!(three
        .verify(&ch.chain_id(), &voters, &c.genesis.finality)
        .is_err());
    let with_joiner = c.certify(2, &tip, 5);
    with_joiner
        .verify(&ch.chain_id(), &voters, &c.genesis.finality)
        .unwrap();
}

#[test]
fn a_home_that_leaves_keeps_its_credits_but_cannot_send_produce_or_vote() {
    let c = Community::new(4, SelectionRule::Paper);
    let mut ch = Chain::new(c.genesis.clone()).unwrap();
    let leaver = c.member(3);
    let propose = c.sign(
        0,
        0,
        TxPayload::MemberPropose(MemberChange::Remove { key: leaver }),
    );
    let id = propose.id();
    block(&c, &mut ch, &[propose]);
    let approvals = [1, 2].map(|i| c.sign(i, 0, TxPayload::MemberApprove { proposal: id }));
    let balance = ch.head_state().account(&leaver).balance;
    let (removed, refused) = block(&c, &mut ch, &approvals);
    assert!(refused.is_empty(), "{refused:?}");
    let state = ch.head_state();
    assert_eq!(state.membership().len(), 3);
    assert!(!state.membership().contains(&leaver));
    assert_eq!(state.account(&leaver).balance, balance, "its credits stay");

    let (_, refused) = block(&c, &mut ch, &[c.transfer(3, 0, 1, 0)]);
    assert_eq!(refused, vec![TxError::UnknownSender { sender: leaver }]);
    for slot in 20..60 {
        assert!(!ch.ranked_producers(slot).contains(&leaver));
    }
    // Once the change is final, a certificate counting the leaver's signature fails.
    ch.finalize(&removed.hash()).unwrap();
    let next = block(&c, &mut ch, &[]).0;
    let voters = ch.finalized_state().members().clone();
    let all_four = c.certify(2, &next, 4);
    assert!(all_four
        .verify(&ch.chain_id(), &voters, &c.genesis.finality)
        .is_err());
    let three = c.certify(2, &next, 3);
    three
        .verify(&ch.chain_id(), &voters, &c.genesis.finality)
        .unwrap();
}

#[test]
fn proposals_are_bounded_and_must_apply() {
    let (c, joiner, attestor) = four_and_a_joiner();
    let mut ch = Chain::new(c.genesis.clone()).unwrap();
    let add = |name: &str, key: MemberKey| {
        TxPayload::MemberPropose(MemberChange::Add {
            name: name.into(),
            key,
            attestor,
            equipment: gridlet_ledger::genesis::Equipment::device(20_000, 10_000),
        })
    };
    let others: Vec<MemberKey> = (10..15)
        .map(|i| MemberKey::from_secret(&deterministic_key(99, i)))
        .collect();
    let txs: Vec<SignedTransaction> = others
        .iter()
        .enumerate()
        .map(|(i, k)| c.sign(0, i as u64, add(&format!("new-{i}"), *k)))
        .collect();
    let (_, refused) = block(&c, &mut ch, &txs);
    assert_eq!(
        refused,
        vec![TxError::MemberChangeInvalid {
            reason: "the proposer already has 4 open proposals"
        }]
    );
    let bad = [
        add("home-1", joiner),
        add("", joiner),
        add("x", c.member(2)),
        TxPayload::MemberPropose(MemberChange::Remove { key: joiner }),
        TxPayload::MemberApprove {
            proposal: Hash32::sha256(b"no such proposal"),
        },
    ];
    for payload in bad {
        let tx = c.sign(1, nonce(&ch, &c, 1), payload);
        let (_, refused) = block(&c, &mut ch, &[tx]);
        assert_eq!(refused.len(), 1, "{refused:?}");
    }
    assert_eq!(ch.head_state().membership().proposals().len(), 4);
}

#[test]
fn the_last_member_cannot_leave() {
    let c = Community::new(1, SelectionRule::Paper);
    let mut ch = Chain::new(c.genesis.clone()).unwrap();
    let only = c.member(0);
    let (_, refused) = block(
        &c,
        &mut ch,
        &[c.sign(
            0,
            0,
            TxPayload::MemberPropose(MemberChange::Remove { key: only }),
        )],
    );
    assert_eq!(
        refused,
        vec![TxError::MemberChangeInvalid {
            reason: "the last member cannot leave"
        }]
    );
}
