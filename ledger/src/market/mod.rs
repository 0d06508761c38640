//! The energy market, executed identically by every node as part of the ledger state machine.
//!
//! - [`clearing`]: the sealed-bid auction clearing rule (shared with `gridlet market clear`).
//! - [`book`]: attestations, sale contracts, trades in escrow, auction rounds.
//! - [`contracts`]: the transaction rules and the end-of-block steps (releases, refunds,
//!   expiries, round clearing), which return [`MarketEvent`]s for the actors to act on.
//!
//! Units: energy in Wh, prices in micro-credits per kWh, money in micro-credits; every
//! division rounds down and every split is by largest remainder, so totals are conserved.

pub mod billing;
pub mod book;
pub mod clearing;
pub mod contracts;
pub mod day_ahead;
pub mod dispatch;
mod retention;
mod settlement;

pub use book::{DayRecord, MarketEvent, MarketState};
pub use clearing::{clear, ClearingInput, ClearingOutput, Pricing};

use crate::crypto::{Hash32, MemberKey};
use crate::units::{Price, WattHours};

/// The digest a home's battery signs to attest generation.
pub fn attestation_digest(
    chain_id: &Hash32,
    home: &MemberKey,
    interval: u64,
    energy_wh: WattHours,
) -> Hash32 {
    Hash32::tagged(
        b"gridlet/attest/v1",
        &[
            &chain_id.0,
            &home.0,
            &interval.to_be_bytes(),
            &energy_wh.get().to_be_bytes(),
        ],
    )
}

/// The digest a seller's battery signs to report delivery.
pub fn receipt_digest(chain_id: &Hash32, trade: &Hash32, delivered_wh: WattHours) -> Hash32 {
    Hash32::tagged(
        b"gridlet/receipt/v1",
        &[&chain_id.0, &trade.0, &delivered_wh.get().to_be_bytes()],
    )
}

/// Where a height stands in the auction rounds (docs/protocol.md §12.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuctionPhase {
    /// The round the height belongs to.
    pub round: u64,
    /// Commit phase (else reveal phase).
    pub commit: bool,
    /// The round's last block (it clears at its end).
    pub last: bool,
}

/// The auction phase of `height` with rounds of `round_blocks` (0: auctions off).
pub fn auction_phase(round_blocks: u64, height: u64) -> Option<AuctionPhase> {
    if round_blocks == 0 {
        return None;
    }
    let index = height.saturating_sub(1);
    let round = index.checked_div(round_blocks)?;
    let offset = index.checked_rem(round_blocks)?;
    Some(AuctionPhase {
        round,
        commit: offset < round_blocks.div_ceil(2),
        last: offset == round_blocks.saturating_sub(1),
    })
}

/// The commitment of a sealed bid: only this is on chain until the reveal.
pub fn bid_commitment(
    chain_id: &Hash32,
    round: u64,
    buyer: &MemberKey,
    energy_wh: WattHours,
    price: Price,
    salt: &Hash32,
) -> Hash32 {
    Hash32::tagged(
        b"gridlet/bid/v1",
        &[
            &chain_id.0,
            &round.to_be_bytes(),
            &buyer.0,
            &energy_wh.get().to_be_bytes(),
            &price.get().to_be_bytes(),
            &salt.0,
        ],
    )
}

/// The id of a seller's trade from an auction round.
pub fn auction_trade_id(chain_id: &Hash32, round: u64, seller: &MemberKey) -> Hash32 {
    Hash32::tagged(
        b"gridlet/auction-trade/v1",
        &[&chain_id.0, &round.to_be_bytes(), &seller.0],
    )
}
