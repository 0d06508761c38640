//! `gridlet bench consensus`: what quorum finality costs one home per block as the community
//! grows. For n = 5, 50, 200 and 1 000 members, one home's finality gadget (the real adapter
//! over Malachite) is fed a checkpoint's proposal and every other member's prevote and
//! precommit until it decides; beside it, interleaved, the bare secp256k1 verification of the
//! same signatures. Messages and bytes are counted from the encodings that go on the bus.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use gridlet_core::finality::context::Voters;
use gridlet_core::finality::{ChainView, Finality, Out, Signer};
use gridlet_ledger::crypto::deterministic_key;
use gridlet_ledger::finality::{
    BlockRef, ConsensusMessage, Proposal, SignedProposal, SignedVote, Vote, VoteStep,
};
use gridlet_ledger::genesis::FinalityParams;
use gridlet_ledger::{Hash32, MemberKey, Signature};
use secp256k1::{PublicKey, SecretKey};
use serde_json::json;

struct View(BlockRef);

impl ChainView for View {
    fn head(&self) -> BlockRef {
        self.0
    }
    fn final_block(&self) -> BlockRef {
        BlockRef {
            height: self.0.height - 1,
            hash: Hash32::ZERO,
        }
    }
    fn holds(&self, block: &BlockRef) -> bool {
        *block == self.0
    }
}

/// Signs without a vote guard (the bench measures the protocol, not the fsync).
struct Plain(SecretKey, Hash32);

impl Signer for Plain {
    fn sign_vote(&mut self, vote: Vote) -> Result<SignedVote, String> {
        Ok(SignedVote {
            vote,
            signature: Signature::sign(&vote.digest(&self.1), &self.0),
        })
    }
    fn sign_proposal(&mut self, proposal: Proposal) -> Result<SignedProposal, String> {
        Ok(SignedProposal {
            proposal,
            signature: Signature::sign(&proposal.digest(&self.1), &self.0),
        })
    }
}

struct Community {
    keys: Vec<SecretKey>,
    members: std::sync::Arc<BTreeMap<MemberKey, PublicKey>>,
    chain_id: Hash32,
}

/// One checkpoint's traffic as the other members send it (signed beforehand, not timed).
struct Checkpoint {
    block: BlockRef,
    messages: Vec<ConsensusMessage>,
}

fn checkpoint(c: &Community, voters: &Voters, k: u64) -> Checkpoint {
    let block = BlockRef {
        height: k,
        hash: Hash32::sha256(&k.to_be_bytes()),
    };
    let me = MemberKey::from_secret(&c.keys[0]);
    let mut messages = Vec::new();
    if let Some(p) = voters.proposer_key(0).filter(|p| *p != me) {
        let key = c
            .keys
            .iter()
            .find(|k| MemberKey::from_secret(k) == p)
            .copied()
            .unwrap_or(c.keys[0]);
        let proposal = Proposal {
            checkpoint: k,
            round: 0,
            pol_round: None,
            value: block,
            proposer: p,
        };
        messages.push(ConsensusMessage::Proposal(SignedProposal {
            proposal,
            signature: Signature::sign(&proposal.digest(&c.chain_id), &key),
        }));
    }
    for step in [VoteStep::Prevote, VoteStep::Precommit] {
        for key in c.keys.iter().skip(1) {
            let vote = Vote {
                checkpoint: k,
                round: 0,
                step,
                value: Some(block),
                voter: MemberKey::from_secret(key),
            };
            messages.push(ConsensusMessage::Vote(SignedVote {
                vote,
                signature: Signature::sign(&vote.digest(&c.chain_id), key),
            }));
        }
    }
    Checkpoint { block, messages }
}

fn raw_verify(c: &Community, cp: &Checkpoint) -> usize {
    let mut ok = 0;
    for m in &cp.messages {
        let good = match m {
            ConsensusMessage::Vote(v) => c
                .members
                .get(&v.vote.voter)
                .is_some_and(|k| v.verifies(&c.chain_id, k)),
            ConsensusMessage::Proposal(p) => c
                .members
                .get(&p.proposal.proposer)
                .is_some_and(|k| p.signature.verify(&p.proposal.digest(&c.chain_id), k)),
            ConsensusMessage::Votes(_) => false,
        };
        ok += usize::from(good);
    }
    ok
}

