//! Quorum finality: the adapter between the node and the Malachite Tendermint engine, run as a
//! checkpoint gadget over block production (docs/consensus.md).
//!
//! Blocks are produced as before (the paper's PoS selection, fork choice among non-final
//! blocks). Checkpoint `k` decides one block above the last final one: its proposer (the PoS
//! ranking on the last final block, one rank per round) proposes its head, every member
//! prevotes it once it holds the block, and a quorum of precommits is the certificate that
//! makes it — and its ancestors — final. The engine is sans-IO; this adapter answers its
//! effects: timers become deadlines checked on ticks, messages go out as [`Out::Publish`],
//! signing goes through the fsync'd [`Signer`] before anything leaves.

pub mod context;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use arc_malachitebft_core_consensus::{
    self as engine, process, Effect, Input, LivenessMsg, LocallyProposedValue, Params,
    ProposedValue, Resumable, Resume, SignedConsensusMsg, State,
};
use arc_malachitebft_core_types::{
    self as mc, CertificateError, CommitCertificate, LinearTimeouts, NilOrVal, Round,
    SignedMessage, ThresholdParam, ThresholdParams, Timeout, Validity, ValueOrigin, ValuePayload,
    VoteType,
};
use gridlet_ledger::finality::{
    BlockRef, Certificate, ConsensusMessage, SignedProposal, SignedVote, Vote, VoteStep,
};
use gridlet_ledger::genesis::FinalityParams;
use gridlet_ledger::{Hash32, MemberKey};

use context::{Addr, Checkpoint, Ctx, EngineProposal, EngineVote, Sig, Target, Voters};

/// Signs consensus messages, persisting each before returning it (the vote guard).
pub trait Signer {
    /// Signs `vote`, or returns the vote signed before for its (checkpoint, round, step).
    fn sign_vote(&mut self, vote: Vote) -> Result<SignedVote, String>;
    /// Signs `proposal`, or returns the proposal signed before for its (checkpoint, round).
    fn sign_proposal(
        &mut self,
        proposal: gridlet_ledger::finality::Proposal,
    ) -> Result<SignedProposal, String>;
}

/// What the node's chain says, for proposing and for judging proposals.
pub trait ChainView {
    /// The head block.
    fn head(&self) -> BlockRef;
    /// The final block.
    fn final_block(&self) -> BlockRef;
    /// Whether the block is held, above the final block (so on a branch descending from it).
    fn holds(&self, block: &BlockRef) -> bool;
}

/// What the adapter wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Publish on the bus.
    Publish(ConsensusMessage),
    /// A quorum decided the checkpoint: its block is final.
    Decided(Certificate),
    /// A message or step was refused (for metrics and logs).
    Refused {
        /// A fixed label.
        class: &'static str,
        /// Why.
        reason: String,
    },
}

/// Proposals kept waiting for their block, at most.
const MAX_UNJUDGED: usize = 64;

/// Timeouts of the rounds, in slots: the proposer may have to wait for the next block.
fn timeouts(slot_ms: u64) -> LinearTimeouts {
    let slot = Duration::from_millis(slot_ms.max(1));
    let half = Duration::from_millis(slot_ms.max(1).div_ceil(2));
    LinearTimeouts {
        propose: slot.saturating_mul(2),
        propose_delta: half,
        prevote: half,
        prevote_delta: half,
        precommit: half,
        precommit_delta: half,
        rebroadcast: slot.saturating_mul(3),
        max_timeout: slot.saturating_mul(20),
    }
}

struct Shell {
    chain_id: Hash32,
    members: std::sync::Arc<BTreeMap<MemberKey, secp256k1::PublicKey>>,
    finality: FinalityParams,
    timeouts: LinearTimeouts,
    timers: Vec<(Timeout, u64)>,
    /// This node proposes in (checkpoint, round) but had no block above the final one yet.
    awaiting_value: Option<(Checkpoint, Round)>,
    /// Proposals for blocks this node does not hold yet (judged once the block arrives).
    unjudged: Vec<(Checkpoint, Round, Round, Addr, Target)>,
}

