//! The community node as a sans-IO state machine: it is fed inputs (clock ticks, transactions
//! and blocks from the bus, sync requests) and returns effects (messages to publish, commits to
//! report). The ledger actor owns one and does the I/O; tests drive several in lock-step.
//!
//! Design: time comes in with every tick (`now_ms`), never read here. A block is produced when
//! this member is ranked for the current slot and its fallback delay has passed; the slot is
//! recorded in the fsync'd signer guard before the block leaves. A block whose parent is
//! unknown is kept as an orphan and the missing heights are requested from peers (a broker only
//! queues so much); everything seen is deduplicated by hash.

use std::collections::{HashSet, VecDeque};

use gridlet_ledger::block::check_header;
use gridlet_ledger::chain::Checks;
use gridlet_ledger::finality::{BlockRef, Certificate, ConsensusMessage, SignedVote};
use gridlet_ledger::market::MarketEvent;
use gridlet_ledger::selection::rank_producers;
use gridlet_ledger::store::{BlockStore, PersistentChain, SignerGuard, VoteGuard};
use gridlet_ledger::{
    Block, BlockError, Hash32, MemberKey, SignedTransaction, StoreError, TxPayload,
};
use secp256k1::SecretKey;

use crate::finality::context::Voters;
use crate::finality::{ChainView, Finality, Out, Signer};
use crate::local_tx::sign_checked;
use crate::orphans::{Admission, OrphanPool};
pub use crate::wire::BusMessage;

/// How many transactions of recent blocks a node keeps to put back after a branch switch.
const RECENT_TXS: usize = 4_096;

/// Inputs to the node.
#[derive(Debug, Clone)]
pub enum Input {
    /// The clock advanced.
    Tick {
        /// Unix time, ms.
        now_ms: u64,
    },
    /// A message from the bus.
    Bus(BusMessage),
    /// A transaction made locally (the market actor, the HTTP API).
    Submit(Box<SignedTransaction>),
    /// Sign a payload as this member (next nonce after those already waiting) and submit it.
    Sign(Box<TxPayload>),
    /// The bus connection came back: blocks may have been missed while it was down.
    Reconnected,
}

/// What the node wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish on the bus.
    Publish(BusMessage),
    /// A block became part of this node's chain (not final yet: nothing may act on it).
    Committed {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash32,
        /// Whether this node produced it.
        produced: bool,
        /// The head after it (the block may sit on a side branch).
        head: (u64, Hash32),
    },
    /// A block became final (a quorum certified it or a descendant): its market events are
    /// facts every member agrees on, to be acted on (releases, settlements). Reported once per
    /// block, in height order.
    Finalized {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash32,
        /// The market events of the block.
        events: Vec<MarketEvent>,
    },
    /// Something received was refused (for metrics and logs).
    Rejected {
        /// `tx`, `block` or `message`.
        what: &'static str,
        /// The kind of reason, from a small fixed set (a metric label).
        class: String,
        /// Why.
        reason: String,
    },
    /// A message seen before was dropped.
    Duplicate,
    /// A transaction signed here (`Input::Sign`) was accepted into the mempool and published.
    Submitted {
        /// Its id.
        id: Hash32,
    },
    /// The node's record of what it signed was gone or damaged: what it does about it.
    SignerState {
        /// `blocks` or `votes`.
        what: &'static str,
        /// Whether it signs again.
        signing: bool,
        /// Why, for the log.
        reason: String,
    },
}

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's name on the bus (sync answers are addressed to it).
    pub name: String,
    /// Most transactions kept waiting.
    pub max_mempool: usize,
    /// Most blocks asked for or served in one sync message.
    pub sync_batch: u64,
    /// No blocks for later slots (a simulated day ends; `u64::MAX` otherwise).
    pub last_slot: u64,
}

/// The community node.
#[derive(Debug)]
pub struct Node<S: BlockStore> {
    cfg: NodeConfig,
    key: SecretKey,
    me: MemberKey,
    chain: PersistentChain<S>,
    guard: SignerGuard,
    mempool: Vec<SignedTransaction>,
    /// Transactions of recently committed blocks (for a branch switch).
    recent_txs: std::collections::VecDeque<SignedTransaction>,
    seen: HashSet<Hash32>,
    seen_order: VecDeque<Hash32>,
    orphans: OrphanPool,
    /// Sync answer bytes sent in the current slot (slot, bytes): every peer's requests share
    /// one budget, so small requests cannot draw unbounded answers.
    answered: (u64, usize),
    now_ms: u64,
    sync_asked_at: Option<(u64, u64)>,
    /// After a (re)start, production waits until peers answered a sync request or two slots
    /// passed: a node coming back must not fork off its stale head.
    hold_until_ms: Option<u64>,
    started: bool,
    /// The highest block height seen from peers.
    best_seen: u64,
    finality: Finality,
    finality_started: bool,
    signer: GuardedSigner,
    /// A certificate for a block this node does not hold yet (applied once it arrives).
    pending_certificate: Option<Certificate>,
    /// Verified votes seen, by (voter, checkpoint, round, step): a second one is a double vote.
    seen_votes: std::collections::BTreeMap<(MemberKey, u64, u32, u8), SignedVote>,
    /// Double votes this node submitted evidence for.
    reported: HashSet<(MemberKey, u64, u32, u8)>,
    /// What became of the transactions seen here.
    txs: crate::tx_status::TxTracker,
    /// While the vote record is lost: since when (the node's start, community ms). It votes
    /// again only after a checkpoint certified without it on a block made after that.
    votes_held_since: Option<u64>,
}

