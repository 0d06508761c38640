//! Quorum finality as data: checkpoint votes and proposals, and the commit certificate that makes
//! a block final (protocol.md §9).
//!
//! The vote protocol itself (Tendermint, run by the Malachite engine) lives in `gridlet-core`;
//! the ledger only defines what is signed and how a certificate is checked, so that anyone
//! holding an exported chain can verify its finality with a SHA-256 and a secp256k1 library.

use crate::codec::{Reader, Writer};
use crate::crypto::{Hash32, MemberKey, Signature};
use crate::error::DecodeError;
use crate::genesis::FinalityParams;

/// Domain tag of a vote's signed digest.
pub const VOTE_TAG: &[u8] = b"gridlet/vote/v1";
/// Domain tag of a checkpoint proposal's signed digest.
pub const PROPOSAL_TAG: &[u8] = b"gridlet/checkpoint/v1";
/// Version byte of an encoded certificate.
const CERT_VERSION: u8 = 1;

/// A block named by height and hash: the value a checkpoint decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct BlockRef {
    /// Height.
    pub height: u64,
    /// Hash.
    pub hash: Hash32,
}

impl BlockRef {
    fn write(&self, w: &mut Writer) {
        w.u64(self.height).fixed(&self.hash.0);
    }
    fn read(r: &mut Reader<'_>) -> Result<BlockRef, DecodeError> {
        Ok(BlockRef {
            height: r.u64()?,
            hash: Hash32(r.array()?),
        })
    }
}

/// The two voting steps of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteStep {
    /// First step: the block looks valid to the voter.
    Prevote,
    /// Second step: the voter saw a quorum of prevotes; a quorum of these makes the block final.
    Precommit,
}

impl VoteStep {
    /// The step's byte (1 prevote, 2 precommit).
    pub fn code(self) -> u8 {
        match self {
            VoteStep::Prevote => 1,
            VoteStep::Precommit => 2,
        }
    }
    fn from_code(c: u8) -> Result<VoteStep, DecodeError> {
        match c {
            1 => Ok(VoteStep::Prevote),
            2 => Ok(VoteStep::Precommit),
            kind => Err(DecodeError::UnknownConsensusKind { kind }),
        }
    }
}

/// A member's vote in round `round` of checkpoint `checkpoint`, for a block or for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Vote {
    /// The checkpoint (consensus height), counted from 1.
    pub checkpoint: u64,
    /// The round within the checkpoint, from 0.
    pub round: u32,
    /// Prevote or precommit.
    pub step: VoteStep,
    /// The block voted for; `None` is a vote for nothing (nil).
    pub value: Option<BlockRef>,
    /// The voting member.
    pub voter: MemberKey,
}

impl Vote {
    /// `H("gridlet/vote/v1" || chain_id || u64 checkpoint || u32 round || u8 step || u8 present
    /// [|| u64 height || hash])`: what the voter signs.
    pub fn digest(&self, chain_id: &Hash32) -> Hash32 {
        let mut w = Writer::with_tag(VOTE_TAG);
        w.fixed(&chain_id.0)
            .u64(self.checkpoint)
            .u32(self.round)
            .u8(self.step.code());
        match &self.value {
            None => {
                w.u8(0);
            }
            Some(b) => {
                w.u8(1);
                b.write(&mut w);
            }
        }
        Hash32::sha256(&w.finish())
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u64(self.checkpoint).u32(self.round).u8(self.step.code());
        match &self.value {
            None => {
                w.u8(0);
            }
            Some(b) => {
                w.u8(1);
                b.write(w);
            }
        }
        w.fixed(&self.voter.0);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Vote, DecodeError> {
        let checkpoint = r.u64()?;
        let round = r.u32()?;
        let step = VoteStep::from_code(r.u8()?)?;
        let value = match r.u8()? {
            0 => None,
            1 => Some(BlockRef::read(r)?),
            flag => return Err(DecodeError::BadFlag { flag }),
        };
        let voter = MemberKey::from_bytes(r.array()?)?;
        Ok(Vote {
            checkpoint,
            round,
            step,
            value,
            voter,
        })
    }
}

/// A vote with its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SignedVote {
    /// The vote.
    pub vote: Vote,
    /// The voter's signature over [`Vote::digest`].
    pub signature: Signature,
}

impl SignedVote {
    /// Whether the signature is the voter's on the vote.
    pub fn verifies(&self, chain_id: &Hash32, voter: &secp256k1::PublicKey) -> bool {
        self.signature.verify(&self.vote.digest(chain_id), voter)
    }

