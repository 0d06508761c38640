//! Blocks waiting for their parent, bounded: a node keeps them while it syncs, but no peer can
//! grow the pool without limit or keep the node waiting forever.
//!
//! Design: at most `max_blocks` blocks and `max_bytes` of encoded blocks; when full, the
//! highest heights go first (a forged far-ahead block is the cheapest to send and the least
//! likely to attach). A block only holds production back while it is fresh (received within the
//! last [`FRESH_SLOTS`] slots): a parent that never comes stops nothing. Blocks older than
//! [`KEEP_SLOTS`] slots are dropped.

use std::collections::BTreeMap;

use gridlet_ledger::{Block, Hash32};

/// Slots during which a waiting block holds this node's production back.
pub const FRESH_SLOTS: u64 = 3;
/// Slots after which a waiting block is dropped.
pub const KEEP_SLOTS: u64 = 60;

/// A waiting block with its size and the slot it came in.
#[derive(Debug, Clone)]
struct Waiting {
    block: Block,
    bytes: usize,
    slot: u64,
}

/// What became of a block offered to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Kept.
    Kept,
    /// Kept; blocks of greater height were dropped to make room.
    KeptEvicting(usize),
    /// Not kept: the pool is full of blocks no higher than this one, or the block alone is
    /// larger than the pool.
    Refused,
}

/// The pool.
#[derive(Debug, Clone)]
pub struct OrphanPool {
    by_height: BTreeMap<u64, Vec<Waiting>>,
    blocks: usize,
    bytes: usize,
    max_blocks: usize,
    max_bytes: usize,
}

impl OrphanPool {
    /// An empty pool of at most `max_blocks` blocks and `max_bytes` encoded bytes.
    pub fn new(max_blocks: usize, max_bytes: usize) -> OrphanPool {
        OrphanPool {
            by_height: BTreeMap::new(),
            blocks: 0,
            bytes: 0,
            max_blocks,
            max_bytes,
        }
    }

    /// Blocks waiting.
    pub fn len(&self) -> usize {
        self.blocks
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.blocks == 0
    }

    /// Encoded bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Offers `block` (`bytes` long), received in `slot`.
    pub fn insert(&mut self, block: Block, bytes: usize, slot: u64) -> Admission {
        if bytes > self.max_bytes || self.max_blocks == 0 {
            return Admission::Refused;
        }
        let height = block.header.height;
        let mut evicted = 0usize;
        while self.blocks >= self.max_blocks || self.bytes.saturating_add(bytes) > self.max_bytes {
            let Some(mut top) = self.by_height.last_entry() else {
                break;
            };
            if *top.key() <= height {
                return Admission::Refused;
            }
            if let Some(w) = top.get_mut().pop() {
                self.blocks = self.blocks.saturating_sub(1);
                self.bytes = self.bytes.saturating_sub(w.bytes);
                evicted = evicted.saturating_add(1);
            }
            if top.get().is_empty() {
                top.remove();
            }
        }
        self.by_height
            .entry(height)
            .or_default()
            .push(Waiting { block, bytes, slot });
        self.blocks = self.blocks.saturating_add(1);
        self.bytes = self.bytes.saturating_add(bytes);
        if evicted == 0 {
            Admission::Kept
        } else {
            Admission::KeptEvicting(evicted)
        }
    }

    /// Drops what can never attach (at or below the finalized height) and what waited more
    /// than [`KEEP_SLOTS`] slots.
    pub fn prune(&mut self, finalized_height: u64, now_slot: u64) {
        let keep = self
            .by_height
            .split_off(&finalized_height.saturating_add(1));
        self.by_height = keep;
        for list in self.by_height.values_mut() {
            list.retain(|w| now_slot.saturating_sub(w.slot) <= KEEP_SLOTS);
        }
        self.by_height.retain(|_, list| !list.is_empty());
        self.blocks = self.by_height.values().map(Vec::len).sum();
        self.bytes = self
            .by_height
            .values()
            .flatten()
            .fold(0usize, |acc, w| acc.saturating_add(w.bytes));
    }