/// Votes remembered to catch double votes, at most.
const MAX_SEEN_VOTES: usize = 100_000;
/// Checkpoints below the current one whose votes are still remembered.
const VOTE_MEMORY_CHECKPOINTS: u64 = 64;

/// Signs consensus messages through the fsync'd vote guard.
#[derive(Debug)]
struct GuardedSigner {
    guard: VoteGuard,
    key: SecretKey,
    chain_id: Hash32,
}

impl Signer for GuardedSigner {
    fn sign_vote(
        &mut self,
        vote: gridlet_ledger::finality::Vote,
    ) -> Result<gridlet_ledger::finality::SignedVote, String> {
        self.guard
            .sign_vote(&self.chain_id, vote, &self.key)
            .map_err(|e| e.to_string())
    }
    fn sign_proposal(
        &mut self,
        proposal: gridlet_ledger::finality::Proposal,
    ) -> Result<gridlet_ledger::finality::SignedProposal, String> {
        self.guard
            .sign_proposal(&self.chain_id, proposal, &self.key)
            .map_err(|e| e.to_string())
    }
}

/// The chain as the finality gadget sees it.
struct View<'a, S: BlockStore>(&'a PersistentChain<S>);

impl<S: BlockStore> ChainView for View<'_, S> {
    fn head(&self) -> BlockRef {
        let c = self.0.chain();
        BlockRef {
            height: c.head_height(),
            hash: c.head_hash(),
        }
    }
    fn final_block(&self) -> BlockRef {
        let (hash, height) = self.0.chain().finalized();
        BlockRef { height, hash }
    }
    fn holds(&self, block: &BlockRef) -> bool {
        block.height > self.0.chain().finalized().1
            && self.0.chain().height_of(&block.hash) == Some(block.height)
    }
}

/// The voters of `checkpoint`: every member of the final block's state, proposing in the
/// paper's PoS order on that block (its state, its hash as the draw seed, the checkpoint as
/// the draw's slot); with their keys, which the votes of the checkpoint are checked against.
fn voters_for<S: BlockStore>(chain: &PersistentChain<S>, checkpoint: u64) -> (Voters, MemberKeys) {
    let c = chain.chain();
    let rules = c.rules();
    let keys = c.finalized_state().members().clone();
    let members: Vec<MemberKey> = keys.keys().copied().collect();
    let ranking = rank_producers(
        rules.selection.rule,
        &c.finalized_state().candidates(rules),
        &c.finalized().0,
        checkpoint,
        members.len(),
    );
    (Voters::new(&members, &ranking), keys)
}

type MemberKeys = std::sync::Arc<std::collections::BTreeMap<MemberKey, secp256k1::PublicKey>>;

const SEEN_LIMIT: usize = 100_000;
/// Blocks kept waiting for a parent, at most.
const MAX_ORPHANS: usize = 256;
/// Bytes of blocks kept waiting for a parent, at most.
const MAX_ORPHAN_BYTES: usize = 8 << 20;
/// Sync answer bytes (hex) this node sends per slot, to all peers together.
pub const SYNC_ANSWER_BYTES_PER_SLOT: usize = 1 << 20;

