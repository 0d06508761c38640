//! The energy market: auction clearing (and, as they land, the sale, purchase, escrow and
//! delivery contracts executed by the ledger's state machine).

pub mod clearing;

pub use clearing::{clear, ClearingInput, ClearingOutput, Pricing};