    /// Whether a block came in within the last [`FRESH_SLOTS`] slots (this node is catching up
    /// and should not build on its head meanwhile).
    pub fn catching_up(&self, now_slot: u64) -> bool {
        self.by_height
            .values()
            .flatten()
            .any(|w| now_slot.saturating_sub(w.slot) < FRESH_SLOTS)
    }

    /// Takes every waiting block whose parent `known` says is there now, lowest height first.
    pub fn take_ready(&mut self, known: impl Fn(&Hash32) -> bool) -> Vec<Block> {
        let ready: Vec<u64> = self
            .by_height
            .iter()
            .filter(|(_, list)| list.iter().any(|w| known(&w.block.header.prev_hash)))
            .map(|(h, _)| *h)
            .collect();
        let mut out = Vec::new();
        for h in ready {
            if let Some(list) = self.by_height.remove(&h) {
                for w in list {
                    self.blocks = self.blocks.saturating_sub(1);
                    self.bytes = self.bytes.saturating_sub(w.bytes);
                    out.push(w.block);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridlet_ledger::crypto::Signature;
    use gridlet_ledger::{BlockHeader, MemberKey};

    fn block(height: u64) -> Block {
        Block {
            header: BlockHeader {
                chain_id: Hash32([1; 32]),
                height,
                slot: height,
                prev_hash: Hash32([height as u8; 32]),
                tx_root: Hash32([0; 32]),
                tx_count: 0,
                state_hash: Hash32([0; 32]),
                producer: MemberKey::from_secret(&gridlet_ledger::crypto::deterministic_key(1, 1)),
            },
            signature: Signature::sign(
                &Hash32([0; 32]),
                &gridlet_ledger::crypto::deterministic_key(1, 1),
            ),
            transactions: Vec::new(),
        }
    }

    #[test]
    fn the_pool_stays_within_its_bounds_and_drops_the_highest_first() {
        let mut pool = OrphanPool::new(4, 4 << 20);
        for h in [10, 11, 12, 13] {
            assert_eq!(pool.insert(block(h), 1 << 20, 0), Admission::Kept);
        }
        // Full: a lower block evicts the highest; a higher one is refused.
        assert_eq!(
            pool.insert(block(5), 1 << 20, 0),
            Admission::KeptEvicting(1)
        );
        assert_eq!(
            pool.insert(block(1_000_000), 1 << 20, 0),
            Admission::Refused
        );
        assert_eq!((pool.len(), pool.bytes()), (4, 4 << 20));
        assert_eq!(
            pool.insert(block(6), 5 << 20, 0),
            Admission::Refused,
            "larger than the pool"
        );
        // Sixty 1 MiB forgeries never grow it past 4 MiB.
        for h in 0..60 {
            pool.insert(block(2_000 + h), 1 << 20, 0);
        }
        assert!(pool.bytes() <= 4 << 20 && pool.len() <= 4);
    }

    #[test]
    fn waiting_blocks_hold_production_only_while_fresh_and_age_out() {
        let mut pool = OrphanPool::new(8, 1 << 20);
        pool.insert(block(50), 100, 10);
        assert!(pool.catching_up(10) && pool.catching_up(12));
        assert!(
            !pool.catching_up(13),
            "a parent that never comes stops nothing"
        );
        pool.prune(0, 10 + KEEP_SLOTS);
        assert_eq!(pool.len(), 1);
        pool.prune(0, 11 + KEEP_SLOTS);
        assert!(pool.is_empty());
        pool.insert(block(3), 100, 0);
        pool.insert(block(9), 100, 0);
        pool.prune(5, 0);
        assert_eq!(
            pool.len(),
            1,
            "at or below the finalized height never attaches"
        );
        let known = Hash32([9; 32]);
        let ready = pool.take_ready(|h| *h == known);
        assert_eq!(ready.len(), 1);
        assert!(pool.is_empty() && pool.bytes() == 0);
    }
}
