//! Actors: one per device link, the ledger actor and the market actor, and what they share.
//!
//! Thin shells that do I/O, timers and metrics around the pure cores in `gridlet-ledger` and
//! `gridlet-drivers`. The pieces that decide (the community node's block production and sync,
//! the release policy) are sans-IO state machines here that return effects.
//!
//! - [`battery`]: the battery storage actor (polling, releasing, safe state).
//! - [`bids`]: this home's sealed auction bids (commit, reveal, salt kept with fsync).
//! - [`bus`]: the community bus over MQTT and the embedded broker.
//! - [`devices`]: the PV inverter and grid meter actors (DSMR serial/TCP, MQTT).
//! - [`home_assistant`]: MQTT discovery, state and availability for Home Assistant.
//! - [`journal`]: the fsync'd battery release journal (exactly-once release).
//! - [`ledger_actor`]: the ledger actor and the sync-arbiter worker running the node.
//! - [`readings`]: signed interval meter readings for billing (sans-IO).
//! - [`release`]: releasing traded energy from the battery (journal first, safe state).
//! - [`market_actor`]: release orders to the battery, deliveries to signed receipts, offers and purchases.
//! - [`schedule`]: day-ahead schedule: local QP step, ADMM aggregator, centralized optimum.
//! - [`strategy`]: when to offer and when to buy, from the device readings (pure).
//! - [`node`]: the community node (mempool, production, validation, sync) as a state machine.

pub mod battery;
pub mod bids;
pub mod bus;
pub mod day_ahead;
pub mod devices;
pub mod dispatch_session;
pub mod home_assistant;
pub mod journal;
pub mod ledger_actor;
pub mod market_actor;
pub mod metrics;
pub mod node;
pub mod readings;
pub mod release;
pub mod schedule;
pub mod strategy;
