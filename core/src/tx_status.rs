//! What became of a transaction this node saw: waiting, in a block, final, or refused (and
//! why) — so an API that answered "submitted" can be asked later whether it landed.

use std::collections::{HashMap, VecDeque};

use gridlet_ledger::Hash32;
use serde::Serialize;

/// Transactions remembered, at most (the oldest are forgotten first).
const REMEMBERED: usize = 100_000;

/// A transaction's fate as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TxStatus {
    /// Waiting in this node's mempool.
    Pending,
    /// In a block of this node's chain, not final yet.
    Included {
        /// The block's height.
        height: u64,
    },
    /// In a quorum-final block: it happened, on every home.
    Final {
        /// The block's height.
        height: u64,
    },
    /// Refused: it will never be in a block.
    Refused {
        /// Why.
        reason: String,
    },
    /// Never seen here (or forgotten long ago).
    Unknown,
}

/// Heights of recently included transactions and reasons of refused ones, bounded.
#[derive(Debug, Default)]
pub struct TxTracker {
    heights: HashMap<Hash32, u64>,
    refused: HashMap<Hash32, String>,
    order: VecDeque<Hash32>,
}

impl TxTracker {
    fn remember(&mut self, id: Hash32) {
        self.order.push_back(id);
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.heights.remove(&old);
                self.refused.remove(&old);
            }
        }
    }

    /// The transactions of a block at `height` (which may later leave the chain: the status
    /// checks the chain again).
    pub fn included(&mut self, ids: impl IntoIterator<Item = Hash32>, height: u64) {
        for id in ids {
            self.refused.remove(&id);
            if self.heights.insert(id, height).is_none() {
                self.remember(id);
            }
        }
    }

    /// A transaction refused for good.
    pub fn refused(&mut self, id: Hash32, reason: String) {
        if !self.heights.contains_key(&id) && self.refused.insert(id, reason).is_none() {
            self.remember(id);
        }
    }

    /// The status of `id`: `pending` if the mempool holds it; `in_chain(height)` says whether
    /// the node's canonical block at that height contains it; `final_height` is the node's.
    pub fn status(
        &self,
        id: &Hash32,
        pending: bool,
        in_chain: impl Fn(u64) -> bool,
        final_height: u64,
    ) -> TxStatus {
        if let Some(h) = self.heights.get(id).copied().filter(|h| in_chain(*h)) {
            return if h <= final_height {
                TxStatus::Final { height: h }
            } else {
                TxStatus::Included { height: h }
            };
        }
        if pending {
            return TxStatus::Pending;
        }
        match self.refused.get(id) {
            Some(reason) => TxStatus::Refused {
                reason: reason.clone(),
            },
            None => TxStatus::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_moves_from_pending_to_final_and_a_refusal_keeps_its_reason() {
        let mut t = TxTracker::default();
        let (a, b) = (Hash32::sha256(b"a"), Hash32::sha256(b"b"));
        assert_eq!(t.status(&a, true, |_| true, 0), TxStatus::Pending);
        t.included([a], 5);
        assert_eq!(
            t.status(&a, false, |_| true, 4),
            TxStatus::Included { height: 5 }
        );
        assert_eq!(
            t.status(&a, false, |_| true, 5),
            TxStatus::Final { height: 5 }
        );
        // Its block left the chain (a branch switch): back in the mempool, it is pending.
        assert_eq!(t.status(&a, true, |_| false, 5), TxStatus::Pending);
        t.refused(b, "stale nonce".into());
        assert_eq!(
            t.status(&b, false, |_| true, 9),
            TxStatus::Refused {
                reason: "stale nonce".into()
            }
        );
        assert_eq!(
            t.status(&Hash32::sha256(b"c"), false, |_| true, 9),
            TxStatus::Unknown
        );
    }
}