/// The finality gadget of one node.
pub struct Finality {
    state: State<Ctx>,
    shell: Shell,
}

impl std::fmt::Debug for Finality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finality")
            .field("checkpoint", &self.state.height().0)
            .field("round", &self.state.round())
            .finish()
    }
}

fn threshold(f: &FinalityParams) -> ThresholdParams {
    ThresholdParams {
        quorum: ThresholdParam::new(u64::from(f.quorum_num), u64::from(f.quorum_den)),
        ..ThresholdParams::default()
    }
}

impl Finality {
    /// A gadget for member `me` (or an observer, if not a member), about to decide
    /// `checkpoint` among `voters`. Nothing runs until [`Finality::start`].
    pub fn new(
        chain_id: Hash32,
        members: std::sync::Arc<BTreeMap<MemberKey, secp256k1::PublicKey>>,
        finality: FinalityParams,
        me: MemberKey,
        checkpoint: u64,
        voters: Voters,
        slot_ms: u64,
    ) -> Finality {
        let params = Params {
            address: Addr(me),
            threshold_params: threshold(&finality),
            value_payload: ValuePayload::ProposalAndParts,
            enabled: true,
        };
        // Inputs for later checkpoints wait in the engine (bounded) until this node gets there.
        let state = State::new(Ctx, Checkpoint(checkpoint), voters, params, 4_096, 512);
        Finality {
            state,
            shell: Shell {
                chain_id,
                members,
                finality,
                timeouts: timeouts(slot_ms),
                timers: Vec::new(),
                awaiting_value: None,
                unjudged: Vec::new(),
            },
        }
    }

    /// The checkpoint being decided.
    pub fn checkpoint(&self) -> u64 {
        self.state.height().0
    }

    /// The current round.
    pub fn round(&self) -> Option<u32> {
        self.state.round().as_u32()
    }

    /// Starts deciding `checkpoint` among `voters`, whose keys are `members` (after the previous one was decided, or
    /// on start-up, or after a certificate from a peer skipped ahead).
    pub fn start(
        &mut self,
        checkpoint: u64,
        voters: Voters,
        members: std::sync::Arc<BTreeMap<MemberKey, secp256k1::PublicKey>>,
        now_ms: u64,
        view: &dyn ChainView,
        signer: &mut dyn Signer,
    ) -> Vec<Out> {
        self.shell.members = members;
        self.shell.awaiting_value = None;
        self.shell.unjudged.clear();
        let input = Input::StartHeight(
            Checkpoint(checkpoint),
            voters,
            false,
            None,
            mc::VoteExtensionPolicy::Disabled,
        );
        self.run(input, now_ms, view, signer)
    }

    /// A consensus message from the bus.
    pub fn receive(
        &mut self,
        msg: ConsensusMessage,
        now_ms: u64,
        view: &dyn ChainView,
        signer: &mut dyn Signer,
    ) -> Vec<Out> {
        match msg {
            ConsensusMessage::Vote(v) => self.receive_vote(v, now_ms, view, signer),
            ConsensusMessage::Votes(votes) => {
                let mut out = Vec::new();
                for v in votes {
                    out.extend(self.receive_vote(v, now_ms, view, signer));
                }
                out
            }
            ConsensusMessage::Proposal(p) => {
                let signed = SignedMessage::new(
                    EngineProposal::from_ledger(&p.proposal),
                    Sig(p.signature.0),
                );
                let prop = &p.proposal;
                let entry = (
                    Checkpoint(prop.checkpoint),
                    Round::new(prop.round),
                    prop.pol_round.map_or(Round::Nil, Round::new),
                    Addr(prop.proposer),
                    Target(prop.value),
                );
                let mut out = self.run(Input::Proposal(signed), now_ms, view, signer);
                // The value travels in the proposal; its validity is ours to judge, once we
                // hold the block.
                // Bounded: a flood of proposals for blocks nobody has cannot grow it.
                if !self.shell.unjudged.contains(&entry) && self.shell.unjudged.len() < MAX_UNJUDGED
                {
                    self.shell.unjudged.push(entry);
                }
                out.extend(self.judge(now_ms, view, signer));
                out
            }
        }
    }