/// The error's variant name in snake case (`UnknownParent { .. }` → `unknown_parent`): a
/// bounded label, unlike the message, which carries heights and hashes.
pub fn reason_class(e: &impl std::fmt::Debug) -> String {
    let debug = format!("{e:?}");
    let mut out = String::new();
    for (i, c) in debug
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .enumerate()
    {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    gridlet_ledger::codec::from_hex(s)
}

impl<S: BlockStore> Node<S> {
    /// A node over an opened chain, its block signer guard and its vote guard.
    pub fn new(
        cfg: NodeConfig,
        key: SecretKey,
        chain: PersistentChain<S>,
        guard: SignerGuard,
        votes: VoteGuard,
    ) -> Node<S> {
        let me = MemberKey::from_secret(&key);
        let checkpoint = chain
            .last_certificate()
            .map_or(1, |c| c.checkpoint.saturating_add(1));
        let rules = chain.chain().rules();
        let (voters, keys) = voters_for(&chain, checkpoint);
        let finality = Finality::new(
            rules.chain_id,
            keys,
            rules.finality.clone(),
            me,
            checkpoint,
            voters,
            chain.chain().genesis().slot_ms,
        );
        let signer = GuardedSigner {
            guard: votes,
            key,
            chain_id: rules.chain_id,
        };
        Node {
            finality,
            finality_started: false,
            signer,
            pending_certificate: None,
            seen_votes: std::collections::BTreeMap::new(),
            reported: HashSet::new(),
            txs: crate::tx_status::TxTracker::default(),
            votes_held_since: None,
            me,
            cfg,
            key,
            chain,
            guard,
            mempool: Vec::new(),
            recent_txs: std::collections::VecDeque::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            orphans: OrphanPool::new(MAX_ORPHANS, MAX_ORPHAN_BYTES),
            answered: (0, 0),
            now_ms: 0,
            sync_asked_at: None,
            hold_until_ms: None,
            started: false,
            best_seen: 0,
        }
    }

    /// What became of transaction `id` (as far as this node knows).
    pub fn tx_status(&self, id: &Hash32) -> crate::tx_status::TxStatus {
        let pending = self.mempool.iter().any(|t| t.id() == *id);
        let in_chain = |height: u64| {
            self.chain
                .block_at(height)
                .ok()
                .flatten()
                .is_some_and(|b| b.transactions.iter().any(|t| t.id() == *id))
        };
        self.txs
            .status(id, pending, in_chain, self.chain.chain().finalized().1)
    }

    /// The checkpoint the finality gadget is deciding, and its round.
    pub fn checkpoint(&self) -> (u64, Option<u32>) {
        (self.finality.checkpoint(), self.finality.round())
    }

    /// The chain.
    pub fn chain(&self) -> &PersistentChain<S> {
        &self.chain
    }

    /// Blocks this node knows exist above its head (the highest height seen from peers).
    pub fn sync_lag(&self) -> u64 {
        self.best_seen
            .saturating_sub(self.chain.chain().head_height())
    }

    /// The current slot on the community clock.
    pub fn slot(&self) -> u64 {
        self.chain.chain().genesis().slot_at(self.now_ms)
    }

    /// This node's member key.
    pub fn member(&self) -> MemberKey {
        self.me
    }

    /// Transactions waiting.
    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    fn remember(&mut self, h: Hash32) -> bool {
        if !self.seen.insert(h) {
            return false;
        }
        self.seen_order.push_back(h);
        while self.seen_order.len() > SEEN_LIMIT {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// Handles one input.
    pub fn handle(&mut self, input: Input) -> Result<Vec<Effect>, StoreError> {
        let mut out = Vec::new();
        match input {
            Input::Tick { now_ms } => {
                self.now_ms = self.now_ms.max(now_ms);
                if !self.started {
                    self.started = true;
                    self.hold_lost_signers(&mut out)?;
                    // Only a node with a chain to catch up on waits; a fresh community starts at once.
                    if self.chain.chain().head_height() > 0 {
                        let slot = self.chain.chain().genesis().slot_ms;
                        self.hold_until_ms =
                            Some(self.now_ms.saturating_add(slot.saturating_mul(2)));
                        self.request_sync(&mut out);
                    }
                }
                if !self.finality_started {
                    self.finality_started = true;
                    let k = self.finality.checkpoint();
                    let (voters, keys) = voters_for(&self.chain, k);
                    let outs = self.finality.start(
                        k,
                        voters,
                        keys,
                        self.now_ms,
                        &View(&self.chain),
                        &mut self.signer,
                    );
                    self.finality_outs(outs, &mut out)?;
                }
                self.maybe_produce(&mut out)?;
                let outs = self
                    .finality
                    .tick(self.now_ms, &View(&self.chain), &mut self.signer);
                self.finality_outs(outs, &mut out)?;
                // A community produces every slot: three silent slots mean this node missed
                // blocks (a dropped connection, a broker that did not queue) or all are quiet.
                let genesis = self.chain.chain().genesis();
                let slot = genesis.slot_at(self.now_ms);
                if slot > self.chain.chain().head_state().slot.saturating_add(3) {
                    self.request_sync(&mut out);
                }
            }
            Input::Reconnected => self.request_sync(&mut out),
            Input::Sign(payload) => self.sign_and_submit(*payload, &mut out),
            Input::Submit(tx) => {
                if self.accept_tx((*tx).clone(), &mut out) {
                    out.push(Effect::Publish(BusMessage::Tx {
                        hex: gridlet_ledger::codec::to_hex(tx.bytes()),
                    }));
                }
            }
            Input::Bus(BusMessage::Tx { hex }) => {
                match hex_decode(&hex).map(|b| SignedTransaction::decode(&b)) {
                    Some(Ok(tx)) => {
                        self.accept_tx(tx, &mut out);
                    }
                    Some(Err(e)) => out.push(Effect::Rejected {
                        what: "tx",
                        class: reason_class(&e),
                        reason: e.to_string(),
                    }),
                    None => out.push(Effect::Rejected {
                        what: "tx",
                        class: "not_hex".into(),
                        reason: "not hex".into(),
                    }),
                }
            }
            Input::Bus(BusMessage::Block { hex }) => self.receive_block_hex(&hex, &mut out)?,
            Input::Bus(BusMessage::SyncRequest {
                node,
                from_height,
                max,
            }) => {
                if node != self.cfg.name {
                    let top = self.chain.chain().head_height();
                    let last = from_height
                        .saturating_add(max.min(self.cfg.sync_batch))
                        .saturating_sub(1)
                        .min(top);
                    let slot = self.current_slot();
                    if self.answered.0 != slot {
                        self.answered = (slot, 0);
                    }
                    let mut blocks = Vec::new();
                    let mut answered_to = from_height;
                    for h in from_height.max(1)..=last {
                        let Some(b) = self.chain.block_at(h)? else {
                            break;
                        };
                        let hex = gridlet_ledger::codec::to_hex(&b.encode());
                        let spent = self.answered.1.saturating_add(hex.len());
                        if spent > SYNC_ANSWER_BYTES_PER_SLOT {
                            break;
                        }
                        self.answered.1 = spent;
                        blocks.push(hex);
                        answered_to = h;
                    }
                    // The certificates of the blocks sent, and the newest one: it finalizes
                    // everything below it, so a home behind only in finality catches up too.
                    let mut certs = self.chain.certificates(from_height, answered_to)?;
                    if let Some(last) = self.chain.last_certificate() {
                        if last.block.height >= from_height
                            && !certs.iter().any(|c| c.checkpoint == last.checkpoint)
                        {
                            certs.push(last.clone());
                        }
                    }
                    let certificates: Vec<String> = certs
                        .iter()
                        .map(|c| gridlet_ledger::codec::to_hex(&c.encode()))
                        .collect();
                    self.answered.1 = self
                        .answered
                        .1
                        .saturating_add(certificates.iter().map(String::len).sum::<usize>());
                    if !blocks.is_empty() || !certificates.is_empty() {
                        out.push(Effect::Publish(BusMessage::SyncResponse {
                            node,
                            blocks,
                            certificates,
                        }));
                    }
                }
            }
            Input::Bus(BusMessage::SyncResponse {
                node,
                blocks,
                certificates,
            }) => {
                // Not reset here: every peer answers a request, and letting each answer trigger
                // a new request would multiply the traffic with every round.
                if node == self.cfg.name {
                    self.hold_until_ms = None;
                    for hex in blocks {
                        self.receive_block_hex(&hex, &mut out)?;
                    }
                    for hex in certificates {
                        self.receive_certificate_hex(&hex, &mut out)?;
                    }
                }
            }
            Input::Bus(BusMessage::Consensus { hex }) => {
                match hex_decode(&hex).map(|b| ConsensusMessage::decode(&b)) {
                    Some(Ok(msg)) => {
                        self.watch_votes(&msg, &mut out);
                        // A peer deciding a later checkpoint means this node missed a decision.
                        if message_checkpoint(&msg) > self.finality.checkpoint() {
                            self.request_sync(&mut out);
                        }
                        let outs = self.finality.receive(
                            msg,
                            self.now_ms,
                            &View(&self.chain),
                            &mut self.signer,
                        );
                        self.finality_outs(outs, &mut out)?;
                    }
                    Some(Err(e)) => out.push(Effect::Rejected {
                        what: "consensus",
                        class: reason_class(&e),
                        reason: e.to_string(),
                    }),
                    None => out.push(Effect::Rejected {
                        what: "consensus",
                        class: "not_hex".into(),
                        reason: "not hex".into(),
                    }),
                }
            }
            // The schedule actor's; the ledger actor routes them there.
            Input::Bus(BusMessage::Proposal(_) | BusMessage::NetPower(_)) => {}
        }
        Ok(out)
    }

    /// Signs a payload as this member (next nonce after those already waiting), checked against
    /// the head first so that a refused payload spends no nonce, and publishes it.
    fn sign_and_submit(&mut self, payload: TxPayload, out: &mut Vec<Effect>) {
        let chain = self.chain.chain();
        let signed = sign_checked(
            chain.head_state(),
            chain.rules(),
            &self.mempool,
            self.me,
            &self.key,
            payload,
        );
        match signed {
            Ok(tx) if self.accept_tx(tx.clone(), out) => {
                out.push(Effect::Submitted { id: tx.id() });
                out.push(Effect::Publish(BusMessage::Tx {
                    hex: gridlet_ledger::codec::to_hex(tx.bytes()),
                }));
            }
            Ok(_) => {}
            Err(e) => out.push(Effect::Rejected {
                what: "tx",
                class: reason_class(&e),
                reason: e.to_string(),
            }),
        }
    }

    /// Remembers every member's signed votes; a second, different vote for the same
    /// (checkpoint, round, step) is a double vote. The member with the lowest key other than
    /// the offender submits the evidence (one submitter, so no two homes spend a nonce on it).
    fn watch_votes(&mut self, msg: &ConsensusMessage, out: &mut Vec<Effect>) {
        let votes: Vec<SignedVote> = match msg {
            ConsensusMessage::Vote(v) => vec![*v],
            ConsensusMessage::Votes(v) => v.clone(),
            ConsensusMessage::Proposal(_) => return,
        };
        let current = self.finality.checkpoint();
        for v in votes {
            let rules = self.chain.chain().rules();
            let voters = self.chain.chain().finalized_state().members();
            let Some(key) = voters.get(&v.vote.voter) else {
                continue;
            };
            if !v.verifies(&rules.chain_id, key) {
                continue;
            }
            let slot = (
                v.vote.voter,
                v.vote.checkpoint,
                v.vote.round,
                v.vote.step.code(),
            );
            match self.seen_votes.get(&slot) {
                None => {
                    if self.seen_votes.len() < MAX_SEEN_VOTES {
                        self.seen_votes.insert(slot, v);
                    }
                }
                Some(first) if first.conflicts_with(&v) => {
                    let first = *first;
                    let submitter = (self.chain.chain().head_state().members().keys())
                        .find(|k| **k != v.vote.voter)
                        .copied();
                    let known = self.chain.chain().head_state().offences().contains(&slot);
                    if submitter == Some(self.me) && !known && self.reported.insert(slot) {
                        self.sign_and_submit(
                            TxPayload::Evidence(Box::new(gridlet_ledger::finality::DoubleVote {
                                first,
                                second: v,
                            })),
                            out,
                        );
                    }
                }
                Some(_) => {}
            }
        }
        // Votes of long-decided checkpoints are no longer needed to catch a double vote.
        let keep_from = current.saturating_sub(VOTE_MEMORY_CHECKPOINTS);
        if self.seen_votes.len() >= MAX_SEEN_VOTES / 2 {
            self.seen_votes.retain(|(_, k, _, _), _| *k >= keep_from);
        }
    }

    fn accept_tx(&mut self, tx: SignedTransaction, out: &mut Vec<Effect>) -> bool {
        if !self.remember(tx.id()) {
            out.push(Effect::Duplicate);
            return false;
        }
        let chain = self.chain.chain();
        if let Err(e) = chain
            .rules()
            .verify_signature(chain.head_state().members(), &tx)
        {
            self.txs.refused(tx.id(), e.to_string());
            out.push(Effect::Rejected {
                what: "tx",
                class: reason_class(&e),
                reason: e.to_string(),
            });
            return false;
        }
        let account = self.chain.chain().head_state().account(&tx.tx().sender);
        if tx.tx().nonce < account.nonce {
            let reason = format!("stale nonce {} < {}", tx.tx().nonce, account.nonce);
            self.txs.refused(tx.id(), reason.clone());
            out.push(Effect::Rejected {
                what: "tx",
                class: "stale_nonce".into(),
                reason,
            });
            return false;
        }
        if self.mempool.len() >= self.cfg.max_mempool {
            self.txs.refused(tx.id(), "mempool full".into());
            out.push(Effect::Rejected {
                what: "tx",
                class: "mempool_full".into(),
                reason: "mempool full".into(),
            });
            return false;
        }
        self.mempool.push(tx);
        true
    }

    fn receive_block_hex(&mut self, hex: &str, out: &mut Vec<Effect>) -> Result<(), StoreError> {
        let Some(bytes) = hex_decode(hex) else {
            out.push(Effect::Rejected {
                what: "block",
                class: "not_hex".into(),
                reason: "not hex".into(),
            });
            return Ok(());
        };
        match Block::decode(&bytes) {
            Ok(b) => self.receive_block(b, out),
            Err(e) => {
                out.push(Effect::Rejected {
                    what: "block",
                    class: reason_class(&e),
                    reason: e.to_string(),
                });
                Ok(())
            }
        }
    }

    fn current_slot(&self) -> u64 {
        self.chain.chain().genesis().slot_at(self.now_ms)
    }

    /// A header's producer is checked against the head's members, then the final block's (a
    /// head on a branch without a member's admission or departure must not drop its blocks).
    fn check_header(&self, block: &Block, current_slot: u64) -> Result<(), BlockError> {
        let c = self.chain.chain();
        check_header(c.rules(), c.head_state().members(), block, current_slot).or_else(
            |e| match e {
                BlockError::UnknownProducer { .. } => check_header(
                    c.rules(),
                    c.finalized_state().members(),
                    block,
                    current_slot,
                ),
                e => Err(e),
            },
        )
    }

    fn receive_block(&mut self, block: Block, out: &mut Vec<Effect>) -> Result<(), StoreError> {
        let hash = block.hash();
        if self.chain.chain().contains(&hash)
            || self.chain.hash_at(block.header.height) == Some(hash)
        {
            out.push(Effect::Duplicate);
            return Ok(());
        }
        // A block no member could have made is never waited for, synced towards or kept.
        let slot = self.current_slot();
        if let Err(e) = self.check_header(&block, slot.saturating_add(1)) {
            out.push(Effect::Rejected {
                what: "block",
                class: reason_class(&e),
                reason: e.to_string(),
            });
            return Ok(());
        }
        self.best_seen = self.best_seen.max(block.header.height);
        let checks = Checks {
            signatures: true,
            current_slot: Some(self.current_slot().saturating_add(1)),
        };
        let old_head = self.chain.chain().head_height();
        match self.chain.commit(block.clone(), checks) {
            Ok(ins) => {
                if ins.head_changed && ins.fork_height < old_head {
                    self.resurrect_abandoned();
                }
                self.after_commit(&block, false, out)?;
                self.adopt_orphans(out)?;
                Ok(())
            }
            Err(StoreError::Block(BlockError::UnknownParent { .. })) => {
                let bytes = block.encode().len();
                if self.orphans.insert(block, bytes, slot) == Admission::Refused {
                    out.push(Effect::Rejected {
                        what: "block",
                        class: "orphan_pool_full".into(),
                        reason: format!(
                            "no room for a block waiting for its parent ({bytes} bytes)"
                        ),
                    });
                }
                self.request_sync(out);
                Ok(())
            }
            Err(StoreError::Block(BlockError::Duplicate { .. })) => {
                out.push(Effect::Duplicate);
                Ok(())
            }
            Err(StoreError::Block(e)) => {
                out.push(Effect::Rejected {
                    what: "block",
                    class: reason_class(&e),
                    reason: e.to_string(),
                });
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn request_sync(&mut self, out: &mut Vec<Effect>) {
        // From just above the finalized block, not above the head: if this node sits on a
        // branch the others abandoned, their blocks must attach below its head.
        let from = self.chain.chain().finalized().1.saturating_add(1);
        // Ask again only when the head moved or a slot passed.
        let slot_ms = self.chain.chain().genesis().slot_ms;
        if let Some((h, at)) = self.sync_asked_at {
            if h == from && self.now_ms < at.saturating_add(slot_ms) {
                return;
            }
        }
        self.sync_asked_at = Some((from, self.now_ms));
        out.push(Effect::Publish(BusMessage::SyncRequest {
            node: self.cfg.name.clone(),
            from_height: from,
            max: self.cfg.sync_batch,
        }));
    }

    fn adopt_orphans(&mut self, out: &mut Vec<Effect>) -> Result<(), StoreError> {
        let finalized = self.chain.chain().finalized().1;
        self.orphans.prune(finalized, self.current_slot());
        let chain = self.chain.chain();
        let ready = self.orphans.take_ready(|parent| chain.contains(parent));
        for b in ready {
            self.receive_block(b, out)?;
        }
        Ok(())
    }

    /// After a switch to another branch: transactions of the abandoned blocks that the new
    /// branch does not contain (their nonce is not used yet) go back into the mempool, or they
    /// would be lost — and every later transaction of their senders stuck behind the gap.
    fn resurrect_abandoned(&mut self) {
        let state = self.chain.chain().head_state();
        let waiting: HashSet<Hash32> = self.mempool.iter().map(|t| t.id()).collect();
        let back: Vec<SignedTransaction> = self
            .recent_txs
            .iter()
            .filter(|t| {
                !waiting.contains(&t.id()) && t.tx().nonce >= state.account(&t.tx().sender).nonce
            })
            .cloned()
            .collect();
        if back.is_empty() {
            return;
        }
        self.mempool.extend(back);
        // A block applies transactions in mempool order, and one whose nonce comes too early
        // is dropped: each sender's must come in nonce order.
        self.mempool.sort_by_key(|t| t.tx().nonce);
    }

    fn after_commit(
        &mut self,
        block: &Block,
        produced: bool,
        out: &mut Vec<Effect>,
    ) -> Result<(), StoreError> {
        let included: HashSet<Hash32> = block.transactions.iter().map(|t| t.id()).collect();
        self.txs
            .included(included.iter().copied(), block.header.height);
        for t in &block.transactions {
            self.recent_txs.push_back(t.clone());
        }
        while self.recent_txs.len() > RECENT_TXS {
            self.recent_txs.pop_front();
        }
        let state = self.chain.chain().head_state();
        self.mempool.retain(|t| {
            !included.contains(&t.id()) && t.tx().nonce >= state.account(&t.tx().sender).nonce
        });
        out.push(Effect::Committed {
            height: block.header.height,
            hash: block.hash(),
            produced,
            head: (
                self.chain.chain().head_height(),
                self.chain.chain().head_hash(),
            ),
        });
        if let Some(cert) = self.pending_certificate.take() {
            self.apply_certificate(cert, out)?;
        }
        let outs = self
            .finality
            .block_added(self.now_ms, &View(&self.chain), &mut self.signer);
        self.finality_outs(outs, out)
    }

    fn receive_certificate_hex(
        &mut self,
        hex: &str,
        out: &mut Vec<Effect>,
    ) -> Result<(), StoreError> {
        let decoded = hex_decode(hex).map(|b| Certificate::decode(&b));
        match decoded {
            Some(Ok(cert)) => {
                let c = self.chain.chain();
                let voters = c.finalized_state().members();
                match cert.verify(&c.rules().chain_id, voters, &c.rules().finality) {
                    Ok(()) => self.apply_certificate(cert, out),
                    Err(e) => {
                        out.push(Effect::Rejected {
                            what: "certificate",
                            class: reason_class(&e),
                            reason: e.to_string(),
                        });
                        Ok(())
                    }
                }
            }
            Some(Err(e)) => {
                out.push(Effect::Rejected {
                    what: "certificate",
                    class: reason_class(&e),
                    reason: e.to_string(),
                });
                Ok(())
            }
            None => {
                out.push(Effect::Rejected {
                    what: "certificate",
                    class: "not_hex".into(),
                    reason: "not hex".into(),
                });
                Ok(())
            }
        }
    }

    /// Carries out what the finality gadget asked for.
    fn finality_outs(&mut self, outs: Vec<Out>, out: &mut Vec<Effect>) -> Result<(), StoreError> {
        for o in outs {
            match o {
                Out::Publish(m) => out.push(Effect::Publish(BusMessage::Consensus {
                    hex: gridlet_ledger::codec::to_hex(&m.encode()),
                })),
                Out::Decided(cert) => self.apply_certificate(cert, out)?,
                // Held votes were announced once (Effect::SignerState), not refused input.
                Out::Refused { reason, .. }
                    if self.votes_held_since.is_some() && reason.contains("not signing:") => {}
                Out::Refused { class, reason } => out.push(Effect::Rejected {
                    what: "consensus",
                    class: class.into(),
                    reason,
                }),
            }
        }
        Ok(())
    }

    /// A verified certificate (decided here or by peers): finalizes its block if held, or
    /// keeps it until the block arrives; then decides the next checkpoint.
    fn apply_certificate(
        &mut self,
        cert: Certificate,
        out: &mut Vec<Effect>,
    ) -> Result<(), StoreError> {
        let chain = self.chain.chain();
        if cert.block.height <= chain.finalized().1 {
            return Ok(());
        }
        if chain.height_of(&cert.block.hash) != Some(cert.block.height) {
            let higher = self
                .pending_certificate
                .as_ref()
                .is_none_or(|p| p.block.height < cert.block.height);
            if higher {
                self.pending_certificate = Some(cert);
            }
            self.request_sync(out);
            return Ok(());
        }
        let checkpoint = cert.checkpoint;
        let certified_slot = chain.block(&cert.block.hash).map(|b| b.header.slot);
        let finalized = match self.chain.finalize(cert) {
            Ok(f) => f,
            Err(StoreError::Block(e)) => {
                out.push(Effect::Rejected {
                    what: "certificate",
                    class: reason_class(&e),
                    reason: e.to_string(),
                });
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if finalized.head_switch.is_some() {
            self.resurrect_abandoned();
        }
        for (block, events) in finalized.blocks {
            out.push(Effect::Finalized {
                height: block.header.height,
                hash: block.hash(),
                events,
            });
        }
        if self
            .pending_certificate
            .as_ref()
            .is_some_and(|p| p.block.height <= self.chain.chain().finalized().1)
        {
            self.pending_certificate = None;
        }
        let next = checkpoint.saturating_add(1);
        self.maybe_resume_votes(certified_slot, next, out)?;
        // Only forward: restarting the checkpoint in progress would throw its votes away.
        if next > self.finality.checkpoint() {
            let (voters, keys) = voters_for(&self.chain, next);
            self.finality_started = true;
            let outs = self.finality.start(
                next,
                voters,
                keys,
                self.now_ms,
                &View(&self.chain),
                &mut self.signer,
            );
            self.finality_outs(outs, out)?;
        }
        Ok(())
    }

    /// At the start: a lost block record resumes past the current slot (no block can have
    /// been signed for a slot that had not begun); a lost vote record holds every vote until
    /// [`Self::maybe_resume_votes`].
    fn hold_lost_signers(&mut self, out: &mut Vec<Effect>) -> Result<(), StoreError> {
        if let Some(loss) = self.guard.loss() {
            let reason = format!("signer.state {loss}");
            let slot = self.chain.chain().genesis().slot_at(self.now_ms);
            self.guard.resume_after(slot)?;
            out.push(Effect::SignerState {
                what: "blocks",
                signing: true,
                reason: format!("{reason}: signing blocks again after slot {slot}"),
            });
        }
        if let Some(loss) = self.signer.guard.loss() {
            self.votes_held_since = Some(self.now_ms);
            out.push(Effect::SignerState {
                what: "votes",
                signing: false,
                reason: format!(
                    "votes.state {loss}: not voting until a checkpoint is certified without \
                     this node on a block made after it started"
                ),
            });
        }
        Ok(())
    }

    /// Resumes voting at `next` once the block just certified (made in `certified_slot`) was
    /// made after the node started: its checkpoint was decided without this key, so this key
    /// cannot have voted in `next` before it lost its record.
    fn maybe_resume_votes(
        &mut self,
        certified_slot: Option<u64>,
        next: u64,
        out: &mut Vec<Effect>,
    ) -> Result<(), StoreError> {
        let (Some(since), Some(slot)) = (self.votes_held_since, certified_slot) else {
            return Ok(());
        };
        if self.chain.chain().genesis().slot_start_ms(slot) < since {
            return Ok(());
        }
        self.signer.guard.resume_at(next)?;
        self.votes_held_since = None;
        out.push(Effect::SignerState {
            what: "votes",
            signing: true,
            reason: format!("votes.state recovered: voting again from checkpoint {next}"),
        });
        Ok(())
    }

    fn maybe_produce(&mut self, out: &mut Vec<Effect>) -> Result<(), StoreError> {
        let genesis = self.chain.chain().genesis().clone();
        let slot = genesis.slot_at(self.now_ms);
        let head_slot = self.chain.chain().head_state().slot;
        let chain = self.chain.chain();
        // Without a quorum nothing becomes final: stop growing a tree nobody can finalize.
        let unfinal = chain.head_height().saturating_sub(chain.finalized().1);
        if unfinal >= chain.rules().finality.max_unfinal_blocks {
            return Ok(());
        }
        if slot <= head_slot
            || slot > self.cfg.last_slot
            || self.guard.last_signed().is_some_and(|(s, _)| s >= slot)
        {
            return Ok(());
        }
        // Blocks are waiting for a missing parent: this node is behind, so building on its
        // head would only start a fork. Catch up first.
        self.orphans.prune(self.chain.chain().finalized().1, slot);
        if self.orphans.catching_up(slot) || self.hold_until_ms.is_some_and(|t| self.now_ms < t) {
            return Ok(());
        }
        let Some(rank) = self.chain.chain().rank_for(slot, &self.me) else {
            return Ok(());
        };
        let into_slot = self.now_ms.saturating_sub(genesis.slot_start_ms(slot));
        let wait =
            u64::from(rank.saturating_sub(1)).saturating_mul(genesis.selection.fallback_delay_ms);
        if into_slot < wait {
            return Ok(());
        }
        let produced = self
            .chain
            .chain()
            .produce(&self.key, slot, &self.mempool)
            .map_err(StoreError::Block)?;
        for (id, e) in &produced.rejected {
            self.txs.refused(*id, format!("left out of a block: {e}"));
            out.push(Effect::Rejected {
                what: "tx",
                class: reason_class(e),
                reason: format!("left out of a block: {e}"),
            });
        }
        let rejected: HashSet<Hash32> = produced.rejected.iter().map(|(id, _)| *id).collect();
        self.mempool.retain(|t| !rejected.contains(&t.id()));
        let block = produced.block;
        // Persist the slot before the signed block leaves this node.
        self.guard.authorize(slot, block.hash())?;
        self.chain.commit(block.clone(), Checks::FULL)?;
        self.remember(block.hash());
        out.push(Effect::Publish(BusMessage::Block {
            hex: gridlet_ledger::codec::to_hex(&block.encode()),
        }));
        self.after_commit(&block, true, out)?;
        Ok(())
    }
}

fn message_checkpoint(msg: &ConsensusMessage) -> u64 {
    match msg {
        ConsensusMessage::Vote(v) => v.vote.checkpoint,
        ConsensusMessage::Proposal(p) => p.proposal.checkpoint,
        ConsensusMessage::Votes(v) => v.iter().map(|v| v.vote.checkpoint).max().unwrap_or(0),
    }
}

#[cfg(test)]
mod reason_tests {
    use super::reason_class;

    #[derive(Debug)]
    #[allow(dead_code)]
    enum Sample {
        UnknownParent { height: u64 },
        Codec(String),
        Full,
    }

    #[test]
    fn reason_classes_are_variant_names_in_snake_case() {
        assert_eq!(
            reason_class(&Sample::UnknownParent { height: 7 }),
            "unknown_parent"
        );
        assert_eq!(reason_class(&Sample::Codec("x".into())), "codec");
        assert_eq!(reason_class(&Sample::Full), "full");
    }
}
