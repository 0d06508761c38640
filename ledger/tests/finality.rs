//! Finality data (protocol.md §9): certificates and consensus messages round-trip and refuse
//! what does not prove finality; evidence of a double vote excludes the offender.

mod common;

use common::Community;
use gridlet_ledger::chain::Checks;
use gridlet_ledger::finality::{
    BlockRef, CertificateError, ConsensusMessage, SignedVote, Vote, VoteStep,
};
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::{Chain, Hash32, Signature, TxError, TxPayload};

#[test]
fn certificates_round_trip_and_need_a_quorum_of_ordered_member_signatures() {
    let c = Community::new(4, SelectionRule::Paper);
    let mut ch = Chain::new(c.genesis.clone()).unwrap();
    let blocks = c.extend(&mut ch, 2);
    let rules = ch.rules().clone();
    let members = ch.finalized_state().members().clone();
    let check = |cert: &gridlet_ledger::finality::Certificate| {
        cert.verify(&rules.chain_id, &members, &rules.finality)
    };
    let cert = c.certify(1, &blocks[1], 3);
    let bytes = cert.encode();
    assert_eq!(
        gridlet_ledger::finality::Certificate::decode(&bytes).unwrap(),
        cert
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(gridlet_ledger::finality::Certificate::decode(&trailing).is_err());
    check(&cert).unwrap();
    assert!(matches!(
        check(&c.certify(1, &blocks[1], 2)),
        Err(CertificateError::NoQuorum {
            found: 2,
            needed: 3,
            ..
        })
    ));
    let mut twice = cert.clone();
    twice.signatures[1] = twice.signatures[0];
    assert_eq!(check(&twice), Err(CertificateError::Unordered));
    let mut other_block = cert.clone();
    other_block.block.hash = Hash32([9; 32]);
    assert!(matches!(
        check(&other_block),
        Err(CertificateError::BadSignature { .. })
    ));
    let outsider = gridlet_ledger::crypto::deterministic_key(1, 1);
    let mut foreign = cert.clone();
    let key = gridlet_ledger::MemberKey::from_secret(&outsider);
    foreign.signatures.push((
        key,
        Signature::sign(&cert.precommit(key).digest(&rules.chain_id), &outsider),
    ));
    foreign.signatures.sort_by_key(|s| s.0);
    assert!(matches!(
        check(&foreign),
        Err(CertificateError::NotAMember { .. })
    ));
}

fn signed(c: &Community, who: usize, checkpoint: u64, tag: Option<u8>) -> SignedVote {
    let vote = Vote {
        checkpoint,
        round: 0,
        step: VoteStep::Precommit,
        value: tag.map(|t| BlockRef {
            height: 1,
            hash: Hash32([t; 32]),
        }),
        voter: c.member(who),
    };
    SignedVote {
        vote,
        signature: Signature::sign(&vote.digest(&c.genesis.hash()), &c.keys[who]),
    }
}

#[test]
fn consensus_messages_round_trip() {
    let c = Community::new(4, SelectionRule::Paper);
    let votes = vec![signed(&c, 0, 3, Some(1)), signed(&c, 1, 3, None)];
    for msg in [
        ConsensusMessage::Vote(votes[0]),
        ConsensusMessage::Votes(votes.clone()),
    ] {
        let bytes = msg.encode();
        assert_eq!(ConsensusMessage::decode(&bytes).unwrap(), msg);
        assert!(ConsensusMessage::decode(&bytes[..bytes.len() - 1]).is_err());
    }
    assert!(ConsensusMessage::decode(&[9]).is_err());
}

#[test]
fn a_double_vote_excludes_its_member_once() {
    let c = Community::new(4, SelectionRule::Paper);
    let mut ch = Chain::new(c.genesis.clone()).unwrap();
    c.extend(&mut ch, 1);
    let (a, b) = (signed(&c, 3, 2, Some(1)), signed(&c, 3, 2, Some(2)));
    let evidence = |nonce: u64, first: SignedVote, second: SignedVote| {
        c.sign(
            0,
            nonce,
            TxPayload::Evidence(Box::new(gridlet_ledger::finality::DoubleVote {
                first,
                second,
            })),
        )
    };
    // Not a double vote: the same vote twice, or votes of two members.
    let mut state = ch.head_state().clone();
    let rules = ch.rules().clone();
    assert!(matches!(
        state.apply_tx(&rules, &evidence(0, a, a)),
        Err(TxError::EvidenceInvalid { .. })
    ));
    assert!(matches!(
        state.apply_tx(&rules, &evidence(0, a, signed(&c, 2, 2, Some(2)))),
        Err(TxError::EvidenceInvalid { .. })
    ));
    let mut forged = b;
    forged.signature = a.signature;
    assert!(matches!(
        state.apply_tx(&rules, &evidence(0, a, forged)),
        Err(TxError::EvidenceInvalid { .. })
    ));
    // The real thing goes into a block; the offender leaves the ranking; a repeat is refused.
    let block = c.produce(&ch, 2, &[evidence(0, a, b)]);
    ch.insert(block, Checks::FULL).unwrap();
    let state = ch.head_state();
    assert_eq!(state.offences().len(), 1);
    assert!(state.excluded().contains_key(&c.member(3)));
    for slot in 3..20 {
        assert!(!ch.ranked_producers(slot).contains(&c.member(3)));
    }
    let mut again = state.clone();
    assert!(matches!(
        again.apply_tx(&rules, &evidence(1, b, a)),
        Err(TxError::EvidenceKnown { .. })
    ));
}
