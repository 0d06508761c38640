//! Our types for the Malachite engine: its `Context` over the ledger's votes, proposals and
//! member keys. Everything here converts; the rules live in `gridlet_ledger::finality`.

use std::fmt;

use arc_malachitebft_core_types as mc;
use gridlet_ledger::finality::{self as lf, BlockRef};
use gridlet_ledger::{DecodeError, MemberKey};

/// The engine's context: stateless, every per-height fact rides in the validator set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ctx;

/// A member as the engine names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Addr(pub MemberKey);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.short())
    }
}
impl mc::Address for Addr {}

/// A checkpoint number: the engine's height (one decision each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Checkpoint(pub u64);

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl mc::Height for Checkpoint {
    const ZERO: Self = Checkpoint(0);
    const INITIAL: Self = Checkpoint(1);
    fn increment_by(&self, n: u64) -> Self {
        Checkpoint(self.0.saturating_add(n))
    }
    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Checkpoint)
    }
    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// The value a checkpoint decides: a block (its id is itself, 40 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target(pub BlockRef);

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.0.hash, self.0.height)
    }
}

impl mc::Value for Target {
    type Id = Target;
    fn id(&self) -> Target {
        *self
    }
}

/// secp256k1 ECDSA, as everywhere in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secp;

/// A signature the engine can order (it keeps sets of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sig(pub [u8; 64]);

impl Sig {
    /// The ledger's signature.
    pub fn to_ledger(self) -> Result<gridlet_ledger::Signature, DecodeError> {
        gridlet_ledger::Signature::from_bytes(self.0)
    }
}

impl mc::SigningScheme for Secp {
    type DecodingError = DecodeError;
    type Signature = Sig;
    type PublicKey = MemberKey;
    type PrivateKey = secp256k1::SecretKey;
    fn decode_signature(bytes: &[u8]) -> Result<Sig, DecodeError> {
        let b: [u8; 64] = bytes
            .try_into()
            .map_err(|_| DecodeError::InvalidSignature)?;
        gridlet_ledger::Signature::from_bytes(b).map(|s| Sig(s.0))
    }
    fn encode_signature(signature: &Sig) -> Vec<u8> {
        signature.0.to_vec()
    }
    fn decode_public_key(bytes: &[u8]) -> Result<MemberKey, DecodeError> {
        let b: [u8; 33] = bytes
            .try_into()
            .map_err(|_| DecodeError::InvalidKeyPrefix { prefix: 0 })?;
        MemberKey::from_bytes(b)
    }
    fn encode_public_key(public_key: &MemberKey) -> Vec<u8> {
        public_key.0.to_vec()
    }
}

/// A vote in the engine's field types (it hands out references to them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineVote {
    checkpoint: Checkpoint,
    round: mc::Round,
    step: lf::VoteStep,
    value: mc::NilOrVal<Target>,
    voter: Addr,
}

impl EngineVote {
    /// From the ledger's vote.
    pub fn from_ledger(v: &lf::Vote) -> EngineVote {
        EngineVote {
            checkpoint: Checkpoint(v.checkpoint),
            round: mc::Round::new(v.round),
            step: v.step,
            value: v
                .value
                .map_or(mc::NilOrVal::Nil, |b| mc::NilOrVal::Val(Target(b))),
            voter: Addr(v.voter),
        }
    }

    /// The ledger's vote (`None` for a vote in no round, which the engine never signs).
    pub fn to_ledger(&self) -> Option<lf::Vote> {
        Some(lf::Vote {
            checkpoint: self.checkpoint.0,
            round: self.round.as_u32()?,
            step: self.step,
            value: match &self.value {
                mc::NilOrVal::Nil => None,
                mc::NilOrVal::Val(t) => Some(t.0),
            },
            voter: self.voter.0,
        })
    }
}

impl mc::Vote<Ctx> for EngineVote {
    fn height(&self) -> Checkpoint {
        self.checkpoint
    }
    fn round(&self) -> mc::Round {
        self.round
    }
    fn value(&self) -> &mc::NilOrVal<Target> {
        &self.value
    }
    fn take_value(self) -> mc::NilOrVal<Target> {
        self.value
    }
    fn vote_type(&self) -> mc::VoteType {
        match self.step {
            lf::VoteStep::Prevote => mc::VoteType::Prevote,
            lf::VoteStep::Precommit => mc::VoteType::Precommit,
        }
    }
    fn validator_address(&self) -> &Addr {
        &self.voter
    }
    fn extension(&self) -> Option<&mc::SignedExtension<Ctx>> {
        None
    }
    fn take_extension(&mut self) -> Option<mc::SignedExtension<Ctx>> {
        None
    }
    fn extend(self, _: mc::SignedExtension<Ctx>) -> Self {
        self
    }
}

/// A checkpoint proposal in the engine's field types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineProposal {
    checkpoint: Checkpoint,
    round: mc::Round,
    value: Target,
    pol_round: mc::Round,
    proposer: Addr,
}

impl EngineProposal {
    /// From the ledger's proposal.
    pub fn from_ledger(p: &lf::Proposal) -> EngineProposal {
        EngineProposal {
            checkpoint: Checkpoint(p.checkpoint),
            round: mc::Round::new(p.round),
            value: Target(p.value),
            pol_round: p.pol_round.map_or(mc::Round::Nil, mc::Round::new),
            proposer: Addr(p.proposer),
        }
    }

