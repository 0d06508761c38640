//! The ledger state and the transaction rules.
//!
//! Design: [`LedgerState`] is a plain value; applying a transaction either changes it
//! completely or returns a [`TxError`] and leaves it untouched. Signatures are checked
//! separately ([`Rules::verify_signature`]) so that a block's signatures can be verified in
//! parallel before its transactions are applied in order.

use crate::units::{MicroCredits, Price};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use secp256k1::PublicKey;
use serde::Serialize;

use crate::codec::Writer;
use crate::committed_map::{CommittedMap, EntryValue};
use crate::crypto::{Hash32, MemberKey};
use crate::error::{GenesisError, TxError};
use crate::genesis::{Genesis, SelectionParams, StateCommitment};
use crate::market::{MarketEvent, MarketState};
use crate::membership::Membership;
use crate::selection::Candidate;
use crate::tx::{SignedTransaction, TxPayload};

const STATE_TAG: &[u8] = b"gridlet/state/v1";
const STATE_TAG_V2: &[u8] = b"gridlet/state/v2";

/// The rules fixed by genesis. Who is a member is state ([`LedgerState::membership`]).
#[derive(Debug, Clone)]
pub struct Rules {
    /// The genesis hash.
    pub chain_id: Hash32,
    /// The flat fee.
    pub tx_fee: MicroCredits,
    /// Slot length, ms.
    pub slot_ms: u64,
    /// Most transactions per block.
    pub max_block_txs: u32,
    /// Quorum finality.
    pub finality: crate::genesis::FinalityParams,
    /// Producer selection parameters.
    pub selection: SelectionParams,
    /// Main-grid tariff, micro-credits per kWh.
    pub grid_tariff: Price,
    /// Lowest bid price, micro-credits per kWh.
    pub floor_price: Price,
    /// Market rules.
    pub market: crate::genesis::MarketParams,
    /// Day-ahead scheduling, if the community uses it.
    pub schedule: Option<crate::genesis::ScheduleParams>,
}

impl Rules {
    /// The rules of a genesis.
    pub fn from_genesis(genesis: &Genesis) -> Result<Rules, GenesisError> {
        genesis.validate()?;
        // Refuse keys that are not points here, where a genesis is first read.
        genesis.member_public_keys()?;
        genesis.attestor_public_keys()?;
        Ok(Rules {
            chain_id: genesis.hash(),
            tx_fee: genesis.tx_fee,
            slot_ms: genesis.slot_ms,
            max_block_txs: genesis.max_block_txs,
            finality: genesis.finality.clone(),
            selection: genesis.selection.clone(),
            grid_tariff: genesis.grid_tariff,
            floor_price: genesis.floor_price,
            market: genesis.market.clone(),
            schedule: genesis.schedule.clone(),
        })
    }

    /// The last height at which a trade of `energy` released at `release` may report its
    /// delivery: `release + delivery_blocks + ⌈energy_wh × 3 600 000 / (delivery_power_w ×
    /// slot_ms)⌉` (protocol.md §12.3), saturating.
    pub fn delivery_deadline(&self, release: u64, energy: crate::units::WattHours) -> u64 {
        let per_slot_mwh = u128::from(self.market.delivery_power_w)
            .saturating_mul(u128::from(self.slot_ms))
            .max(1);
        let need = u128::from(energy.get()).saturating_mul(3_600_000);
        let slots = need.div_ceil(per_slot_mwh);
        release
            .saturating_add(self.market.delivery_blocks)
            .saturating_add(u64::try_from(slots).unwrap_or(u64::MAX))
    }

    /// Checks the chain id, the sender's membership in `members` (the set of the state the
    /// transaction is checked against) and the signature.
    pub fn verify_signature(
        &self,
        members: &BTreeMap<MemberKey, PublicKey>,
        stx: &SignedTransaction,
    ) -> Result<(), TxError> {
        let tx = stx.tx();
        if tx.chain_id != self.chain_id {
            return Err(TxError::WrongChain {
                expected: self.chain_id,
                found: tx.chain_id,
            });
        }
        let key = members
            .get(&tx.sender)
            .ok_or(TxError::UnknownSender { sender: tx.sender })?;
        if stx.verify_signature(key) {
            Ok(())
        } else {
            Err(TxError::BadSignature { sender: tx.sender })
        }
    }
}

