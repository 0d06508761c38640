//! Chain rules: validation, replay and overspend, tampering, fork choice and finality.

mod common;

use common::Community;
use gridlet_ledger::chain::Checks;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::MicroCredits;
use gridlet_ledger::{Block, BlockError, Chain, Hash32, TxError};

fn chain(c: &Community) -> Chain {
    Chain::new(c.genesis.clone()).unwrap()
}

#[test]
fn blocks_replay_identically_on_an_independent_node() {
    let c = Community::new(4, SelectionRule::Paper);
    let mut a = chain(&c);
    let mut b = chain(&c);
    let mut nonce = [0u64; 4];
    for slot in 1..=30u64 {
        let from = (slot % 4) as usize;
        let tx = c.transfer(from, (from + 1) % 4, 1_000 + slot, nonce[from]);
        nonce[from] += 1;
        let block = c.produce(&a, slot, &[tx]);
        assert_eq!(block.transactions.len(), 1);
        a.insert(block.clone(), Checks::FULL).unwrap();
        let decoded = Block::decode(&block.encode()).unwrap();
        assert_eq!(decoded, block);
        b.insert(decoded, Checks::FULL).unwrap();
        assert_eq!(a.ranked_producers(slot + 1), b.ranked_producers(slot + 1));
    }
    assert_eq!(a.head_hash(), b.head_hash());
    assert_eq!(a.head_state().hash(), b.head_state().hash());
    let fees = 30 * c.genesis.tx_fee.get();
    assert_eq!(a.head_state().community_balance(), fees as i64);
    assert_eq!(a.head_state().total_credits(), 4 * 1_000_000);
}

#[test]
fn replayed_nonce_wrong_fee_and_overspend_are_rejected_with_reasons() {
    let c = Community::new(3, SelectionRule::Paper);
    let mut ch = chain(&c);
    let first = c.transfer(0, 1, 500, 0);
    let b1 = c.produce(&ch, 1, std::slice::from_ref(&first));
    ch.insert(b1, Checks::FULL).unwrap();

    // The producer leaves out what is invalid and says why.
    let overspend = c.transfer(0, 1, 2_000_000, 1);
    let produced = ch
        .produce(
            c.key_of(&ch.ranked_producers(2)[0]),
            2,
            &[first.clone(), overspend.clone()],
        )
        .unwrap();
    assert!(produced.block.transactions.is_empty());
    assert_eq!(
        produced.rejected[0].1,
        TxError::BadNonce {
            sender: c.member(0),
            expected: 1,
            found: 0
        }
    );
    assert_eq!(
        produced.rejected[1].1,
        TxError::BalanceInsufficient {
            account: c.member(0),
            needed: MicroCredits::new(2_000_000 + c.genesis.tx_fee.get()),
            available: MicroCredits::new(1_000_000 - 500 - c.genesis.tx_fee.get()),
        }
    );

    // A block carrying the replay is rejected by validators.
    let mut state = ch.head_state().clone();
    let err = state.apply_tx(ch.rules(), &first).unwrap_err();
    assert!(matches!(err, TxError::BadNonce { .. }));

    let mut wrong_fee = gridlet_ledger::Transaction {
        chain_id: c.genesis.hash(),
        sender: c.member(1),
        nonce: 0,
        fee: MicroCredits::new(1),
        payload: gridlet_ledger::TxPayload::Transfer {
            to: c.member(2),
            amount: MicroCredits::new(5),
        },
    };
    let signed = wrong_fee.clone().sign(&c.keys[1]);
    assert_eq!(
        state.apply_tx(ch.rules(), &signed),
        Err(TxError::WrongFee {
            expected: c.genesis.tx_fee,
            found: MicroCredits::new(1)
        })
    );
    wrong_fee.chain_id = Hash32::sha256(b"another community");
    wrong_fee.fee = c.genesis.tx_fee;
    let other_chain = wrong_fee.sign(&c.keys[1]);
    assert!(matches!(
        ch.rules()
            .verify_signature(ch.head_state().members(), &other_chain),
        Err(TxError::WrongChain { .. })
    ));
}

