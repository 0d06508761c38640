//! Block validation, fork choice, finality and block production.
//!
//! Design: [`Chain`] keeps the finalized block and the tree of non-final blocks above it, each
//! with the state after it. Inserting a block validates it against its parent's state and
//! returns what changed; the caller (the persistent chain, an actor) does the I/O.
//!
//! Fork choice: each block scores `fallback_ranks + 1 − rank` (an elected producer's block
//! outweighs a fallback's); the head is the block with the greatest cumulative score from
//! genesis, ties going to the lower block hash. Finality comes from outside: a quorum
//! certificate (see [`crate::finality`]) names a block, [`Chain::finalize`] makes it the root;
//! every block not descending from it is dropped and no block at or below it is accepted
//! again, so a final block is never reverted.

use std::collections::HashMap;
use std::sync::Arc;

use secp256k1::SecretKey;

use crate::block::{Block, BlockHeader};
use crate::crypto::{Hash32, MemberKey};
use crate::error::{BlockError, GenesisError, TxError};
use crate::genesis::Genesis;
use crate::merkle;
use crate::selection::{rank_of, rank_producers};
use crate::state::{LedgerState, Rules};
use crate::tx::SignedTransaction;

/// How thoroughly to check a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    /// Verify the producer's and every transaction's signature.
    pub signatures: bool,
    /// Refuse blocks whose slot is after this one (blocks from the future).
    pub current_slot: Option<u64>,
}

impl Checks {
    /// Every check, with no limit on the slot (for stored or exported chains).
    pub const FULL: Checks = Checks {
        signatures: true,
        current_slot: None,
    };
}

/// A block checked against its parent.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The state after the block.
    pub state: LedgerState,
    /// The producer's rank in its slot (1 = elected).
    pub rank: u32,
    /// What the market did in the block (releases to execute, settlements, clearings).
    pub events: Vec<crate::market::MarketEvent>,
}

/// Checks `block` against its parent (hash and state after it) and computes the new state.
pub fn validate_block(
    rules: &Rules,
    parent_hash: &Hash32,
    parent_state: &LedgerState,
    block: &Block,
    checks: Checks,
    threads: usize,
) -> Result<Validated, BlockError> {
    let h = &block.header;
    if h.chain_id != rules.chain_id {
        return Err(BlockError::WrongChain {
            expected: rules.chain_id,
            found: h.chain_id,
        });
    }
    if h.prev_hash != *parent_hash {
        return Err(BlockError::UnknownParent {
            parent: h.prev_hash,
            height: h.height,
        });
    }
    let expected_height = parent_state
        .height
        .checked_add(1)
        .ok_or(BlockError::Overflow { what: "height" })?;
    if h.height != expected_height {
        return Err(BlockError::BadHeight {
            expected: expected_height,
            found: h.height,
        });
    }
    if h.slot <= parent_state.slot {
        return Err(BlockError::SlotNotAfterParent {
            parent_slot: parent_state.slot,
            found: h.slot,
        });
    }
    if let Some(current) = checks.current_slot {
        if h.slot > current {
            return Err(BlockError::SlotInFuture {
                current,
                found: h.slot,
            });
        }
    }
    let candidates = parent_state.candidates(rules);
    let rank = rank_of(
        rules.selection.rule,
        &candidates,
        parent_hash,
        h.slot,
        rules.selection.fallback_ranks as usize,
        &h.producer,
    )
    .ok_or(BlockError::ProducerNotElected {
        producer: h.producer,
        slot: h.slot,
    })?;
    if block.transactions.len() > rules.max_block_txs as usize {
        return Err(BlockError::TooManyTransactions {
            count: block.transactions.len(),
            max: rules.max_block_txs,
        });
    }
    if h.tx_count as usize != block.transactions.len() {
        return Err(BlockError::TxCountMismatch {
            header: h.tx_count,
            body: block.transactions.len(),
        });
    }
    if checks.signatures {
        match crate::block::producer_signed(parent_state.members(), block) {
            None => {
                return Err(BlockError::ProducerNotElected {
                    producer: h.producer,
                    slot: h.slot,
                })
            }
            Some(false) => return Err(BlockError::BadProducerSignature { height: h.height }),
            Some(true) => {}
        }
    }
    let computed = block.computed_tx_root();
    if computed != h.tx_root {
        return Err(BlockError::MerkleRootMismatch {
            found: h.tx_root,
            computed,
        });
    }
    if checks.signatures {
        let members = parent_state.members();
        crate::sigcheck::verify_all(&block.transactions, threads, |t| {
            rules.verify_signature(members, t)
        })?;
    }
    let mut state = parent_state.clone();
    for (index, t) in block.transactions.iter().enumerate() {
        state
            .apply_tx(rules, t)
            .map_err(|error| BlockError::InvalidTransaction { index, error })?;
    }
    let events = state.finish_block(rules, h.height, h.slot, h.producer);
    let computed = state.hash();
    if computed != h.state_hash {
        return Err(BlockError::StateHashMismatch {
            found: h.state_hash,
            computed,
        });
    }
    Ok(Validated {
        state,
        rank,
        events,
    })
}