/// A member's account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Account {
    /// The balance.
    pub balance: MicroCredits,
    /// The next nonce this member must use.
    pub nonce: u64,
}

/// What one block contributed to the selection statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockSummary {
    /// Block height.
    pub height: u64,
    /// Who produced it.
    pub producer: MemberKey,
    /// Energy traded in it per member (Wh), from energy-trade transactions.
    pub traded_wh: Vec<(MemberKey, u64)>,
}

/// Balances, nonces and the producer statistics the election depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerState {
    /// Height of the last applied block (0 = genesis).
    pub height: u64,
    /// Slot of the last applied block (0 at genesis).
    pub slot: u64,
    pub(crate) accounts: BTreeMap<MemberKey, Account>,
    pub(crate) community_balance: i64,
    last_produced: BTreeMap<MemberKey, u64>,
    /// The selection window's block summaries by height (oldest first).
    #[serde(serialize_with = "summaries")]
    recent: CommittedMap<u64, BlockSummary>,
    pub(crate) market: MarketState,
    /// Double votes already punished: (offender, checkpoint, round, step).
    offences: BTreeSet<(MemberKey, u64, u32, u8)>,
    /// Members out of the producer ranking until this height (exclusive), for a double vote.
    excluded: BTreeMap<MemberKey, u64>,
    /// Who is a member, and the open proposals to change that.
    membership: Membership,
    /// Energy traded by each member in the block being applied (for E); not part of the state.
    #[serde(skip)]
    pub(crate) pending_traded: Vec<(MemberKey, u64)>,
    /// Market events raised by transactions of the block being applied; not part of the state.
    #[serde(skip)]
    pub(crate) pending_events: Vec<MarketEvent>,
    /// How [`LedgerState::hash`] commits to this state (the genesis decides); not part of it.
    #[serde(skip)]
    commitment: StateCommitment,
}

fn summaries<S: serde::Serializer>(
    recent: &CommittedMap<u64, BlockSummary>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(recent.values())
}

impl EntryValue for BlockSummary {
    // The height is the entry's key.
    fn encode_value(&self, w: &mut Writer) {
        w.fixed(&self.producer.0);
        w.u32(u32::try_from(self.traded_wh.len()).unwrap_or(u32::MAX));
        for (k, wh) in &self.traded_wh {
            w.fixed(&k.0).u64(*wh);
        }
    }
}

impl LedgerState {
    /// The state before the first block.
    pub fn genesis(genesis: &Genesis) -> LedgerState {
        LedgerState {
            height: 0,
            slot: 0,
            accounts: genesis
                .members
                .iter()
                .map(|m| {
                    (
                        m.key,
                        Account {
                            balance: m.balance,
                            nonce: 0,
                        },
                    )
                })
                .collect(),
            community_balance: 0,
            last_produced: BTreeMap::new(),
            recent: CommittedMap::default(),
            market: MarketState::default(),
            offences: BTreeSet::new(),
            excluded: BTreeMap::new(),
            membership: Membership::genesis(genesis),
            pending_traded: Vec::new(),
            pending_events: Vec::new(),
            commitment: genesis.state_commitment,
        }
    }

    /// Who is a member, with parsed keys, and the open member proposals.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The members' parsed keys (the set transactions, blocks and votes are checked against).
    pub fn members(&self) -> &Arc<BTreeMap<MemberKey, PublicKey>> {
        self.membership.keys()
    }

    /// Each member's parsed attestor key.
    pub fn attestors(&self) -> &Arc<BTreeMap<MemberKey, PublicKey>> {
        self.membership.attestors()
    }

    /// The most recent blocks' summaries (producer, energy traded), oldest first.
    pub fn recent_blocks(&self) -> impl Iterator<Item = &BlockSummary> {
        self.recent.values()
    }

    /// The market state (attestations, contracts, trades, rounds, escrow).
    pub fn market(&self) -> &MarketState {
        &self.market
    }

    /// A member's account (default if unknown).
    pub fn account(&self, key: &MemberKey) -> Account {
        self.accounts.get(key).copied().unwrap_or_default()
    }

