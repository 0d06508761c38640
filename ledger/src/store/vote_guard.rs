//! The vote guard: every checkpoint vote and proposal this node signed in its current
//! checkpoint, kept across power loss, so that it never signs two different ones for one
//! (checkpoint, round, step) — the double vote that is evidence against it.
//!
//! Asked again for a step it already signed, the guard hands back the message it signed then,
//! whatever the new request says; the record is written with a real fsync (through
//! [`super::signer::write_durably`]) *before* the signature is returned.

use std::fs;
use std::path::{Path, PathBuf};

use secp256k1::SecretKey;

use crate::codec::{Reader, Writer};
use crate::crypto::{Hash32, Signature};
use crate::error::{GuardLoss, StoreError};
use crate::finality::{ConsensusMessage, Proposal, SignedProposal, SignedVote, Vote, VoteStep};

const FILE_NAME: &str = "votes.state";
const MAGIC: &[u8; 8] = b"GRLVOTE1";

/// What one record is for: the proposal or one of the two vote steps of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Propose,
    Vote(VoteStep),
}

#[derive(Debug, Clone)]
struct Record {
    round: u32,
    step: Step,
    signed: ConsensusMessage,
}

/// The signed votes and proposals of the current checkpoint, in `DIR/votes.state`.
#[derive(Debug)]
pub struct VoteGuard {
    path: PathBuf,
    checkpoint: u64,
    records: Vec<Record>,
    /// Set when the record is gone or damaged: nothing is signed until [`Self::resume_at`].
    loss: Option<GuardLoss>,
}

fn corrupt(path: &Path) -> StoreError {
    StoreError::Corrupt {
        height: 0,
        reason: format!("{} is not a valid vote record", path.display()),
    }
}

