//! A small community for tests: deterministic keys, a genesis, and helpers to sign transfers
//! and produce blocks as whichever member is elected.

#![allow(dead_code)]

use gridlet_ledger::chain::Checks;
use gridlet_ledger::crypto::deterministic_key;
use gridlet_ledger::genesis::Member;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::MicroCredits;
use gridlet_ledger::{Block, Chain, Genesis, MemberKey, SignedTransaction, Transaction, TxPayload};
use secp256k1::SecretKey;

pub struct Community {
    pub genesis: Genesis,
    pub keys: Vec<SecretKey>,
}

impl Community {
    pub fn new(members: usize, rule: SelectionRule) -> Community {
        let keys: Vec<SecretKey> = (0..members as u64)
            .map(|i| deterministic_key(42, i))
            .collect();
        let list = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Member {
                name: format!("home-{i}"),
                key: MemberKey::from_secret(k),
                attestor: MemberKey::from_secret(&deterministic_key(43, i as u64)),
                // Room for the market tests' many attestations; the bound itself is tested
                // with a house-sized home in market.rs.
                equipment: gridlet_ledger::genesis::Equipment::device(200_000, 10_000),
                balance: MicroCredits::new(1_000_000),
            })
            .collect();
        let genesis = Genesis::with_defaults("test-community", 0, list, rule);
        Community { genesis, keys }
    }

    pub fn key_of(&self, member: &MemberKey) -> &SecretKey {
        self.keys
            .iter()
            .find(|k| MemberKey::from_secret(k) == *member)
            .expect("a member of this community")
    }

    /// A certificate for `block` signed by the first `signers` members, in key order.
    pub fn certify(
        &self,
        checkpoint: u64,
        block: &Block,
        signers: usize,
    ) -> gridlet_ledger::finality::Certificate {
        let block = gridlet_ledger::finality::BlockRef {
            height: block.header.height,
            hash: block.hash(),
        };
        gridlet_ledger::finality::Certificate::signed_by(
            &self.genesis.hash(),
            checkpoint,
            0,
            block,
            &self.keys[..signers],
        )
    }

    pub fn member(&self, i: usize) -> MemberKey {
        MemberKey::from_secret(&self.keys[i])
    }

    /// Any payload, signed by member `from` with `nonce`.
    pub fn sign(&self, from: usize, nonce: u64, payload: TxPayload) -> SignedTransaction {
        Transaction {
            chain_id: self.genesis.hash(),
            sender: self.member(from),
            nonce,
            fee: self.genesis.tx_fee,
            payload,
        }
        .sign(&self.keys[from])
    }

    pub fn transfer(&self, from: usize, to: usize, amount: u64, nonce: u64) -> SignedTransaction {
        Transaction {
            chain_id: self.genesis.hash(),
            sender: self.member(from),
            nonce,
            fee: self.genesis.tx_fee,
            payload: TxPayload::Transfer {
                to: self.member(to),
                amount: MicroCredits::new(amount),
            },
        }
        .sign(&self.keys[from])
    }

    /// Produces the next block as the producer of rank `rank` (1 = elected), in `slot`.
    pub fn produce_ranked(
        &self,
        chain: &Chain,
        slot: u64,
        rank: usize,
        txs: &[SignedTransaction],
    ) -> Block {
        let producer = chain.ranked_producers(slot)[rank - 1];
        chain
            .produce(self.key_of(&producer), slot, txs)
            .expect("the ranked producer may produce")
            .block
    }

    pub fn produce(&self, chain: &Chain, slot: u64, txs: &[SignedTransaction]) -> Block {
        self.produce_ranked(chain, slot, 1, txs)
    }

    /// Extends `chain` by `blocks` empty blocks in consecutive slots, returning them.
    pub fn extend(&self, chain: &mut Chain, blocks: usize) -> Vec<Block> {
        let mut out = Vec::new();
        for _ in 0..blocks {
            let slot = chain.head_state().slot + 1;
            let b = self.produce(chain, slot, &[]);
            chain.insert(b.clone(), Checks::FULL).expect("valid block");
            out.push(b);
        }
        out
    }
}