    /// All accounts.
    pub fn accounts(&self) -> &BTreeMap<MemberKey, Account> {
        &self.accounts
    }

    /// The community account's balance: fees, plus what the homes paid for scheduled days
    /// (negative when it owes them: it stands for the community's side with the main grid).
    pub fn community_balance(&self) -> i64 {
        self.community_balance
    }

    /// Total micro-credits: member balances, the community account and escrow.
    pub fn total_credits(&self) -> u128 {
        let total = self.accounts.values().fold(
            i128::from(self.community_balance).saturating_add(i128::from(self.market.escrow.get())),
            |acc, a| acc.saturating_add(i128::from(a.balance.get())),
        );
        u128::try_from(total).unwrap_or(0)
    }

    /// Applies one transaction whose signature has been verified. On error nothing changes.
    pub fn apply_tx(&mut self, rules: &Rules, stx: &SignedTransaction) -> Result<(), TxError> {
        let tx = stx.tx();
        if tx.chain_id != rules.chain_id {
            return Err(TxError::WrongChain {
                expected: rules.chain_id,
                found: tx.chain_id,
            });
        }
        // A member who left keeps its account but sends nothing more.
        let sender = self
            .accounts
            .get(&tx.sender)
            .copied()
            .filter(|_| self.membership.contains(&tx.sender))
            .ok_or(TxError::UnknownSender { sender: tx.sender })?;
        if tx.fee != rules.tx_fee {
            return Err(TxError::WrongFee {
                expected: rules.tx_fee,
                found: tx.fee,
            });
        }
        if tx.nonce != sender.nonce {
            return Err(TxError::BadNonce {
                sender: tx.sender,
                expected: sender.nonce,
                found: tx.nonce,
            });
        }
        let next_nonce = sender
            .nonce
            .checked_add(1)
            .ok_or(TxError::Overflow { account: tx.sender })?;
        let fee =
            i64::try_from(tx.fee.get()).map_err(|_| TxError::Overflow { account: tx.sender })?;
        self.community_balance
            .checked_add(fee)
            .ok_or(TxError::Overflow { account: tx.sender })?;
        match &tx.payload {
            TxPayload::Transfer { to, amount } => {
                self.apply_transfer(tx.sender, sender.balance, *to, *amount, tx.fee)?
            }
            TxPayload::Evidence(e) => {
                Self::can_pay_fee(tx.sender, sender.balance, tx.fee)?;
                self.apply_evidence(rules, &e.first, &e.second)?;
            }
            TxPayload::MemberPropose(change) => {
                Self::can_pay_fee(tx.sender, sender.balance, tx.fee)?;
                let height = self.height.saturating_add(1);
                self.membership
                    .propose(stx.id(), tx.sender, change, height)?;
            }
            TxPayload::MemberApprove { proposal } => {
                Self::can_pay_fee(tx.sender, sender.balance, tx.fee)?;
                self.membership.approve(proposal, tx.sender)?;
            }
            _ => {
                let available =
                    sender
                        .balance
                        .checked_sub(tx.fee)
                        .ok_or(TxError::BalanceInsufficient {
                            account: tx.sender,
                            needed: tx.fee,
                            available: sender.balance,
                        })?;
                self.apply_market(rules, stx, available)?;
            }
        }
        // The rule applied; both kinds leave the fee in the sender's balance. Neither step
        // can fail after the checks above (the rules check amount plus fee), but if one did
        // the block is refused rather than a balance bent.
        let overflow = TxError::Overflow { account: tx.sender };
        let account = self.accounts.entry(tx.sender).or_default();
        let balance = account
            .balance
            .checked_sub(tx.fee)
            .ok_or(overflow.clone())?;
        let community = self.community_balance.checked_add(fee).ok_or(overflow)?;
        let account = self.accounts.entry(tx.sender).or_default();
        account.balance = balance;
        account.nonce = next_nonce;
        self.community_balance = community;
        Ok(())
    }

    fn can_pay_fee(
        account: MemberKey,
        balance: MicroCredits,
        fee: MicroCredits,
    ) -> Result<(), TxError> {
        if balance < fee {
            return Err(TxError::BalanceInsufficient {
                account,
                needed: fee,
                available: balance,
            });
        }
        Ok(())
    }