    /// The ledger's proposal.
    pub fn to_ledger(&self) -> Option<lf::Proposal> {
        Some(lf::Proposal {
            checkpoint: self.checkpoint.0,
            round: self.round.as_u32()?,
            pol_round: self.pol_round.as_u32(),
            value: self.value.0,
            proposer: self.proposer.0,
        })
    }
}

impl mc::Proposal<Ctx> for EngineProposal {
    fn height(&self) -> Checkpoint {
        self.checkpoint
    }
    fn round(&self) -> mc::Round {
        self.round
    }
    fn value(&self) -> &Target {
        &self.value
    }
    fn take_value(self) -> Target {
        self.value
    }
    fn pol_round(&self) -> mc::Round {
        self.pol_round
    }
    fn validator_address(&self) -> &Addr {
        &self.proposer
    }
}

/// Proposals travel whole (`ValuePayload::ProposalOnly`): there are no parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoParts {}

impl mc::ProposalPart<Ctx> for NoParts {
    fn is_first(&self) -> bool {
        match *self {}
    }
    fn is_last(&self) -> bool {
        match *self {}
    }
}

/// A member with one vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    address: Addr,
    key: MemberKey,
}

impl mc::Validator<Ctx> for Voter {
    fn address(&self) -> &Addr {
        &self.address
    }
    fn public_key(&self) -> &MemberKey {
        &self.key
    }
    fn voting_power(&self) -> mc::VotingPower {
        1
    }
}

/// The members of a checkpoint, in key order, and the order they propose in: the paper's PoS
/// ranking on the last final block (round `r` goes to `proposers[r mod n]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voters {
    voters: Vec<Voter>,
    proposers: Vec<usize>,
}

impl Voters {
    /// The voters `members` (any order), proposing in the order of `ranking` (members missing
    /// from it propose after the ranked ones, in key order).
    pub fn new(members: &[MemberKey], ranking: &[MemberKey]) -> Voters {
        let mut keys = members.to_vec();
        keys.sort();
        keys.dedup();
        let voters: Vec<Voter> = keys
            .iter()
            .map(|k| Voter {
                address: Addr(*k),
                key: *k,
            })
            .collect();
        let mut proposers: Vec<usize> = ranking
            .iter()
            .filter_map(|k| keys.binary_search(k).ok())
            .collect();
        for i in 0..keys.len() {
            if !proposers.contains(&i) {
                proposers.push(i);
            }
        }
        Voters { voters, proposers }
    }

    /// The proposer of `round`.
    pub fn proposer(&self, round: mc::Round) -> Option<&Voter> {
        let r = usize::try_from(round.as_u32()?).ok()?;
        let n = self.proposers.len();
        let index = self.proposers.get(r.checked_rem(n)?)?;
        self.voters.get(*index)
    }

    /// The member proposing in `round`.
    pub fn proposer_key(&self, round: u32) -> Option<MemberKey> {
        self.proposer(mc::Round::new(round)).map(|v| v.key)
    }

    /// Whether `key` votes.
    pub fn contains(&self, key: &MemberKey) -> bool {
        self.voters.iter().any(|v| v.key == *key)
    }
}

impl mc::ValidatorSet<Ctx> for Voters {
    fn count(&self) -> usize {
        self.voters.len()
    }
    fn total_voting_power(&self) -> mc::VotingPower {
        u64::try_from(self.voters.len()).unwrap_or(u64::MAX)
    }
    fn get_by_address(&self, address: &Addr) -> Option<&Voter> {
        self.voters.iter().find(|v| v.address == *address)
    }
    fn get_by_index(&self, index: usize) -> Option<&Voter> {
        self.voters.get(index)
    }
}

impl mc::Context for Ctx {
    type Address = Addr;
    type Height = Checkpoint;
    type ProposalPart = NoParts;
    type Proposal = EngineProposal;
    type Validator = Voter;
    type ValidatorSet = Voters;
    type Timeouts = mc::LinearTimeouts;
    type Value = Target;
    type Vote = EngineVote;
    type Extension = ();
    type SigningScheme = Secp;

    fn select_proposer<'a>(
        &self,
        validator_set: &'a Voters,
        _height: Checkpoint,
        round: mc::Round,
    ) -> &'a Voter {
        // The engine asks only for defined rounds of a non-empty set (genesis has members).
        #[allow(clippy::expect_used)]
        validator_set
            .proposer(round)
            .or_else(|| validator_set.voters.first())
            .expect("a community has members")
    }

    fn new_proposal(
        &self,
        height: Checkpoint,
        round: mc::Round,
        value: Target,
        pol_round: mc::Round,
        address: Addr,
    ) -> EngineProposal {
        EngineProposal {
            checkpoint: height,
            round,
            value,
            pol_round,
            proposer: address,
        }
    }

    fn new_prevote(
        &self,
        height: Checkpoint,
        round: mc::Round,
        value_id: mc::NilOrVal<Target>,
        address: Addr,
    ) -> EngineVote {
        EngineVote {
            checkpoint: height,
            round,
            step: lf::VoteStep::Prevote,
            value: value_id,
            voter: address,
        }
    }

    fn new_precommit(
        &self,
        height: Checkpoint,
        round: mc::Round,
        value_id: mc::NilOrVal<Target>,
        address: Addr,
    ) -> EngineVote {
        EngineVote {
            checkpoint: height,
            round,
            step: lf::VoteStep::Precommit,
            value: value_id,
            voter: address,
        }
    }
}