#[derive(Debug, Clone)]
struct Node {
    block: Option<Arc<Block>>,
    parent: Hash32,
    height: u64,
    state: LedgerState,
    score: u128,
    rank: u32,
    /// The market events of this block.
    events: Vec<crate::market::MarketEvent>,
}

/// What an accepted block changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// The block hash.
    pub hash: Hash32,
    /// Its height.
    pub height: u64,
    /// The producer's rank (1 = elected).
    pub rank: u32,
    /// Whether the head moved.
    pub head_changed: bool,
    /// The finalized height after the insert.
    pub finalized_height: u64,
    /// Market events of the blocks that just became canonical (`new_branch`, in order): empty
    /// when the block went onto a side branch. A branch that wins later reports its blocks'
    /// events then, so every canonical block's events are reported once per switch to it.
    pub events: Vec<crate::market::MarketEvent>,
    /// When the head moved: the height of the last block the old and the new head share.
    pub fork_height: u64,
    /// When the head moved: the new head's blocks above `fork_height`, ascending. Taken before
    /// finality advanced, so a store can replace its branch even where the new finalized block
    /// lies above the fork.
    pub new_branch: Vec<Arc<Block>>,
}

/// What [`Chain::finalize`] changed.
#[derive(Debug, Clone, Default)]
pub struct Finalized {
    /// The blocks that became final, ascending, each with its market events.
    pub blocks: Vec<(Arc<Block>, Vec<crate::market::MarketEvent>)>,
    /// When the head was on a branch the certificate dropped: the height of the previous final
    /// block and the new head's blocks above it, ascending (for the store to replace).
    pub head_switch: Option<(u64, Vec<Arc<Block>>)>,
}

/// A block built by [`Chain::produce`], not yet inserted.
#[derive(Debug, Clone)]
pub struct Produced {
    /// The signed block.
    pub block: Block,
    /// Candidate transactions left out, with the reason.
    pub rejected: Vec<(Hash32, TxError)>,
}

/// The block tree above the finalized block, with fork choice and finality.
#[derive(Debug, Clone)]
pub struct Chain {
    genesis: Genesis,
    rules: Rules,
    nodes: HashMap<Hash32, Node>,
    finalized: Hash32,
    head: Hash32,
    verify_threads: usize,
    /// Only read if the head were missing from `nodes`, which insertion never allows.
    genesis_state: LedgerState,
}