    /// Moves `amount` from `from` to `to`, checking that `from` can also pay `fee` (which the
    /// caller takes). Validates fully before changing anything.
    fn apply_transfer(
        &mut self,
        from: MemberKey,
        balance: MicroCredits,
        to: MemberKey,
        amount: MicroCredits,
        fee: MicroCredits,
    ) -> Result<(), TxError> {
        if amount.is_zero() {
            return Err(TxError::ZeroAmount);
        }
        if to == from {
            return Err(TxError::SelfTransfer);
        }
        let recipient = self
            .accounts
            .get(&to)
            .copied()
            .ok_or(TxError::UnknownRecipient { recipient: to })?;
        let needed = amount
            .checked_add(fee)
            .ok_or(TxError::Overflow { account: from })?;
        if balance < needed {
            return Err(TxError::BalanceInsufficient {
                account: from,
                needed,
                available: balance,
            });
        }
        let credited = recipient
            .balance
            .checked_add(amount)
            .ok_or(TxError::Overflow { account: to })?;
        let debited = balance
            .checked_sub(amount)
            .ok_or(TxError::Overflow { account: from })?;
        if let Some(a) = self.accounts.get_mut(&from) {
            a.balance = debited;
        }
        if let Some(a) = self.accounts.get_mut(&to) {
            a.balance = credited;
        }
        Ok(())
    }

    /// Ends a block after its transactions: runs the market's end-of-block steps and records
    /// the block in the selection statistics. Returns the market events of the block.
    pub fn finish_block(
        &mut self,
        rules: &Rules,
        height: u64,
        slot: u64,
        producer: MemberKey,
    ) -> Vec<MarketEvent> {
        let mut events = std::mem::take(&mut self.pending_events);
        events.extend(self.end_block_market(rules, height));
        let mut traded: BTreeMap<MemberKey, u64> = BTreeMap::new();
        for (member, wh) in std::mem::take(&mut self.pending_traded) {
            let t = traded.entry(member).or_insert(0);
            *t = t.saturating_add(wh);
        }
        let traded_wh: Vec<(MemberKey, u64)> = traded.into_iter().collect();
        for change in self.membership.end_block(&rules.finality, height) {
            // A new member has an account from its first block on; a leaving one keeps its own.
            if let crate::membership::MemberChange::Add { key, .. } = &change.change {
                self.accounts.entry(*key).or_default();
            }
            events.push(MarketEvent::MembershipChanged(change));
        }
        self.height = height;
        self.slot = slot;
        self.excluded
            .retain(|_, until| *until > height.saturating_add(1));
        self.last_produced.insert(producer, height);
        self.recent.insert(
            height,
            BlockSummary {
                height,
                producer,
                traded_wh,
            },
        );
        let window = usize::try_from(rules.selection.window_blocks).unwrap_or(usize::MAX);
        while self.recent.len() > window {
            self.recent.pop_first();
        }
        events
    }

    /// Energy delivered to or by `member` in the selection window, Wh (what `E` counts).
    pub fn traded_in_window(&self, member: &MemberKey) -> u64 {
        self.recent
            .values()
            .flat_map(|s| s.traded_wh.iter())
            .filter(|(k, _)| k == member)
            .fold(0u64, |acc, (_, wh)| acc.saturating_add(*wh))
    }