#[test]
fn a_forged_signature_is_rejected() {
    let c = Community::new(3, SelectionRule::Paper);
    let mut ch = chain(&c);
    let honest = c.transfer(0, 1, 10, 0);
    // Member 2 signs a transaction that claims member 0 as sender.
    let forged = honest.tx().clone().sign(&c.keys[2]);
    assert_eq!(
        ch.rules()
            .verify_signature(ch.head_state().members(), &forged),
        Err(TxError::BadSignature {
            sender: c.member(0)
        })
    );
    // Sneak it into a block with a correct root and state: validation still refuses it.
    let good = c.produce(&ch, 1, std::slice::from_ref(&honest));
    let mut bad = good.clone();
    bad.transactions = vec![forged];
    bad.header.tx_root = bad.computed_tx_root();
    let producer = *c.key_of(&bad.header.producer);
    let bad = Block::seal(bad.header, bad.transactions, &producer);
    assert_eq!(
        ch.insert(bad, Checks::FULL),
        Err(BlockError::InvalidTransaction {
            index: 0,
            error: TxError::BadSignature {
                sender: c.member(0)
            }
        })
    );
    ch.insert(good, Checks::FULL).unwrap();
}

#[test]
fn every_single_byte_change_of_a_block_makes_it_invalid() {
    let c = Community::new(3, SelectionRule::Paper);
    let ch = chain(&c);
    let block = c.produce(&ch, 1, &[c.transfer(0, 1, 10, 0), c.transfer(1, 2, 20, 0)]);
    let bytes = block.encode();
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80] {
            let mut mutated = bytes.clone();
            mutated[i] ^= flip;
            let accepted = match Block::decode(&mutated) {
                Err(_) => false,
                Ok(b) => ch.clone().insert(b, Checks::FULL).is_ok(),
            };
            assert!(!accepted, "byte {i} ^ {flip:#x} was accepted");
        }
    }
    ch.clone().insert(block, Checks::FULL).unwrap();
}

#[test]
fn duplicated_last_transaction_is_rejected_and_the_original_accepted_after() {
    let c = Community::new(3, SelectionRule::Paper);
    let mut ch = chain(&c);
    let txs = vec![
        c.transfer(0, 1, 10, 0),
        c.transfer(1, 2, 20, 0),
        c.transfer(2, 0, 30, 0),
    ];
    let original = c.produce(&ch, 1, &txs);

    // Same signed header, body with the last transaction repeated (the CVE-2012-2459 shape).
    let mut mutated = original.clone();
    mutated
        .transactions
        .push(original.transactions.last().unwrap().clone());
    assert!(ch.insert(mutated.clone(), Checks::FULL).is_err());
    // Even with the count patched, the Merkle root cannot match: the tree never duplicates.
    mutated.header.tx_count = 4;
    let computed = mutated.computed_tx_root();
    assert_ne!(computed, original.header.tx_root);
    assert!(ch.insert(mutated, Checks::FULL).is_err());

    // The rejection did not poison the header: the original is accepted afterwards.
    let inserted = ch.insert(original, Checks::FULL).unwrap();
    assert!(inserted.head_changed);
}

#[test]
fn wrong_producer_stale_slot_and_future_slot_are_rejected() {
    let c = Community::new(5, SelectionRule::Paper);
    let mut ch = chain(&c);
    let ranked = ch.ranked_producers(1);
    let outsider = (0..5)
        .map(|i| c.member(i))
        .find(|m| !ranked.contains(m))
        .unwrap();
    assert!(matches!(
        ch.produce(c.key_of(&outsider), 1, &[]),
        Err(BlockError::ProducerNotElected { .. })
    ));
    let b = c.produce(&ch, 3, &[]);
    assert_eq!(
        ch.clone().insert(
            b.clone(),
            Checks {
                signatures: true,
                current_slot: Some(2)
            }
        ),
        Err(BlockError::SlotInFuture {
            current: 2,
            found: 3
        })
    );
    ch.insert(b, Checks::FULL).unwrap();
    assert!(matches!(
        ch.produce(c.key_of(&ch.ranked_producers(3)[0]), 3, &[]),
        Err(BlockError::SlotNotAfterParent { .. })
    ));
}