impl Chain {
    /// A chain holding only genesis.
    pub fn new(genesis: Genesis) -> Result<Chain, GenesisError> {
        let rules = Rules::from_genesis(&genesis)?;
        let root = rules.chain_id;
        let genesis_state = LedgerState::genesis(&genesis);
        let mut nodes = HashMap::new();
        nodes.insert(
            root,
            Node {
                block: None,
                parent: Hash32::ZERO,
                height: 0,
                state: genesis_state.clone(),
                score: 0,
                rank: 0,
                events: Vec::new(),
            },
        );
        Ok(Chain {
            genesis,
            rules,
            nodes,
            finalized: root,
            head: root,
            verify_threads: 1,
            genesis_state,
        })
    }

    /// Spreads signature verification of large blocks over `threads` threads.
    pub fn set_verify_threads(&mut self, threads: usize) {
        self.verify_threads = threads.max(1);
    }

    /// The genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The genesis hash (chain id); also the parent hash of block 1.
    pub fn chain_id(&self) -> Hash32 {
        self.rules.chain_id
    }

    fn node(&self, hash: &Hash32) -> Option<&Node> {
        self.nodes.get(hash)
    }

    fn head_node(&self) -> Option<&Node> {
        self.node(&self.head)
    }

    /// The head's hash (the genesis hash before the first block).
    pub fn head_hash(&self) -> Hash32 {
        self.head
    }

    /// The head's height.
    pub fn head_height(&self) -> u64 {
        self.head_node().map_or(0, |n| n.height)
    }

    /// The state after the head.
    pub fn head_state(&self) -> &LedgerState {
        self.head_node().map_or(&self.genesis_state, |n| &n.state)
    }

    /// The finalized block's hash and height.
    pub fn finalized(&self) -> (Hash32, u64) {
        (
            self.finalized,
            self.node(&self.finalized).map_or(0, |n| n.height),
        )
    }

    /// The state after the finalized block (the same on every member that finalized it).
    pub fn finalized_state(&self) -> &LedgerState {
        self.node(&self.finalized)
            .map_or(&self.genesis_state, |n| &n.state)
    }

    /// The height of a block in the tree (the finalized block included).
    pub fn height_of(&self, hash: &Hash32) -> Option<u64> {
        self.node(hash).map(|n| n.height)
    }

    /// A non-final (or the finalized) block by hash.
    pub fn block(&self, hash: &Hash32) -> Option<Arc<Block>> {
        self.node(hash).and_then(|n| n.block.clone())
    }

    /// Whether the block is known (in the tree, or the finalized root).
    pub fn contains(&self, hash: &Hash32) -> bool {
        self.nodes.contains_key(hash)
    }

    /// The blocks from just above the first ancestor of the head that `known` accepts, up to the
    /// head, in ascending order; and that ancestor's height. The finalized block is always
    /// accepted as an ancestor.
    pub fn branch_to_head(&self, known: impl Fn(u64, &Hash32) -> bool) -> (u64, Vec<Arc<Block>>) {
        let mut out = Vec::new();
        let mut cursor = self.head;
        while let Some(node) = self.node(&cursor) {
            if cursor == self.finalized || known(node.height, &cursor) {
                out.reverse();
                return (node.height, out);
            }
            match &node.block {
                Some(b) => out.push(b.clone()),
                None => break,
            }
            cursor = node.parent;
        }
        out.reverse();
        (0, out)
    }

    /// Producers ranked for `slot` on top of the head, best first.
    pub fn ranked_producers(&self, slot: u64) -> Vec<MemberKey> {
        let state = self.head_state();
        rank_producers(
            self.rules.selection.rule,
            &state.candidates(&self.rules),
            &self.head,
            slot,
            self.rules.selection.fallback_ranks as usize,
        )
    }

    /// `key`'s rank for `slot` on top of the head, if it may produce.
    pub fn rank_for(&self, slot: u64, key: &MemberKey) -> Option<u32> {
        self.ranked_producers(slot)
            .iter()
            .position(|k| k == key)
            .and_then(|p| u32::try_from(p).ok())
            .map(|p| p.saturating_add(1))
    }