impl VoteGuard {
    /// Opens (or starts) the guard in `dir` for a node whose opened chain is `chain_height`
    /// high. As for the block signer guard, a missing file is a fresh start only without a
    /// chain (and the start writes it); a missing file beside a chain, or a damaged one, signs
    /// nothing until [`Self::resume_at`].
    pub fn open(dir: &Path, chain_height: u64) -> Result<VoteGuard, StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::Io {
            path: dir.display().to_string(),
            source: e,
        })?;
        let path = dir.join(FILE_NAME);
        match fs::read(&path) {
            Ok(bytes) => Ok(match decode(&bytes) {
                Some((checkpoint, records)) => VoteGuard {
                    path,
                    checkpoint,
                    records,
                    loss: None,
                },
                None => VoteGuard {
                    path,
                    checkpoint: 0,
                    records: Vec::new(),
                    loss: Some(GuardLoss::Damaged),
                },
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let loss = (chain_height > 0).then_some(GuardLoss::Missing);
                // A fresh start writes the (empty) record at once: from then on, its absence
                // means it was lost.
                if loss.is_none() {
                    write_records(&path, 0, &[])?;
                }
                Ok(VoteGuard {
                    path,
                    checkpoint: 0,
                    records: Vec::new(),
                    loss,
                })
            }
            Err(e) => Err(StoreError::Io {
                path: path.display().to_string(),
                source: e,
            }),
        }
    }

    /// The checkpoint the records are for (0: none yet).
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// What happened to the record, while signing waits for [`Self::resume_at`].
    pub fn loss(&self) -> Option<&GuardLoss> {
        self.loss.as_ref()
    }

    /// Ends a loss: signs from `checkpoint` on, never below it. Safe only with a checkpoint
    /// this key cannot have signed in (the node's rule: the one after a checkpoint certified
    /// without it, on a block made after it restarted — docs/protocol.md §10).
    pub fn resume_at(&mut self, checkpoint: u64) -> Result<(), StoreError> {
        let checkpoint = checkpoint.max(self.checkpoint);
        write_records(&self.path, checkpoint, &[])?;
        self.checkpoint = checkpoint;
        self.records = Vec::new();
        self.loss = None;
        Ok(())
    }

    /// Signs `vote`, or returns the vote signed before for its (checkpoint, round, step).
    pub fn sign_vote(
        &mut self,
        chain_id: &Hash32,
        vote: Vote,
        key: &SecretKey,
    ) -> Result<SignedVote, StoreError> {
        let step = Step::Vote(vote.step);
        let signed = self.sign(vote.checkpoint, vote.round, step, || {
            ConsensusMessage::Vote(SignedVote {
                vote,
                signature: Signature::sign(&vote.digest(chain_id), key),
            })
        })?;
        match signed {
            ConsensusMessage::Vote(v) => Ok(v),
            _ => Err(corrupt(&self.path)),
        }
    }

    /// Signs `proposal`, or returns the proposal signed before for its (checkpoint, round).
    pub fn sign_proposal(
        &mut self,
        chain_id: &Hash32,
        proposal: Proposal,
        key: &SecretKey,
    ) -> Result<SignedProposal, StoreError> {
        let signed = self.sign(proposal.checkpoint, proposal.round, Step::Propose, || {
            ConsensusMessage::Proposal(SignedProposal {
                proposal,
                signature: Signature::sign(&proposal.digest(chain_id), key),
            })
        })?;
        match signed {
            ConsensusMessage::Proposal(p) => Ok(p),
            _ => Err(corrupt(&self.path)),
        }
    }

    fn sign(
        &mut self,
        checkpoint: u64,
        round: u32,
        step: Step,
        make: impl FnOnce() -> ConsensusMessage,
    ) -> Result<ConsensusMessage, StoreError> {
        if let Some(loss) = &self.loss {
            return Err(StoreError::SignerStateLost {
                path: self.path.display().to_string(),
                loss: loss.clone(),
            });
        }
        if checkpoint < self.checkpoint {
            return Err(StoreError::CheckpointPassed {
                checkpoint,
                current: self.checkpoint,
            });
        }
        if checkpoint == self.checkpoint {
            if let Some(r) = self
                .records
                .iter()
                .find(|r| r.round == round && r.step == step)
            {
                return Ok(r.signed.clone());
            }
        }
        let mut records = if checkpoint == self.checkpoint {
            self.records.clone()
        } else {
            Vec::new()
        };
        let signed = make();
        records.push(Record {
            round,
            step,
            signed: signed.clone(),
        });
        write_records(&self.path, checkpoint, &records)?;
        self.checkpoint = checkpoint;
        self.records = records;
        Ok(signed)
    }
}

fn write_records(path: &Path, checkpoint: u64, records: &[Record]) -> Result<(), StoreError> {
    let mut w = Writer::with_tag(MAGIC);
    w.u64(checkpoint)
        .u32(u32::try_from(records.len()).unwrap_or(u32::MAX));
    for r in records {
        w.var(&r.signed.encode());
    }
    let body = w.finish();
    let check = Hash32::sha256(&body);
    let mut bytes = body;
    bytes.extend_from_slice(&check.0);
    super::signer::write_durably(path, &bytes)
}