#[test]
fn elected_block_beats_fallback_regardless_of_arrival_order() {
    let c = Community::new(4, SelectionRule::Paper);
    let base = chain(&c);
    let elected = c.produce_ranked(&base, 1, 1, &[]);
    let fallback = c.produce_ranked(&base, 1, 2, &[]);
    for order in [[&fallback, &elected], [&elected, &fallback]] {
        let mut ch = base.clone();
        for b in order {
            ch.insert((*b).clone(), Checks::FULL).unwrap();
        }
        assert_eq!(ch.head_hash(), elected.hash());
    }
    // A longer fallback branch outweighs a shorter elected one.
    let mut ch = base.clone();
    ch.insert(fallback.clone(), Checks::FULL).unwrap();
    let next = c.produce(&ch, 2, &[]);
    ch.insert(elected.clone(), Checks::FULL).unwrap();
    assert_eq!(ch.head_hash(), elected.hash());
    let mut on_fallback = base.clone();
    on_fallback.insert(fallback.clone(), Checks::FULL).unwrap();
    assert_eq!(on_fallback.head_hash(), fallback.hash());
    ch.insert(next.clone(), Checks::FULL).unwrap();
    assert_eq!(ch.head_hash(), next.hash());
}

#[test]
fn final_blocks_are_never_reverted() {
    let c = Community::new(4, SelectionRule::Paper);
    let mut ch = chain(&c);
    let base = ch.clone();
    let competitor = c.produce_ranked(&base, 1, 2, &[]);
    let blocks = c.extend(&mut ch, 6);
    // Nothing is final until a certificate names a block.
    assert_eq!(ch.finalized().1, 0);
    let done = ch.finalize(&blocks[3].hash()).unwrap();
    let heights: Vec<u64> = done.blocks.iter().map(|(b, _)| b.header.height).collect();
    assert_eq!(
        heights,
        vec![1, 2, 3, 4],
        "the block and its ancestors become final"
    );
    assert_eq!(ch.finalized().1, 4);
    // A competing block at height 1 is below finality: refused outright.
    assert_eq!(
        ch.insert(competitor, Checks::FULL),
        Err(BlockError::ConflictsWithFinalized {
            height: 1,
            finalized: 4
        })
    );
    assert_eq!(ch.head_hash(), blocks.last().unwrap().hash());
    // Finalizing an ancestor again, or an unknown block, changes nothing.
    assert!(ch.finalize(&blocks[1].hash()).is_err());
    assert!(matches!(
        ch.finalize(&gridlet_ledger::Hash32::sha256(b"nowhere")),
        Err(BlockError::FinalizeUnknown { .. })
    ));
}

#[test]
fn finalizing_a_side_branch_moves_the_head_onto_it() {
    let c = Community::new(4, SelectionRule::Paper);
    let mut ch = chain(&c);
    let base = ch.clone();
    // A fallback's block at height 1 loses fork choice to the elected one...
    let side = c.produce_ranked(&base, 1, 2, &[]);
    let main = c.extend(&mut ch, 3);
    ch.insert(side.clone(), Checks::FULL).unwrap();
    assert_eq!(ch.head_hash(), main[2].hash());
    // ...until a quorum certifies it: then the other branch is gone.
    let done = ch.finalize(&side.hash()).unwrap();
    assert_eq!(ch.head_hash(), side.hash());
    let (from, branch) = done.head_switch.expect("the head switched");
    assert_eq!(from, 0);
    assert_eq!(branch.last().unwrap().hash(), side.hash());
    assert!(!ch.contains(&main[0].hash()));
}

#[test]
fn selection_is_identical_on_independent_instances() {
    let c = Community::new(7, SelectionRule::Proportional);
    let mut a = chain(&c);
    let blocks = c.extend(&mut a, 20);
    let mut b = chain(&c);
    for blk in blocks {
        b.insert(blk, Checks::FULL).unwrap();
    }
    for slot in 21..60 {
        assert_eq!(a.ranked_producers(slot), b.ranked_producers(slot));
    }
}
