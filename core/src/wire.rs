//! The community bus's wire messages: what gateways publish to each other (JSON on MQTT, with
//! canonical ledger bytes inside as hex).

use serde::{Deserialize, Serialize};

/// A message on the community bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusMessage {
    /// A signed transaction (canonical bytes, hex).
    Tx {
        /// Hex of the signed transaction.
        hex: String,
    },
    /// A block (canonical bytes, hex).
    Block {
        /// Hex of the block.
        hex: String,
    },
    /// Ask peers for blocks from `from_height` on.
    SyncRequest {
        /// The requesting node (where answers go).
        node: String,
        /// First height wanted.
        from_height: u64,
        /// At most this many.
        max: u64,
    },
    /// Blocks answering a sync request.
    SyncResponse {
        /// The node that asked.
        node: String,
        /// Hex of the blocks, ascending.
        blocks: Vec<String>,
        /// Hex of the certificates of final blocks among them, and of the newest final block.
        #[serde(default)]
        certificates: Vec<String>,
    },
    /// A checkpoint vote, proposal or vote bundle (protocol.md §9, canonical bytes as hex).
    Consensus {
        /// Hex of the consensus message.
        hex: String,
    },
    /// A home's proposal in a day-ahead ADMM iteration (for the schedule actor, not the node).
    Proposal(crate::dispatch_session::ProposalMessage),
    /// A buying home's signed live net power while a trade delivers to it (for the seller's
    /// battery, not the node).
    NetPower(crate::net_power::NetPowerMessage),
}
