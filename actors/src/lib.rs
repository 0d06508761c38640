//! Actors: one per device link, the ledger actor and the market actor, and what they share.
//!
//! Thin shells that do I/O, timers and metrics around the pure cores in `gridlet-core`,
//! `gridlet-ledger` and `gridlet-drivers`: a handler takes a message, calls the core, and
//! carries out the effects it returns. Nothing here decides; see `docs/architecture.md`.
//!
//! - [`battery`]: the battery storage actor (polling, releasing, safe state).
//! - [`bids`]: this home's bid book on disk (salts kept with fsync).
//! - [`bus`]: the community bus over MQTT and the embedded broker.
//! - [`clock`]: the gateway's one clock (real, or the scenario clock of `gridlet sim`).
//! - [`day_ahead`]: the day-ahead actor (plans, follows the plan, submits readings).
//! - [`devices`]: the PV inverter and grid meter actors (DSMR serial/TCP, MQTT).
//! - [`home_assistant`]: MQTT discovery, state and availability for Home Assistant.
//! - [`journal`]: the fsync'd battery release journal (exactly-once release).
//! - [`ledger_actor`]: the ledger actor and the sync-arbiter worker running the node.
//! - [`market_actor`]: release orders to the battery, deliveries to signed receipts, offers and purchases.
//! - [`metrics`]: the metric names and their descriptions.

pub mod attestor;
pub mod battery;
pub mod bids;
pub mod broker;
pub mod bus;
pub mod clock;
pub mod day_ahead;
pub mod devices;
pub mod home_assistant;
pub mod journal;
pub mod ledger_actor;
pub mod market_actor;
pub mod metrics;
pub mod net_power;
mod sunspec_meter;