    fn receive_vote(
        &mut self,
        v: SignedVote,
        now_ms: u64,
        view: &dyn ChainView,
        signer: &mut dyn Signer,
    ) -> Vec<Out> {
        let signed = SignedMessage::new(EngineVote::from_ledger(&v.vote), Sig(v.signature.0));
        self.run(Input::Vote(signed), now_ms, view, signer)
    }

    /// The clock advanced: fires due timeouts.
    pub fn tick(&mut self, now_ms: u64, view: &dyn ChainView, signer: &mut dyn Signer) -> Vec<Out> {
        let mut out = Vec::new();
        loop {
            let due = self.shell.timers.iter().position(|(_, at)| *at <= now_ms);
            let Some(i) = due else { break };
            let (timeout, _) = self.shell.timers.swap_remove(i);
            out.extend(self.run(Input::TimeoutElapsed(timeout), now_ms, view, signer));
        }
        out
    }

    /// The chain gained a block: a proposal may now be judged, or this node may now propose.
    pub fn block_added(
        &mut self,
        now_ms: u64,
        view: &dyn ChainView,
        signer: &mut dyn Signer,
    ) -> Vec<Out> {
        let mut out = self.judge(now_ms, view, signer);
        if let Some((checkpoint, round)) = self.shell.awaiting_value {
            let head = view.head();
            if head.height > view.final_block().height
                && checkpoint == self.state.height()
                && round == self.state.round()
            {
                self.shell.awaiting_value = None;
                let value = LocallyProposedValue::new(checkpoint, round, Target(head));
                out.extend(self.run(Input::Propose(value), now_ms, view, signer));
            }
        }
        out
    }

    fn judge(&mut self, now_ms: u64, view: &dyn ChainView, signer: &mut dyn Signer) -> Vec<Out> {
        let current = self.state.height();
        let final_height = view.final_block().height;
        let mut ready = Vec::new();
        self.shell
            .unjudged
            .retain(|(checkpoint, round, pol, proposer, target)| {
                if *checkpoint < current || target.0.height <= final_height {
                    return false;
                }
                if *checkpoint == current && view.holds(&target.0) {
                    ready.push((*checkpoint, *round, *pol, *proposer, *target));
                    return false;
                }
                true
            });
        let mut out = Vec::new();
        for (checkpoint, round, valid_round, proposer, value) in ready {
            let pv = ProposedValue {
                height: checkpoint,
                round,
                valid_round,
                proposer,
                value,
                validity: Validity::Valid,
            };
            out.extend(self.run(
                Input::ProposedValue(pv, ValueOrigin::Consensus),
                now_ms,
                view,
                signer,
            ));
        }
        out
    }

    fn run(
        &mut self,
        input: Input<Ctx>,
        now_ms: u64,
        view: &dyn ChainView,
        signer: &mut dyn Signer,
    ) -> Vec<Out> {
        let mut out = Vec::new();
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let Finality { state, shell } = self;
            let result: Result<(), engine::Error<Ctx>> = process!(
                input: input,
                state: state,
                metrics: &(),
                with: effect => shell.on_effect(effect, now_ms, view, signer, &mut queue, &mut out)
            );
            if let Err(e) = result {
                out.push(Out::Refused {
                    class: "consensus_step",
                    reason: e.to_string(),
                });
            }
        }
        out
    }
}