    /// The election weights for the block at `self.height + 1`, one per member.
    ///
    /// `E` = kWh traded in the window (floor), `A` = blocks since the member last produced
    /// (never = since genesis), capped at `age_cap`, `R` = blocks produced in the window,
    /// capped at `reputation_cap`. All arithmetic saturates, so it is total and deterministic.
    pub fn candidates(&self, rules: &Rules) -> Vec<Candidate> {
        let next = self.height.saturating_add(1);
        let mut traded: BTreeMap<MemberKey, u64> = BTreeMap::new();
        let mut produced: BTreeMap<MemberKey, u64> = BTreeMap::new();
        for summary in self.recent.values() {
            let p = produced.entry(summary.producer).or_insert(0);
            *p = p.saturating_add(1);
            for (member, wh) in &summary.traded_wh {
                let t = traded.entry(*member).or_insert(0);
                *t = t.saturating_add(*wh);
            }
        }
        let s = &rules.selection;
        self.members()
            .keys()
            .filter(|key| self.excluded.get(key).is_none_or(|until| *until <= next))
            .map(|key| {
                let e = traded.get(key).copied().unwrap_or(0) / 1000;
                let last = self.last_produced.get(key).copied().unwrap_or(0);
                let a = next.saturating_sub(last).min(s.age_cap);
                let r = produced
                    .get(key)
                    .copied()
                    .unwrap_or(0)
                    .min(s.reputation_cap);
                let weight = s
                    .alpha
                    .saturating_mul(e)
                    .saturating_add(s.beta.saturating_mul(a))
                    .saturating_add(s.gamma.saturating_mul(r));
                Candidate { key: *key, weight }
            })
            .collect()
    }

    /// Records a double vote: the offender leaves the producer ranking for `window_blocks`.
    fn apply_evidence(
        &mut self,
        rules: &Rules,
        first: &crate::finality::SignedVote,
        second: &crate::finality::SignedVote,
    ) -> Result<(), TxError> {
        let invalid = |reason: &'static str| TxError::EvidenceInvalid { reason };
        if !first.conflicts_with(second) {
            return Err(invalid("the votes do not conflict"));
        }
        let offender = first.vote.voter;
        let key = self
            .members()
            .get(&offender)
            .ok_or(invalid("the voter is not a member"))?;
        if !first.verifies(&rules.chain_id, key) || !second.verifies(&rules.chain_id, key) {
            return Err(invalid("a vote's signature does not verify"));
        }
        let v = &first.vote;
        let offence = (offender, v.checkpoint, v.round, v.step.code());
        if self.offences.contains(&offence) {
            return Err(TxError::EvidenceKnown {
                offender,
                checkpoint: v.checkpoint,
            });
        }
        self.offences.insert(offence);
        let until = self
            .height
            .saturating_add(1)
            .saturating_add(rules.selection.window_blocks);
        let entry = self.excluded.entry(offender).or_insert(0);
        *entry = (*entry).max(until);
        Ok(())
    }

    /// Members out of the producer ranking for a double vote, with the height they return at.
    pub fn excluded(&self) -> &BTreeMap<MemberKey, u64> {
        &self.excluded
    }

    /// Double votes recorded: (offender, checkpoint, round, step byte).
    pub fn offences(&self) -> &BTreeSet<(MemberKey, u64, u32, u8)> {
        &self.offences
    }

    /// The canonical encoding of the state.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.height)
            .u64(self.slot)
            .i64(self.community_balance);
        w.u32(u32::try_from(self.accounts.len()).unwrap_or(u32::MAX));
        for (k, a) in &self.accounts {
            w.fixed(&k.0).u64(a.balance.get()).u64(a.nonce);
        }
        w.u32(u32::try_from(self.last_produced.len()).unwrap_or(u32::MAX));
        for (k, h) in &self.last_produced {
            w.fixed(&k.0).u64(*h);
        }
        match self.commitment {
            StateCommitment::Flat => self.recent.encode_flat(&mut w),
            StateCommitment::Trie => {
                w.fixed(&self.recent.root().0);
            }
        }
        self.market.encode_into(&mut w, self.commitment);
        w.u32(u32::try_from(self.offences.len()).unwrap_or(u32::MAX));
        for (k, checkpoint, round, step) in &self.offences {
            w.fixed(&k.0).u64(*checkpoint).u32(*round).u8(*step);
        }
        w.u32(u32::try_from(self.excluded.len()).unwrap_or(u32::MAX));
        for (k, until) in &self.excluded {
            w.fixed(&k.0).u64(*until);
        }
        self.membership.encode_into(&mut w);
        w.finish()
    }

    /// The state hash a block header commits to.
    pub fn hash(&self) -> Hash32 {
        let tag = match self.commitment {
            StateCommitment::Flat => STATE_TAG,
            StateCommitment::Trie => STATE_TAG_V2,
        };
        Hash32::tagged(tag, &[&self.encode()])
    }
}
