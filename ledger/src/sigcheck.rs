//! Signature checks of a block's transactions, spread over threads. Consensus code fails
//! closed: a verifier thread that dies makes the block invalid.

use crate::error::{BlockError, TxError};
use crate::tx::SignedTransaction;

/// Runs `verify` over `txs` on up to `threads` threads; the first failure in block order wins.
/// A thread that dies (panics) fails the block: consensus code fails closed.
pub(crate) fn verify_all(
    txs: &[SignedTransaction],
    threads: usize,
    verify: impl Fn(&SignedTransaction) -> Result<(), TxError> + Sync,
) -> Result<(), BlockError> {
    let first_bad = |offset: usize, chunk: &[SignedTransaction]| {
        chunk
            .iter()
            .enumerate()
            .find_map(|(i, t)| verify(t).err().map(|e| (offset.saturating_add(i), e)))
    };
    let threads = threads.max(1);
    if threads == 1 || txs.len() < 64 {
        return match first_bad(0, txs) {
            Some((index, error)) => Err(BlockError::InvalidTransaction { index, error }),
            None => Ok(()),
        };
    }
    let chunk = txs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = txs
            .chunks(chunk)
            .enumerate()
            .map(|(n, c)| {
                let first = n.saturating_mul(chunk);
                let end = first.saturating_add(c.len());
                (first, end, scope.spawn(move || first_bad(first, c)))
            })
            .collect();
        let mut earliest: Option<BlockError> = None;
        for (first, end, h) in handles {
            // Shares are in block order: the first share with a failure decides.
            let outcome = match h.join() {
                Ok(None) => continue,
                Ok(Some((index, error))) => BlockError::InvalidTransaction { index, error },
                Err(_) => BlockError::VerifierFailed { first, end },
            };
            earliest.get_or_insert(outcome);
        }
        earliest.map_or(Ok(()), Err)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{deterministic_key, Hash32, MemberKey};
    use crate::tx::{Transaction, TxPayload};
    use crate::units::MicroCredits;

    fn transfers(n: u64) -> Vec<SignedTransaction> {
        let sk = deterministic_key(1, 1);
        let to = MemberKey::from_secret(&deterministic_key(1, 2));
        (0..n)
            .map(|nonce| {
                Transaction {
                    chain_id: Hash32([7; 32]),
                    sender: MemberKey::from_secret(&sk),
                    nonce,
                    fee: MicroCredits::new(1),
                    payload: TxPayload::Transfer {
                        to,
                        amount: MicroCredits::new(1),
                    },
                }
                .sign(&sk)
            })
            .collect()
    }

    #[test]
    fn a_verifier_thread_that_panics_rejects_the_block() {
        let txs = transfers(200);
        let panics_on_150 = |t: &SignedTransaction| {
            if t.tx().nonce == 150 {
                panic!("verifier died");
            }
            Ok(())
        };
        let refused = verify_all(&txs, 4, panics_on_150).unwrap_err();
        // 200 transactions on 4 threads: shares of 50, the fourth holds 150..200.
        assert_eq!(
            refused,
            BlockError::VerifierFailed {
                first: 150,
                end: 200
            }
        );
        assert_eq!(verify_all(&txs, 4, |_| Ok(())), Ok(()));
    }

    #[test]
    fn the_first_bad_signature_in_block_order_wins_across_threads() {
        let txs = transfers(200);
        let bad = |t: &SignedTransaction| match t.tx().nonce {
            30 | 120 => Err(TxError::BadSignature {
                sender: t.tx().sender,
            }),
            _ => Ok(()),
        };
        for threads in [1, 4] {
            assert_eq!(
                verify_all(&txs, threads, bad),
                Err(BlockError::InvalidTransaction {
                    index: 30,
                    error: TxError::BadSignature {
                        sender: txs[30].tx().sender
                    }
                })
            );
        }
    }
}