fn decode(bytes: &[u8]) -> Option<(u64, Vec<Record>)> {
    let split = bytes.len().checked_sub(32)?;
    let (body, check) = bytes.split_at(split);
    if Hash32::sha256(body).0 != check || body.get(..8)? != MAGIC {
        return None;
    }
    let mut r = Reader::new(body.get(8..)?);
    let checkpoint = r.u64().ok()?;
    let count = r.count(4).ok()?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let signed = ConsensusMessage::decode(r.var().ok()?).ok()?;
        let (round, step) = match &signed {
            ConsensusMessage::Vote(v) => (v.vote.round, Step::Vote(v.vote.step)),
            ConsensusMessage::Proposal(p) => (p.proposal.round, Step::Propose),
            ConsensusMessage::Votes(_) => return None,
        };
        records.push(Record {
            round,
            step,
            signed,
        });
    }
    r.finish().ok()?;
    Some((checkpoint, records))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::crypto::{deterministic_key, MemberKey};
    use crate::finality::BlockRef;

    fn vote(checkpoint: u64, round: u32, hash: &[u8]) -> (Vote, SecretKey) {
        let key = deterministic_key(1, 0);
        let v = Vote {
            checkpoint,
            round,
            step: VoteStep::Precommit,
            value: Some(BlockRef {
                height: 4,
                hash: Hash32::sha256(hash),
            }),
            voter: MemberKey::from_secret(&key),
        };
        (v, key)
    }

    #[test]
    fn a_second_vote_for_a_step_returns_the_first_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let chain = Hash32::sha256(b"chain");
        let (a, key) = vote(3, 0, b"a");
        let (b, _) = vote(3, 0, b"b");
        let first = VoteGuard::open(dir.path(), 0)
            .unwrap()
            .sign_vote(&chain, a, &key)
            .unwrap();
        let mut g = VoteGuard::open(dir.path(), 0).unwrap();
        let again = g.sign_vote(&chain, b, &key).unwrap();
        assert_eq!(again, first, "the guard re-issues the vote signed before");
        // Another round is another step; an older checkpoint is refused.
        let (c, _) = vote(3, 1, b"c");
        assert_eq!(g.sign_vote(&chain, c, &key).unwrap().vote, c);
        let (old, _) = vote(2, 5, b"d");
        assert!(matches!(
            g.sign_vote(&chain, old, &key),
            Err(StoreError::CheckpointPassed { .. })
        ));
    }

    #[test]
    fn ten_concurrent_requests_for_one_step_yield_one_signature() {
        let dir = tempfile::tempdir().unwrap();
        let chain = Hash32::sha256(b"chain");
        let guard = Arc::new(Mutex::new(VoteGuard::open(dir.path(), 0).unwrap()));
        let handles: Vec<_> = (0..10u8)
            .map(|i| {
                let guard = guard.clone();
                std::thread::spawn(move || {
                    let (v, key) = vote(7, 2, &[i]);
                    guard.lock().unwrap().sign_vote(&chain, v, &key).unwrap()
                })
            })
            .collect();
        let signed: Vec<SignedVote> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let distinct: std::collections::HashSet<[u8; 64]> =
            signed.iter().map(|s| s.signature.0).collect();
        assert_eq!(distinct.len(), 1, "exactly one signature for the step");
    }

    #[test]
    fn a_damaged_record_signs_nothing_until_resumed_at_a_later_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let chain = Hash32::sha256(b"chain");
        let (a, key) = vote(3, 0, b"a");
        VoteGuard::open(dir.path(), 0)
            .unwrap()
            .sign_vote(&chain, a, &key)
            .unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut bytes = fs::read(&path).unwrap();
        bytes[12] ^= 1;
        fs::write(&path, bytes).unwrap();
        let mut g = VoteGuard::open(dir.path(), 0).unwrap();
        assert_eq!(g.loss(), Some(&GuardLoss::Damaged));
        let (b, _) = vote(3, 0, b"b");
        let refused = g.sign_vote(&chain, b, &key).unwrap_err();
        assert!(
            refused.to_string().contains("votes.state is damaged"),
            "{refused}"
        );
        // Resumed at a later checkpoint: the old one stays refused, the new one signs.
        g.resume_at(5).unwrap();
        assert!(matches!(
            g.sign_vote(&chain, b, &key),
            Err(StoreError::CheckpointPassed { .. })
        ));
        let (c, _) = vote(5, 0, b"c");
        g.sign_vote(&chain, c, &key).unwrap();
        assert_eq!(VoteGuard::open(dir.path(), 9).unwrap().checkpoint(), 5);
    }

    #[test]
    fn a_missing_record_beside_a_chain_signs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, key) = vote(1, 0, b"a");
        let mut g = VoteGuard::open(dir.path(), 12).unwrap();
        assert_eq!(g.loss(), Some(&GuardLoss::Missing));
        assert!(matches!(
            g.sign_vote(&Hash32::sha256(b"chain"), a, &key),
            Err(StoreError::SignerStateLost { .. })
        ));
    }
}
