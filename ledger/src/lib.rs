//! The gridlet community ledger.
//!
//! Every home gateway keeps the same copy of this ledger and executes it identically, so
//! everything here is pure and deterministic: no clock, no RNG, no network, no logging. Time
//! arrives as a slot number, randomness as a hash of the previous block. The only I/O lives in
//! [`store`], which persists blocks (sled) and the last slot this node signed (fsync'd file).
//!
//! # Layout
//! - [`codec`]: the canonical binary encoding (big-endian, length-prefixed, no alternatives).
//! - [`crypto`]: hashes with domain tags, member keys, low-S ECDSA signatures.
//! - [`tx`]: signed transactions and their kinds.
//! - [`trie`], [`committed_map`]: the state's incremental commitment (Merkle trie roots).
//! - [`merkle`]: RFC 6962 Merkle tree with leaf/node domain separation and inclusion proofs.
//! - [`genesis`]: the community file every transaction and block is bound to.
//! - [`market`]: auction clearing and energy contracts.
//! - [`membership`]: the member set in the state, and proposals that change it.
//! - [`state`]: balances, nonces and producer statistics; transaction rules.
//! - [`selection`]: Proof-of-Stake producer selection (`paper` and `proportional` rules).
//! - [`block`]: block headers and blocks.
//! - [`chain`]: block validation, fork choice, finalization and block production.
//! - [`finality`]: checkpoint votes, proposals and the quorum certificates that make blocks final.
//! - [`store`]: the block store trait, its sled backend, the persistent chain and the signer guard.
//!
//! The byte-level protocol is specified in `docs/protocol.md`.

// Consensus code must not panic or overflow silently (lighthouse's state_processing lints).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod block;
pub mod chain;
pub mod codec;
pub mod committed_map;
pub mod crypto;
pub mod error;
pub mod finality;
pub mod genesis;
pub mod market;
pub mod membership;
pub mod merkle;
pub mod selection;
mod sigcheck;
pub mod state;
pub mod store;
pub mod trie;
pub mod tx;
pub mod units;

pub use block::{Block, BlockHeader};
pub use chain::{Chain, Inserted};
pub use crypto::{Hash32, MemberKey, Signature};
pub use error::{BlockError, DecodeError, GenesisError, GuardLoss, StoreError, TxError};
pub use genesis::Genesis;
pub use state::LedgerState;
pub use tx::{DeliveryMode, SignedTransaction, Transaction, TxPayload};
pub use units::{MicroCredits, Price, WattHours};