    /// Validates `block` and adds it to the tree, moving the head and finality as needed.
    pub fn insert(&mut self, block: Block, checks: Checks) -> Result<Inserted, BlockError> {
        let hash = block.hash();
        if self.nodes.contains_key(&hash) {
            return Err(BlockError::Duplicate { hash });
        }
        if block.header.chain_id != self.rules.chain_id {
            return Err(BlockError::WrongChain {
                expected: self.rules.chain_id,
                found: block.header.chain_id,
            });
        }
        let (_, finalized_height) = self.finalized();
        let parent = match self.nodes.get(&block.header.prev_hash) {
            Some(p) => p,
            None if block.header.height <= finalized_height => {
                return Err(BlockError::ConflictsWithFinalized {
                    height: block.header.height,
                    finalized: finalized_height,
                })
            }
            None => {
                return Err(BlockError::UnknownParent {
                    parent: block.header.prev_hash,
                    height: block.header.height,
                })
            }
        };
        let validated = validate_block(
            &self.rules,
            &block.header.prev_hash,
            &parent.state,
            &block,
            checks,
            self.verify_threads,
        )?;
        let bonus = self
            .rules
            .selection
            .fallback_ranks
            .saturating_add(1)
            .saturating_sub(validated.rank);
        let node = Node {
            parent: block.header.prev_hash,
            height: block.header.height,
            score: parent.score.saturating_add(u128::from(bonus)),
            rank: validated.rank,
            state: validated.state,
            block: Some(Arc::new(block)),
            events: validated.events,
        };
        let (height, rank) = (node.height, node.rank);
        let better = match self.head_node() {
            Some(head) => node.score > head.score || (node.score == head.score && hash < self.head),
            None => true,
        };
        self.nodes.insert(hash, node);
        let (mut fork_height, mut new_branch) = (0, Vec::new());
        let mut events = Vec::new();
        if better {
            (fork_height, new_branch) = self.branch_from(self.head, hash);
            for b in &new_branch {
                if let Some(n) = self.nodes.get(&b.hash()) {
                    events.extend(n.events.iter().cloned());
                }
            }
            self.head = hash;
        }
        Ok(Inserted {
            hash,
            height,
            rank,
            head_changed: better,
            finalized_height: self.finalized().1,
            events,
            fork_height,
            new_branch,
        })
    }

    /// The common ancestor's height of `old` and `new`, and `new`'s blocks above it, ascending.
    /// Both descend from the finalized block, so the walk meets at or above it.
    fn branch_from(&self, old: Hash32, new: Hash32) -> (u64, Vec<Arc<Block>>) {
        let height = |h: &Hash32| self.node(h).map_or(0, |n| n.height);
        let parent = |h: &Hash32| self.node(h).map(|n| n.parent);
        let (mut a, mut b) = (old, new);
        let mut branch = Vec::new();
        while height(&b) > height(&a) {
            match self.node(&b) {
                Some(n) => {
                    if let Some(block) = &n.block {
                        branch.push(block.clone());
                    }
                    b = n.parent;
                }
                None => break,
            }
        }
        while height(&a) > height(&b) {
            match parent(&a) {
                Some(p) => a = p,
                None => break,
            }
        }
        while a != b {
            let (Some(na), Some(nb)) = (self.node(&a), self.node(&b)) else {
                break;
            };
            if let Some(block) = &nb.block {
                branch.push(block.clone());
            }
            a = na.parent;
            b = nb.parent;
        }
        branch.reverse();
        (height(&b), branch)
    }

    fn ancestor_at(&self, from: Hash32, height: u64) -> Option<Hash32> {
        let mut cursor = from;
        loop {
            let node = self.node(&cursor)?;
            if node.height == height {
                return Some(cursor);
            }
            if node.height < height {
                return None;
            }
            cursor = node.parent;
        }
    }

