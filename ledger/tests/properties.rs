//! Property tests: encodings round-trip, tampering is detected, Merkle proofs hold, and credits
//! are conserved against a plain model of balances.

mod common;

use gridlet_ledger::MicroCredits;
use std::collections::BTreeMap;

use common::Community;
use gridlet_ledger::merkle;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::state::Rules;
use gridlet_ledger::{Hash32, LedgerState, SignedTransaction, Transaction, TxPayload};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn transactions_round_trip(from in 0usize..4, to in 0usize..4, amount: u64, nonce: u64, fee: u64) {
        let c = Community::new(4, SelectionRule::Paper);
        let tx = Transaction {
            chain_id: c.genesis.hash(),
            sender: c.member(from),
            nonce,
            fee: MicroCredits::new(fee),
            payload: TxPayload::Transfer { to: c.member(to), amount: MicroCredits::new(amount) },
        }
        .sign(&c.keys[from]);
        let back = SignedTransaction::decode(tx.bytes()).unwrap();
        prop_assert_eq!(back.bytes(), tx.bytes());
        prop_assert_eq!(back.id(), tx.id());
        prop_assert!(back.verify_signature(&c.keys[from].public_key()));
    }

    #[test]
    fn any_changed_byte_invalidates_a_transaction(index in 0usize..200, flip in 1u8..=255) {
        let c = Community::new(2, SelectionRule::Paper);
        let tx = c.transfer(0, 1, 77, 0);
        let rules = Rules::from_genesis(&c.genesis).unwrap();
        let mut bytes = tx.bytes().to_vec();
        let i = index % bytes.len();
        bytes[i] ^= flip;
        if let Ok(decoded) = SignedTransaction::decode(&bytes) {
            let members = gridlet_ledger::LedgerState::genesis(&c.genesis).members().clone();
            prop_assert!(rules.verify_signature(&members, &decoded).is_err());
        }
    }

    #[test]
    fn merkle_proofs_verify_for_their_leaf_only(n in 1usize..300, pick in any::<prop::sample::Index>(), other in any::<prop::sample::Index>()) {
        let ids: Vec<Hash32> = (0..n as u64).map(|i| Hash32::sha256(&i.to_le_bytes())).collect();
        let root = merkle::root(&ids);
        let i = pick.index(n);
        let proof = merkle::prove(&ids, i).unwrap();
        prop_assert!(merkle::verify(&root, &ids[i], &proof));
        let j = other.index(n);
        if j != i {
            prop_assert!(!merkle::verify(&root, &ids[j], &proof));
        }
        let mut dup = ids.clone();
        dup.push(ids[n - 1]);
        prop_assert_ne!(merkle::root(&dup), root);
    }

    #[test]
    fn credits_are_conserved_and_match_a_plain_model(
        ops in prop::collection::vec((0usize..4, 0usize..4, 0u64..600_000, 0u64..3), 1..60)
    ) {
        let c = Community::new(4, SelectionRule::Paper);
        let rules = Rules::from_genesis(&c.genesis).unwrap();
        let mut state = LedgerState::genesis(&c.genesis);
        let fee = c.genesis.tx_fee.get();
        let mut balances: BTreeMap<usize, u64> = (0..4).map(|i| (i, 1_000_000)).collect();
        let mut nonces = [0u64; 4];
        let mut community = 0u64;
        for (from, to, amount, nonce_skew) in ops {
            // nonce_skew 0 is the right nonce; others replay or skip ahead.
            let nonce = match nonce_skew { 0 => nonces[from], 1 => nonces[from].wrapping_sub(1), _ => nonces[from] + 1 };
            let tx = c.transfer(from, to, amount, nonce);
            let model_ok = nonce == nonces[from] && amount > 0 && from != to && balances[&from] >= amount + fee;
            let result = state.apply_tx(&rules, &tx);
            prop_assert_eq!(result.is_ok(), model_ok, "{:?}", result);
            if model_ok {
                *balances.get_mut(&from).unwrap() -= amount + fee;
                *balances.get_mut(&to).unwrap() += amount;
                nonces[from] += 1;
                community += fee;
            }
            prop_assert_eq!(state.total_credits(), 4_000_000u128);
        }
        for i in 0..4 {
            prop_assert_eq!(state.account(&c.member(i)).balance.get(), balances[&i]);
            prop_assert_eq!(state.account(&c.member(i)).nonce, nonces[i]);
        }
        prop_assert_eq!(state.community_balance(), community as i64);
    }
}