impl Shell {
    fn on_effect(
        &mut self,
        effect: Effect<Ctx>,
        now_ms: u64,
        view: &dyn ChainView,
        signer: &mut dyn Signer,
        queue: &mut VecDeque<Input<Ctx>>,
        out: &mut Vec<Out>,
    ) -> Result<Resume<Ctx>, String> {
        Ok(match effect {
            Effect::CancelAllTimeouts(r) => {
                self.timers.clear();
                r.resume_with(())
            }
            Effect::CancelTimeout(t, r) => {
                self.timers.retain(|(x, _)| *x != t);
                r.resume_with(())
            }
            Effect::ScheduleTimeout(t, r) => {
                let ms =
                    u64::try_from(self.timeouts.duration_for(t).as_millis()).unwrap_or(u64::MAX);
                self.timers.retain(|(x, _)| *x != t);
                self.timers.push((t, now_ms.saturating_add(ms)));
                r.resume_with(())
            }
            Effect::StartRound(_, _, _, _, r) => r.resume_with(()),
            Effect::PublishConsensusMsg(msg, r) => {
                match msg {
                    SignedConsensusMsg::Vote(v) => {
                        if let Some(v) = to_ledger_vote(&v) {
                            out.push(Out::Publish(ConsensusMessage::Vote(v)));
                        }
                    }
                    SignedConsensusMsg::Proposal(p) => {
                        if let Some(p) = to_ledger_proposal(&p) {
                            out.push(Out::Publish(ConsensusMessage::Proposal(p)));
                        }
                    }
                }
                r.resume_with(())
            }
            Effect::PublishLivenessMsg(msg, r) => {
                let votes = liveness_votes(msg);
                if !votes.is_empty() {
                    out.push(Out::Publish(ConsensusMessage::Votes(votes)));
                }
                r.resume_with(())
            }
            Effect::RepublishVote(v, r) => {
                if let Some(v) = to_ledger_vote(&v) {
                    out.push(Out::Publish(ConsensusMessage::Vote(v)));
                }
                r.resume_with(())
            }
            Effect::RepublishRoundCertificate(c, r) => {
                let votes = liveness_votes(LivenessMsg::SkipRoundCertificate(c));
                if !votes.is_empty() {
                    out.push(Out::Publish(ConsensusMessage::Votes(votes)));
                }
                r.resume_with(())
            }
            Effect::GetValue(checkpoint, round, _, r) => {
                let head = view.head();
                if head.height > view.final_block().height {
                    queue.push_back(Input::Propose(LocallyProposedValue::new(
                        checkpoint,
                        round,
                        Target(head),
                    )));
                } else {
                    self.awaiting_value = Some((checkpoint, round));
                }
                r.resume_with(())
            }
            Effect::RestreamProposal(.., r) => r.resume_with(()),
            Effect::CertVerifiedSyncValue(_, _, r) => r.resume_with(()),
            Effect::CertRejectedSyncValue(_, _, _, r) => r.resume_with(()),
            Effect::Decide(cert, _, r) => {
                out.push(Out::Decided(to_ledger_certificate(&cert)));
                r.resume_with(())
            }
            Effect::SignVote(vote, r) => {
                let v = vote
                    .to_ledger()
                    .ok_or_else(|| "a vote in no round".to_string())?;
                let signed = signer.sign_vote(v)?;
                r.resume_with(SignedMessage::new(
                    EngineVote::from_ledger(&signed.vote),
                    Sig(signed.signature.0),
                ))
            }
            Effect::SignProposal(p, r) => {
                let lp = p
                    .to_ledger()
                    .ok_or_else(|| "a proposal in no round".to_string())?;
                let signed = signer.sign_proposal(lp)?;
                r.resume_with(SignedMessage::new(
                    EngineProposal::from_ledger(&signed.proposal),
                    Sig(signed.signature.0),
                ))
            }
            Effect::VerifySignature(msg, key, r) => {
                let valid = self.verify(&msg, &key);
                if !valid {
                    out.push(Out::Refused {
                        class: "bad_signature",
                        reason: format!(
                            "consensus message signature of {} does not verify",
                            key.short()
                        ),
                    });
                }
                r.resume_with(valid)
            }
            Effect::VerifyCommitCertificate(cert, _, _, r) => {
                let ours = to_ledger_certificate(&cert);
                let result = ours
                    .verify(&self.chain_id, &self.members, &self.finality)
                    .map_err(|_| CertificateError::VerificationError(None));
                r.resume_with(result)
            }
            Effect::VerifyExtendedCommitCertificate(.., r) => {
                r.resume_with(Err(CertificateError::VerificationError(None)))
            }
            Effect::VerifyPolkaCertificate(.., r) => {
                r.resume_with(Err(CertificateError::VerificationError(None)))
            }
            Effect::VerifyRoundCertificate(.., r) => {
                r.resume_with(Err(CertificateError::VerificationError(None)))
            }
            // Votes are guarded by the signer; proposals are re-judged from the chain.
            Effect::WalAppend(_, _, r) => r.resume_with(()),
            Effect::ExtendVote(.., r) => r.resume_with(None),
            Effect::VerifyVoteExtension(.., r) => r.resume_with(Ok(())),
            Effect::Finalize(_, _, _, r) => r.resume_with(()),
        })
    }