    /// Whether the two votes are a double vote: one voter, one (checkpoint, round, step), two
    /// different values.
    pub fn conflicts_with(&self, other: &SignedVote) -> bool {
        let (a, b) = (&self.vote, &other.vote);
        a.voter == b.voter
            && a.checkpoint == b.checkpoint
            && a.round == b.round
            && a.step == b.step
            && a.value != b.value
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        self.vote.write(w);
        w.fixed(&self.signature.0);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<SignedVote, DecodeError> {
        let vote = Vote::read(r)?;
        let signature = Signature::from_bytes(r.array()?)?;
        Ok(SignedVote { vote, signature })
    }

    /// `u8 1 (vote) || u64 checkpoint || u32 round || u8 step || u8 present [|| ref] || [33] voter
    /// || [64] signature`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(1);
        self.vote.write(&mut w);
        w.fixed(&self.signature.0);
        w.finish()
    }
}

/// Two conflicting signed votes of one member: the evidence of a double vote (§9.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DoubleVote {
    /// One vote.
    pub first: SignedVote,
    /// The other vote, for the same checkpoint, round and step, another value.
    pub second: SignedVote,
}

/// A proposer's suggestion for what a checkpoint decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    /// The checkpoint.
    pub checkpoint: u64,
    /// The round.
    pub round: u32,
    /// The round in which a quorum prevoted this block before (Tendermint's proof-of-lock round).
    pub pol_round: Option<u32>,
    /// The proposed block.
    pub value: BlockRef,
    /// The proposing member.
    pub proposer: MemberKey,
}

impl Proposal {
    /// `H("gridlet/checkpoint/v1" || chain_id || u64 checkpoint || u32 round || u8 has_pol [|| u32
    /// pol_round] || u64 height || hash)`: what the proposer signs.
    pub fn digest(&self, chain_id: &Hash32) -> Hash32 {
        let mut w = Writer::with_tag(PROPOSAL_TAG);
        w.fixed(&chain_id.0).u64(self.checkpoint).u32(self.round);
        match self.pol_round {
            None => {
                w.u8(0);
            }
            Some(p) => {
                w.u8(1).u32(p);
            }
        }
        self.value.write(&mut w);
        Hash32::sha256(&w.finish())
    }
}

/// A proposal with its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedProposal {
    /// The proposal.
    pub proposal: Proposal,
    /// The proposer's signature over [`Proposal::digest`].
    pub signature: Signature,
}

impl SignedProposal {
    /// `u8 2 (proposal) || u64 checkpoint || u32 round || u8 has_pol [|| u32 pol_round] || ref ||
    /// [33] proposer || [64] signature`.
    pub fn encode(&self) -> Vec<u8> {
        let p = &self.proposal;
        let mut w = Writer::new();
        w.u8(2).u64(p.checkpoint).u32(p.round);
        match p.pol_round {
            None => {
                w.u8(0);
            }
            Some(r) => {
                w.u8(1).u32(r);
            }
        }
        p.value.write(&mut w);
        w.fixed(&p.proposer.0).fixed(&self.signature.0);
        w.finish()
    }
}

/// A consensus message on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsensusMessage {
    /// A prevote or precommit.
    Vote(SignedVote),
    /// A checkpoint proposal.
    Proposal(SignedProposal),
    /// Votes forwarded together (a quorum of prevotes or a round's votes, for peers behind).
    Votes(Vec<SignedVote>),
}

impl ConsensusMessage {
    /// Decodes either message (by its leading kind byte).
    pub fn decode(bytes: &[u8]) -> Result<ConsensusMessage, DecodeError> {
        let mut r = Reader::new(bytes);
        let msg = match r.u8()? {
            1 => {
                let vote = Vote::read(&mut r)?;
                let signature = Signature::from_bytes(r.array()?)?;
                ConsensusMessage::Vote(SignedVote { vote, signature })
            }
            3 => {
                // Each vote is at least kind-less 8 + 4 + 1 + 1 + 33 + 64 bytes.
                let count = r.count(111)?;
                let mut votes = Vec::with_capacity(count);
                for _ in 0..count {
                    let vote = Vote::read(&mut r)?;
                    let signature = Signature::from_bytes(r.array()?)?;
                    votes.push(SignedVote { vote, signature });
                }
                ConsensusMessage::Votes(votes)
            }
            2 => {
                let checkpoint = r.u64()?;
                let round = r.u32()?;
                let pol_round = match r.u8()? {
                    0 => None,
                    1 => Some(r.u32()?),
                    flag => return Err(DecodeError::BadFlag { flag }),
                };
                let value = BlockRef::read(&mut r)?;
                let proposer = MemberKey::from_bytes(r.array()?)?;
                let signature = Signature::from_bytes(r.array()?)?;
                ConsensusMessage::Proposal(SignedProposal {
                    proposal: Proposal {
                        checkpoint,
                        round,
                        pol_round,
                        value,
                        proposer,
                    },
                    signature,
                })
            }
            kind => return Err(DecodeError::UnknownConsensusKind { kind }),
        };
        r.finish()?;
        Ok(msg)
    }

    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ConsensusMessage::Vote(v) => v.encode(),
            ConsensusMessage::Proposal(p) => p.encode(),
            ConsensusMessage::Votes(votes) => {
                let mut w = Writer::new();
                w.u8(3).u32(u32::try_from(votes.len()).unwrap_or(u32::MAX));
                for v in votes {
                    v.vote.write(&mut w);
                    w.fixed(&v.signature.0);
                }
                w.finish()
            }
        }
    }
}

