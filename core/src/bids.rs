//! Sealed bids of this home in the community's auctions: commit in a round's commit phase,
//! reveal in its reveal phase. The salt is the only thing that opens a commitment, and no peer
//! can give it back, so it is written to disk with fsync before the commitment is submitted
//! (a bid committed and then forgotten by a restart would never be revealed).
//!
//! [`BidBook::step`] is pure: given the next block height it says what to submit; the market
//! actor persists the book before it sends anything.

use gridlet_ledger::market::{auction_phase, bid_commitment};
use gridlet_ledger::{Hash32, MemberKey, Price, TxPayload, WattHours};
use serde::{Deserialize, Serialize};

/// One sealed bid and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBid {
    /// Energy wanted.
    pub energy_wh: WattHours,
    /// Price.
    pub price: Price,
    /// The secret that hides the bid until the reveal.
    pub salt: Hash32,
    /// The round it was committed to.
    pub round: Option<u64>,
    /// Whether the reveal was submitted.
    pub revealed: bool,
}

/// What became of a bid, for the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BidProgress {
    /// Waiting for a commit phase.
    Waiting,
    /// Committed; the reveal comes in the round's reveal phase.
    Committed,
    /// Revealed; the round clears at its last block.
    Revealed,
}

/// This home's bids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidBook {
    /// Bids not yet finished (a revealed bid leaves once its round is over).
    pub bids: Vec<SealedBid>,
}

/// Blocks of margin before a phase ends: a transaction submitted in the phase's last block
/// would likely land in the next phase and be refused.
const MARGIN: u64 = 2;

impl BidBook {
    /// Adds a bid; it is committed in the next commit phase with enough blocks left.
    pub fn add(&mut self, energy_wh: WattHours, price: Price, salt: Hash32) {
        self.bids.push(SealedBid {
            energy_wh,
            price,
            salt,
            round: None,
            revealed: false,
        });
    }

    /// Progress of each bid.
    pub fn progress(&self) -> Vec<(SealedBid, BidProgress)> {
        self.bids
            .iter()
            .map(|b| {
                let p = match (b.round, b.revealed) {
                    (None, _) => BidProgress::Waiting,
                    (Some(_), false) => BidProgress::Committed,
                    (Some(_), true) => BidProgress::Revealed,
                };
                (b.clone(), p)
            })
            .collect()
    }

    /// What to submit now that the next block will be `next_height`. Changes the book: persist
    /// it before submitting.
    pub fn step(
        &mut self,
        chain_id: &Hash32,
        me: &MemberKey,
        round_blocks: u64,
        next_height: u64,
    ) -> Vec<TxPayload> {
        let mut out = Vec::new();
        let (Some(now), Some(later)) = (
            auction_phase(round_blocks, next_height),
            auction_phase(round_blocks, next_height.saturating_add(MARGIN)),
        ) else {
            return out;
        };
        let same_phase = now.round == later.round && now.commit == later.commit;
        // One commitment per buyer and round (protocol §12.5).
        let mut committed_this_round = self.bids.iter().any(|b| b.round == Some(now.round));
        for b in &mut self.bids {
            match b.round {
                None if now.commit && same_phase && !committed_this_round => {
                    b.round = Some(now.round);
                    committed_this_round = true;
                    out.push(TxPayload::BidCommit {
                        round: now.round,
                        commitment: bid_commitment(
                            chain_id,
                            now.round,
                            me,
                            b.energy_wh,
                            b.price,
                            &b.salt,
                        ),
                    });
                }
                Some(r) if r == now.round && !now.commit && !b.revealed => {
                    b.revealed = true;
                    out.push(TxPayload::BidReveal {
                        round: r,
                        energy_wh: b.energy_wh,
                        price: b.price,
                        salt: b.salt,
                    });
                }
                _ => {}
            }
        }
        // Rounds that are over: their bids are done (cleared, or void if never revealed).
        self.bids.retain(|b| b.round.is_none_or(|r| r >= now.round));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridlet_ledger::crypto::deterministic_key;

    #[test]
    fn commits_in_a_commit_phase_with_margin_then_reveals_then_forgets() {
        let chain = Hash32([9; 32]);
        let me = MemberKey::from_secret(&deterministic_key(1, 1));
        let mut book = BidBook::default();
        book.add(WattHours::new(1_000), Price::new(200_000), Hash32([5; 32]));
        // Rounds of 20 blocks: round 0 is heights 1–20, commit 1–10, reveal 11–20.
        assert!(
            book.step(&chain, &me, 20, 9).is_empty(),
            "too close to the end of the commit phase"
        );
        assert!(book.step(&chain, &me, 20, 12).is_empty());
        let c = book.step(&chain, &me, 20, 21);
        assert_eq!(
            c,
            vec![TxPayload::BidCommit {
                round: 1,
                commitment: bid_commitment(
                    &chain,
                    1,
                    &me,
                    WattHours::new(1_000),
                    Price::new(200_000),
                    &Hash32([5; 32])
                ),
            }]
        );
        assert!(book.step(&chain, &me, 20, 22).is_empty(), "committed once");
        let r = book.step(&chain, &me, 20, 31);
        assert_eq!(
            r,
            vec![TxPayload::BidReveal {
                round: 1,
                energy_wh: WattHours::new(1_000),
                price: Price::new(200_000),
                salt: Hash32([5; 32]),
            }]
        );
        assert!(book.step(&chain, &me, 20, 32).is_empty());
        assert_eq!(book.bids.len(), 1);
        book.step(&chain, &me, 20, 41);
        assert!(book.bids.is_empty(), "finished rounds are forgotten");
        assert!(book.step(&chain, &me, 0, 41).is_empty(), "auctions off");
    }
}