    fn verify(&self, msg: &SignedMessage<Ctx, engine::ConsensusMsg<Ctx>>, key: &MemberKey) -> bool {
        let Some(public) = self.members.get(key) else {
            return false;
        };
        let Ok(signature) = msg.signature.to_ledger() else {
            return false;
        };
        let digest = match &msg.message {
            engine::ConsensusMsg::Vote(v) => v.to_ledger().map(|v| v.digest(&self.chain_id)),
            engine::ConsensusMsg::Proposal(p) => p.to_ledger().map(|p| p.digest(&self.chain_id)),
        };
        digest.is_some_and(|d| signature.verify(&d, public))
    }
}

fn to_ledger_vote(v: &SignedMessage<Ctx, EngineVote>) -> Option<SignedVote> {
    Some(SignedVote {
        vote: v.message.to_ledger()?,
        signature: v.signature.to_ledger().ok()?,
    })
}

fn to_ledger_proposal(p: &SignedMessage<Ctx, EngineProposal>) -> Option<SignedProposal> {
    Some(SignedProposal {
        proposal: p.message.to_ledger()?,
        signature: p.signature.to_ledger().ok()?,
    })
}

/// The votes behind a liveness certificate, to forward one by one (receivers count them as
/// votes, so no certificate format of the engine's goes on the bus).
fn liveness_votes(msg: LivenessMsg<Ctx>) -> Vec<SignedVote> {
    let mut out = Vec::new();
    match msg {
        LivenessMsg::Vote(v) => out.extend(to_ledger_vote(&v)),
        LivenessMsg::PolkaCertificate(c) => {
            let Some(round) = c.round.as_u32() else {
                return out;
            };
            for s in c.polka_signatures {
                if let Ok(signature) = s.signature.to_ledger() {
                    out.push(SignedVote {
                        vote: Vote {
                            checkpoint: c.height.0,
                            round,
                            step: VoteStep::Prevote,
                            value: Some(c.value_id.0),
                            voter: s.address.0,
                        },
                        signature,
                    });
                }
            }
        }
        LivenessMsg::SkipRoundCertificate(c) => {
            let Some(round) = c.round.as_u32() else {
                return out;
            };
            for s in c.round_signatures {
                if let Ok(signature) = s.signature.to_ledger() {
                    out.push(SignedVote {
                        vote: Vote {
                            checkpoint: c.height.0,
                            round,
                            step: match s.vote_type {
                                VoteType::Prevote => VoteStep::Prevote,
                                VoteType::Precommit => VoteStep::Precommit,
                            },
                            value: match s.value_id {
                                NilOrVal::Nil => None,
                                NilOrVal::Val(t) => Some(t.0),
                            },
                            voter: s.address.0,
                        },
                        signature,
                    });
                }
            }
        }
    }
    out
}

fn to_ledger_certificate(c: &CommitCertificate<Ctx>) -> Certificate {
    let mut signatures: Vec<(MemberKey, gridlet_ledger::Signature)> = c
        .commit_signatures
        .iter()
        .filter_map(|s| Some((s.address.0, s.signature.to_ledger().ok()?)))
        .collect();
    signatures.sort_by_key(|a| a.0);
    signatures.dedup_by(|a, b| a.0 == b.0);
    Certificate {
        checkpoint: c.height.0,
        round: c.round.as_u32().unwrap_or(0),
        block: c.value_id.0,
        signatures,
    }
}
