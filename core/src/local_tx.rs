//! Transactions this node signs for its own home (offers, purchases, bids, receipts, schedule
//! messages): checked against the state they will meet before they get a nonce, so a refused
//! payload is answered at once and never leaves a nonce gap that would strand every later
//! transaction of this home.

use gridlet_ledger::state::Rules;
use gridlet_ledger::{LedgerState, MemberKey, SignedTransaction, Transaction, TxError, TxPayload};
use secp256k1::SecretKey;

/// Signs `payload` as `me` with the next nonce after this home's waiting transactions, if it
/// applies on top of `head` and those (as the next block would see it); else the rule it breaks.
pub fn sign_checked(
    head: &LedgerState,
    rules: &Rules,
    waiting: &[SignedTransaction],
    me: MemberKey,
    key: &SecretKey,
    payload: TxPayload,
) -> Result<SignedTransaction, TxError> {
    let mut scratch = head.clone();
    let mut mine: Vec<&SignedTransaction> =
        waiting.iter().filter(|t| t.tx().sender == me).collect();
    mine.sort_by_key(|t| t.tx().nonce);
    for t in mine {
        // A waiting transaction that no longer applies is dropped at production; it does not
        // hold this one back.
        let _ = scratch.apply_tx(rules, t);
    }
    let tx = Transaction {
        chain_id: rules.chain_id,
        sender: me,
        nonce: scratch.account(&me).nonce,
        fee: rules.tx_fee,
        payload,
    }
    .sign(key);
    scratch.apply_tx(rules, &tx)?;
    Ok(tx)
}