    /// Makes the known block `hash` final (a quorum certified it): it becomes the root, every
    /// block not descending from it is dropped, and the head moves onto its branch if it was
    /// elsewhere. Returns the blocks that became final, ascending, with their market events.
    pub fn finalize(&mut self, hash: &Hash32) -> Result<Finalized, BlockError> {
        let (old_final, old_height) = self.finalized();
        if *hash == old_final {
            return Ok(Finalized::default());
        }
        let Some(target) = self.node(hash).map(|n| n.height) else {
            return Err(BlockError::FinalizeUnknown { hash: *hash });
        };
        if target <= old_height {
            return Err(BlockError::ConflictsWithFinalized {
                height: target,
                finalized: old_height,
            });
        }
        let mut newly = Vec::new();
        let mut cursor = *hash;
        while cursor != old_final {
            let Some(n) = self.node(&cursor) else { break };
            if let Some(b) = &n.block {
                newly.push((b.clone(), n.events.clone()));
            }
            cursor = n.parent;
        }
        newly.reverse();
        let old_head = self.head;
        let keep: Vec<Hash32> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.height >= target)
            .filter(|(h, _)| self.ancestor_at(**h, target) == Some(*hash))
            .map(|(h, _)| *h)
            .collect();
        let mut kept = HashMap::with_capacity(keep.len());
        for h in keep {
            if let Some(n) = self.nodes.remove(&h) {
                kept.insert(h, n);
            }
        }
        self.nodes = kept;
        self.finalized = *hash;
        let mut switch = None;
        if !self.nodes.contains_key(&old_head) {
            let best = self
                .nodes
                .iter()
                .max_by(|(ha, a), (hb, b)| a.score.cmp(&b.score).then(hb.cmp(ha)))
                .map(|(h, _)| *h)
                .unwrap_or(*hash);
            self.head = best;
            // The new branch from the old root: the blocks just finalized, then the head's.
            let (_, above) = self.branch_to_head(|_, _| false);
            let mut branch: Vec<Arc<Block>> = newly.iter().map(|(b, _)| b.clone()).collect();
            branch.extend(above);
            switch = Some((old_height, branch));
        }
        Ok(Finalized {
            blocks: newly,
            head_switch: switch,
        })
    }

    /// Builds and signs a block for `slot` on top of the head, taking the candidates that are
    /// valid in order (up to the block limit). Does not insert it.
    pub fn produce(
        &self,
        sk: &SecretKey,
        slot: u64,
        candidates: &[SignedTransaction],
    ) -> Result<Produced, BlockError> {
        let producer = MemberKey::from_secret(sk);
        let state = self.head_state();
        if slot <= state.slot {
            return Err(BlockError::SlotNotAfterParent {
                parent_slot: state.slot,
                found: slot,
            });
        }
        if self.rank_for(slot, &producer).is_none() {
            return Err(BlockError::ProducerNotElected { producer, slot });
        }
        let mut next = state.clone();
        let mut included = Vec::new();
        let mut rejected = Vec::new();
        for t in candidates {
            if included.len() >= self.rules.max_block_txs as usize {
                break;
            }
            match self
                .rules
                .verify_signature(state.members(), t)
                .and_then(|()| next.apply_tx(&self.rules, t))
            {
                Ok(()) => included.push(t.clone()),
                Err(e) => rejected.push((t.id(), e)),
            }
        }
        let height = state
            .height
            .checked_add(1)
            .ok_or(BlockError::Overflow { what: "height" })?;
        next.finish_block(&self.rules, height, slot, producer);
        let txids: Vec<Hash32> = included.iter().map(|t| t.id()).collect();
        let header = BlockHeader {
            chain_id: self.rules.chain_id,
            height,
            slot,
            prev_hash: self.head,
            tx_root: merkle::root(&txids),
            tx_count: u32::try_from(included.len())
                .map_err(|_| BlockError::Overflow { what: "tx_count" })?,
            state_hash: next.hash(),
            producer,
        };
        Ok(Produced {
            block: Block::seal(header, included, sk),
            rejected,
        })
    }
}
