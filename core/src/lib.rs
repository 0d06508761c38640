//! The gateway's pure rules: every decision a home gateway takes, as sans-IO state machines.
//!
//! Nothing here reads a clock, an RNG, a socket or a file: time arrives as `now_ms` or a slot,
//! randomness as an argument, and state machines return effects that the actors (`gridlet-actors`)
//! carry out. Our code here never uses actix, tokio, metrics or tracing (the Malachite engine
//! behind [`finality`] pulls tokio without features and tracing in transitively; it does no I/O
//! either); the store behind the node is the ledger's [`gridlet_ledger::store::BlockStore`] trait.
//!
//! # Layout
//! - [`node`]: the community node (mempool, production, validation, sync) as a state machine.
//! - [`finality`]: quorum finality, the adapter over the Malachite Tendermint engine.
//! - [`local_tx`]: this home's own transactions, checked before they get a nonce.
//! - [`orphans`]: blocks waiting for their parent, bounded.
//! - [`tx_status`]: what became of a transaction (pending, included, final, refused).
//! - [`wire`]: the messages gateways exchange on the community bus.
//! - [`strategy`]: when to offer and when to buy, from the device readings.
//! - [`net_power`]: a buyer's signed live net power, which a delivering seller follows.
//! - [`battery_energy`]: the battery's charge and discharge energy from its power readings.
//! - [`release`]: releasing traded energy from the battery (journal first, safe state).
//! - [`bids`]: this home's sealed auction bids (commit, reveal).
//! - [`readings`]: signed interval meter readings for billing.
//! - [`reference_day`]: the best possible day with perfect foresight (the markets' yardstick).
//! - [`spare`]: what the battery can give without the home importing more, by its forecast.
//! - [`schedule`]: day-ahead schedule: local QP step, ADMM aggregator, centralized optimum.
//! - [`dispatch_session`]: one home's part of the day-ahead ADMM over the bus.
//! - [`day_plan`]: which day to plan, when to (re)submit commitments and readings, which
//!   set-point to follow.

// Every decision here is consensus-adjacent: do not panic or overflow silently (the ledger's
// lint block, after lighthouse's state_processing).
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

pub mod battery_energy;
pub mod bids;
pub mod day_plan;
pub mod dispatch_session;
pub mod energy_today;
pub mod finality;
pub mod local_tx;
pub mod net_power;
pub mod node;
pub mod orphans;
pub mod readings;
pub mod reference_day;
pub mod release;
pub mod schedule;
pub mod spare;
pub mod strategy;
pub mod tx_status;
pub mod wire;