fn measure(n: usize, min: Duration) -> Result<serde_json::Value> {
    let keys: Vec<SecretKey> = (0..n as u64).map(|i| deterministic_key(7_001, i)).collect();
    let members: BTreeMap<MemberKey, PublicKey> = keys
        .iter()
        .map(|k| (MemberKey::from_secret(k), k.public_key()))
        .collect();
    let c = Community {
        keys,
        members: std::sync::Arc::new(members),
        chain_id: Hash32::sha256(b"bench consensus"),
    };
    let member_keys: Vec<MemberKey> = c.members.keys().copied().collect();
    let voters = Voters::new(&member_keys, &member_keys);
    let finality = FinalityParams::default();
    let quorum = finality.quorum(n);
    // Enough checkpoints to time, signed up front.
    let count = (4_000 / n).clamp(3, 200) as u64;
    let cps: Vec<Checkpoint> = (1..=count).map(|k| checkpoint(&c, &voters, k)).collect();
    let me = MemberKey::from_secret(&c.keys[0]);
    let mut engine = Finality::new(
        c.chain_id,
        c.members.clone(),
        finality.clone(),
        me,
        1,
        voters.clone(),
        1_000,
    );
    let mut signer = Plain(c.keys[0], c.chain_id);
    let (mut engine_time, mut raw_time) = (Duration::ZERO, Duration::ZERO);
    let (mut decided, mut rounds) = (0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < min || rounds == 0 {
        for cp in &cps {
            let view = View(cp.block);
            let t = Instant::now();
            let mut outs = engine.start(
                cp.block.height,
                voters.clone(),
                c.members.clone(),
                0,
                &view,
                &mut signer,
            );
            for m in &cp.messages {
                outs.extend(engine.receive(m.clone(), 0, &view, &mut signer));
            }
            engine_time += t.elapsed();
            decided += outs.iter().filter(|o| matches!(o, Out::Decided(_))).count() as u64;
            let t = Instant::now();
            let ok = raw_verify(&c, cp);
            raw_time += t.elapsed();
            ensure!(ok == cp.messages.len(), "a bench signature did not verify");
        }
        rounds += 1;
    }
    let blocks = rounds * count;
    ensure!(
        decided == blocks,
        "decided {decided} of {blocks} checkpoints"
    );
    let per_block_ms = engine_time.as_secs_f64() * 1e3 / blocks as f64;
    let raw_ms = raw_time.as_secs_f64() * 1e3 / blocks as f64;
    // On the bus every publish (the proposal, n prevotes, n precommits) reaches all n members,
    // as `{"kind":"consensus","hex":…}`: 29 bytes of JSON around the hex.
    let msgs = &cps[0].messages;
    let avg_wire = msgs
        .iter()
        .map(|m| 29 + 2 * m.encode().len())
        .sum::<usize>()
        / msgs.len().max(1);
    let publishes = 2 * n + 1;
    Ok(json!({
        "n": n,
        "quorum": quorum,
        "publishes_per_block": publishes,
        "deliveries_per_block": publishes * n,
        "bus_bytes_delivered_per_block": avg_wire * publishes * n,
        "certificate_bytes": 57 + 97 * quorum,
        "ms_per_block": (per_block_ms * 1000.0).round() / 1000.0,
        "raw_verify_ms_per_block": (raw_ms * 1000.0).round() / 1000.0,
        "ratio_to_raw_verify": (per_block_ms / raw_ms * 100.0).round() / 100.0,
        "cpu_share_1s_slots_pct": (per_block_ms / 10.0 * 100.0).round() / 100.0,
        "cpu_share_60s_slots_pct": (per_block_ms / 600.0 * 1000.0).round() / 1000.0,
    }))
}

/// One JSON line with a row per community size.
pub fn consensus(seconds: f64) -> Result<serde_json::Value> {
    let per = Duration::from_secs_f64((seconds / 4.0).max(0.2));
    let rows: Vec<serde_json::Value> = [5usize, 50, 200, 1_000]
        .iter()
        .map(|n| measure(*n, per))
        .collect::<Result<_>>()?;
    Ok(json!({"bench": "consensus", "rows": rows}))
}
