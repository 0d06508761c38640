//! Actors: one per device link, the ledger actor and the market actor.
//!
//! Thin shells that do I/O, timers and metrics around the pure cores in `gridlet-ledger`
//! and `gridlet-drivers`. Filled by the gateway issue; empty until then.