/// Proof that a block is final: precommits for it from a quorum of members, all of one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The checkpoint it decides.
    pub checkpoint: u64,
    /// The round the quorum precommitted in.
    pub round: u32,
    /// The final block.
    pub block: BlockRef,
    /// The precommitting members' signatures, in ascending key order, one per member.
    pub signatures: Vec<(MemberKey, Signature)>,
}

/// Why a certificate does not prove finality.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// Too few distinct members signed.
    #[error(
        "certificate for checkpoint {checkpoint} has {found} valid signatures, {needed} needed"
    )]
    NoQuorum {
        /// The checkpoint.
        checkpoint: u64,
        /// Valid signatures from distinct members.
        found: usize,
        /// The quorum.
        needed: usize,
    },
    /// A signer is not a member.
    #[error("certificate signer {signer} is not a member")]
    NotAMember {
        /// The key.
        signer: MemberKey,
    },
    /// A signature does not verify on the precommit.
    #[error("certificate signature of {signer} does not verify")]
    BadSignature {
        /// The key.
        signer: MemberKey,
    },
    /// Signers are not in strictly ascending key order (a repeated signer among them).
    #[error("certificate signers are not in ascending order, or one signs twice")]
    Unordered,
}

impl Certificate {
    /// The certificate `signers` make by precommitting `block` in `round` of `checkpoint`
    /// (simulations and tests; a node's certificates come from the vote protocol).
    pub fn signed_by<'a>(
        chain_id: &Hash32,
        checkpoint: u64,
        round: u32,
        block: BlockRef,
        signers: impl IntoIterator<Item = &'a secp256k1::SecretKey>,
    ) -> Certificate {
        let mut cert = Certificate {
            checkpoint,
            round,
            block,
            signatures: Vec::new(),
        };
        let mut signatures: Vec<(MemberKey, Signature)> = signers
            .into_iter()
            .map(|k| {
                let member = MemberKey::from_secret(k);
                let digest = cert.precommit(member).digest(chain_id);
                (member, Signature::sign(&digest, k))
            })
            .collect();
        signatures.sort_by_key(|s| s.0);
        cert.signatures = signatures;
        cert
    }

    /// The precommit each signer signed.
    pub fn precommit(&self, voter: MemberKey) -> Vote {
        Vote {
            checkpoint: self.checkpoint,
            round: self.round,
            step: VoteStep::Precommit,
            value: Some(self.block),
            voter,
        }
    }

    /// Checks the signatures against the members (their parsed keys) and the quorum.
    pub fn verify(
        &self,
        chain_id: &Hash32,
        members: &std::collections::BTreeMap<MemberKey, secp256k1::PublicKey>,
        finality: &FinalityParams,
    ) -> Result<(), CertificateError> {
        let mut previous: Option<MemberKey> = None;
        for (signer, signature) in &self.signatures {
            if previous.is_some_and(|p| p >= *signer) {
                return Err(CertificateError::Unordered);
            }
            previous = Some(*signer);
            let key = members
                .get(signer)
                .ok_or(CertificateError::NotAMember { signer: *signer })?;
            if !signature.verify(&self.precommit(*signer).digest(chain_id), key) {
                return Err(CertificateError::BadSignature { signer: *signer });
            }
        }
        let needed = finality.quorum(members.len());
        if self.signatures.len() < needed {
            return Err(CertificateError::NoQuorum {
                checkpoint: self.checkpoint,
                found: self.signatures.len(),
                needed,
            });
        }
        Ok(())
    }

    /// `u8 1 || u64 checkpoint || u32 round || u64 height || [32] hash || u32 count || count ×
    /// ([33] key || [64] signature)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(CERT_VERSION).u64(self.checkpoint).u32(self.round);
        self.block.write(&mut w);
        w.u32(u32::try_from(self.signatures.len()).unwrap_or(u32::MAX));
        for (k, s) in &self.signatures {
            w.fixed(&k.0).fixed(&s.0);
        }
        w.finish()
    }

    /// Decodes a certificate (refusing counts that cannot fit the input).
    pub fn decode(bytes: &[u8]) -> Result<Certificate, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != CERT_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                what: "certificate",
                expected: CERT_VERSION,
                found: version,
            });
        }
        let checkpoint = r.u64()?;
        let round = r.u32()?;
        let block = BlockRef::read(&mut r)?;
        let count = r.count(33 + 64)?;
        let mut signatures = Vec::with_capacity(count);
        for _ in 0..count {
            let k = MemberKey::from_bytes(r.array()?)?;
            let s = Signature::from_bytes(r.array()?)?;
            signatures.push((k, s));
        }
        r.finish()?;
        Ok(Certificate {
            checkpoint,
            round,
            block,
            signatures,
        })
    }
}
