//! Transactions: what a member asks the community to do, signed by that member.
//!
//! Encoding (see `docs/protocol.md`): `version u8 = 1 | chain_id [32] | sender [33] |
//! nonce u64 | fee u64 | kind u8 | body`. The signing digest is
//! `SHA-256("gridlet/tx/v1" || encoding)`; a signed transaction is the encoding followed by the
//! 64-byte signature, and its id is `SHA-256("gridlet/txid/v1" || signed bytes)`.

use crate::units::{MicroCredits, Price, WattHours};
use secp256k1::SecretKey;
use serde::Serialize;

use crate::codec::{Reader, Writer};
use crate::crypto::{Hash32, MemberKey, Signature};
use crate::error::DecodeError;
use crate::market::billing::Reading;

/// The transaction format version this node writes and accepts.
pub const TX_VERSION: u8 = 1;

const TX_SIGN_TAG: &[u8] = b"gridlet/tx/v1";
const TX_ID_TAG: &[u8] = b"gridlet/txid/v1";

/// Kind byte of [`TxPayload::Transfer`].
pub const KIND_TRANSFER: u8 = 1;
/// Kind byte of [`TxPayload::Attest`].
pub const KIND_ATTEST: u8 = 2;
/// Kind byte of [`TxPayload::Sale`].
pub const KIND_SALE: u8 = 3;
/// Kind byte of [`TxPayload::Purchase`].
pub const KIND_PURCHASE: u8 = 4;
/// Kind byte of [`TxPayload::Deliver`].
pub const KIND_DELIVER: u8 = 5;
/// Kind byte of [`TxPayload::AuctionJoin`].
pub const KIND_AUCTION_JOIN: u8 = 6;
/// Kind byte of [`TxPayload::BidCommit`].
pub const KIND_BID_COMMIT: u8 = 7;
/// Kind byte of [`TxPayload::BidReveal`].
pub const KIND_BID_REVEAL: u8 = 8;
/// Kind byte of [`TxPayload::ScheduleCommit`].
pub const KIND_SCHEDULE_COMMIT: u8 = 9;
/// Kind byte of [`TxPayload::MeterReadings`].
pub const KIND_METER_READINGS: u8 = 10;
/// Kind byte of [`TxPayload::Evidence`].
pub const KIND_EVIDENCE: u8 = 11;
/// Kind byte of [`TxPayload::MemberPropose`].
pub const KIND_MEMBER_PROPOSE: u8 = 12;
/// Kind byte of [`TxPayload::MemberApprove`].
pub const KIND_MEMBER_APPROVE: u8 = 13;
/// Kind byte of a [`TxPayload::Sale`] in [`DeliveryMode::Charge`] (kind 3 is the discharge
/// sale; the encodings are otherwise the same).
pub const KIND_CHARGE_SALE: u8 = 14;

/// How a sale's energy reaches the buyer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// The seller's battery discharges to cover what the buyer imports; the seller reports.
    #[default]
    Discharge,
    /// The buyer's battery charges from what the seller exports (its PV surplus); the buyer
    /// reports.
    Charge,
}

/// A home's proposal in one iteration of the day-ahead ADMM, signed with its member key over
/// [`crate::market::dispatch::proposal_digest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignedProposal {
    /// Net exchange per interval, W (positive = import).
    pub values_mw: Vec<i32>,
    /// The home's signature.
    pub signature: Signature,
}

/// The day's schedule with everything needed to recompute it: every iteration's signed
/// proposals (members in key order) and what they lead to. Every node replays the dispatch
/// step over the proposals and accepts the transaction only if it gets the same schedule,
/// prices, hash and residuals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleCommit {
    /// The day (days since the Unix epoch, community time).
    pub day: u64,
    /// Every iteration's proposals, members in key order.
    #[serde(skip)]
    pub rounds: Vec<Vec<SignedProposal>>,
    /// Each member's scheduled net energy per interval, Wh, members in key order.
    pub schedule_wh: Vec<Vec<i64>>,
    /// Clearing price per interval, micro-credits per kWh.
    pub prices: Vec<i64>,
    /// The last link of the iteration hash chain.
    pub inputs_hash: Hash32,
    /// Final primal residual, W.
    pub primal_w: i64,
    /// Final dual residual, W.
    pub dual_w: i64,
}

impl ScheduleCommit {
    fn encode_into(&self, w: &mut Writer) {
        w.u64(self.day);
        w.u32(u32::try_from(self.rounds.len()).unwrap_or(u32::MAX));
        for round in &self.rounds {
            w.u32(u32::try_from(round.len()).unwrap_or(u32::MAX));
            for p in round {
                w.u32(u32::try_from(p.values_mw.len()).unwrap_or(u32::MAX));
                for v in &p.values_mw {
                    w.i32(*v);
                }
                w.fixed(&p.signature.0);
            }
        }
        w.u32(u32::try_from(self.schedule_wh.len()).unwrap_or(u32::MAX));
        for home in &self.schedule_wh {
            w.u32(u32::try_from(home.len()).unwrap_or(u32::MAX));
            for v in home {
                w.i64(*v);
            }
        }
        w.u32(u32::try_from(self.prices.len()).unwrap_or(u32::MAX));
        for v in &self.prices {
            w.i64(*v);
        }
        w.fixed(&self.inputs_hash.0)
            .i64(self.primal_w)
            .i64(self.dual_w);
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<ScheduleCommit, DecodeError> {
        let day = r.u64()?;
        let round_count = r.count(4)?;
        let mut rounds = Vec::with_capacity(round_count);
        for _ in 0..round_count {
            let homes = r.count(68)?;
            let mut round = Vec::with_capacity(homes);
            for _ in 0..homes {
                let n = r.count(4)?;
                let mut values_mw = Vec::with_capacity(n);
                for _ in 0..n {
                    values_mw.push(r.i32()?);
                }
                round.push(SignedProposal {
                    values_mw,
                    signature: Signature::from_bytes(r.array()?)?,
                });
            }
            rounds.push(round);
        }
        let homes = r.count(4)?;
        let mut schedule_wh = Vec::with_capacity(homes);
        for _ in 0..homes {
            let n = r.count(8)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(r.i64()?);
            }
            schedule_wh.push(v);
        }
        let n = r.count(8)?;
        let mut prices = Vec::with_capacity(n);
        for _ in 0..n {
            prices.push(r.i64()?);
        }
        Ok(ScheduleCommit {
            day,
            rounds,
            schedule_wh,
            prices,
            inputs_hash: Hash32(r.array()?),
            primal_w: r.i64()?,
            dual_w: r.i64()?,
        })
    }
}

fn encode_readings(readings: &[Reading], w: &mut Writer) {
    w.u32(u32::try_from(readings.len()).unwrap_or(u32::MAX));
    for x in readings {
        w.u32(x.interval).i64(x.net_wh);
        match &x.signature {
            None => {
                w.u8(0);
            }
            Some(sig) => {
                w.u8(1).fixed(&sig.0);
            }
        }
    }
}

fn decode_readings(r: &mut Reader<'_>) -> Result<Vec<Reading>, DecodeError> {
    let n = r.count(13)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let interval = r.u32()?;
        let net_wh = r.i64()?;
        let signature = match r.u8()? {
            0 => None,
            1 => Some(Signature::from_bytes(r.array()?)?),
            flag => return Err(DecodeError::BadFlag { flag }),
        };
        out.push(Reading {
            interval,
            net_wh,
            signature,
        });
    }
    Ok(out)
}

/// A home battery's signed statement: "home stored `energy_wh` of its own generation in
/// `interval`", signed by the home's attestor key over [`crate::market::attestation_digest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attestation {
    /// Market interval index.
    pub interval: u64,
    /// Energy stored.
    pub energy_wh: WattHours,
    /// The attestor's signature.
    #[serde(serialize_with = "sig_hex")]
    pub signature: Signature,
}

fn sig_hex<S: serde::Serializer>(sig: &Signature, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&sig.to_hex())
}

impl Attestation {
    fn encode_into(&self, w: &mut Writer) {
        w.u64(self.interval)
            .u64(self.energy_wh.get())
            .fixed(&self.signature.0);
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Attestation, DecodeError> {
        Ok(Attestation {
            interval: r.u64()?,
            energy_wh: WattHours::new(r.u64()?),
            signature: Signature::from_bytes(r.array()?)?,
        })
    }
}

fn encode_optional_attestation(a: &Option<Attestation>, w: &mut Writer) {
    match a {
        None => {
            w.u8(0);
        }
        Some(a) => {
            w.u8(1);
            a.encode_into(w);
        }
    }
}

fn decode_optional_attestation(r: &mut Reader<'_>) -> Result<Option<Attestation>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(Attestation::decode_from(r)?)),
        flag => Err(DecodeError::BadFlag { flag }),
    }
}

/// What a transaction does. New kinds get new kind bytes; old bytes never change meaning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TxPayload {
    /// Move micro-credits from the sender to another member.
    Transfer {
        /// The recipient.
        to: MemberKey,
        /// Micro-credits moved (the fee is paid on top).
        amount: MicroCredits,
    },
    /// Record the sender home's attested generation (the broadcast path).
    Attest(Attestation),
    /// Offer energy at a price; the contract id is this transaction's id. An attestation may
    /// ride along (the request/response path) and is recorded first.
    Sale {
        /// How the energy reaches the buyer (kind 3: discharge, kind 14: charge).
        mode: DeliveryMode,
        /// Energy offered.
        energy_wh: WattHours,
        /// Price (at most the grid tariff).
        price: Price,
        /// Last height at which the contract can be bought.
        expiry_height: u64,
        /// Attestation obtained from the seller's battery, if not broadcast before.
        attestation: Option<Attestation>,
    },
    /// Buy a whole sale contract; `payment` goes into escrow.
    Purchase {
        /// The sale contract (its transaction id).
        contract: Hash32,
        /// Exactly `energy_wh × price / 1000`, rounded down.
        payment: MicroCredits,
    },
    /// The seller's battery reports what it delivered for a released trade.
    Deliver {
        /// The trade id.
        trade: Hash32,
        /// Metered energy delivered.
        delivered_wh: WattHours,
        /// The seller's attestor signature over [`crate::market::receipt_digest`].
        #[serde(serialize_with = "sig_hex")]
        receipt: Signature,
    },
    /// Join the coalition of an auction round with attested energy.
    AuctionJoin {
        /// The round.
        round: u64,
        /// Energy pooled.
        energy_wh: WattHours,
        /// Attestation obtained from the seller's battery, if not broadcast before.
        attestation: Option<Attestation>,
    },
    /// Commit a sealed bid: only the hash is on chain until the reveal.
    BidCommit {
        /// The round.
        round: u64,
        /// [`crate::market::bid_commitment`] of the bid and a secret salt.
        commitment: Hash32,
    },
    /// Reveal a committed bid; its maximum payment goes into escrow.
    BidReveal {
        /// The round.
        round: u64,
        /// Energy wanted.
        energy_wh: WattHours,
        /// Price.
        price: Price,
        /// The salt the commitment hid the bid with.
        salt: Hash32,
    },
    /// Commit the community's day-ahead schedule (any member may send it; every node
    /// recomputes it).
    ScheduleCommit(Box<ScheduleCommit>),
    /// The sender home's meter readings of a scheduled day, one per interval, each signed by
    /// the home's meter (its attestor key). The day is billed when every home's are in.
    MeterReadings {
        /// The day.
        day: u64,
        /// Net energy per interval.
        readings: Vec<Reading>,
    },
    /// Two conflicting signed votes of one member (a double vote): on chain, the offender
    /// leaves the producer ranking for `window_blocks`. Any member may send it.
    Evidence(Box<crate::finality::DoubleVote>),
    /// Propose adding or removing a member; the proposal id is this transaction's id and the
    /// sender's approval is counted.
    MemberPropose(crate::membership::MemberChange),
    /// Approve an open member proposal.
    MemberApprove {
        /// The proposal (its transaction id).
        proposal: Hash32,
    },
}

impl TxPayload {
    /// The kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            TxPayload::Transfer { .. } => KIND_TRANSFER,
            TxPayload::Attest(_) => KIND_ATTEST,
            TxPayload::Sale {
                mode: DeliveryMode::Discharge,
                ..
            } => KIND_SALE,
            TxPayload::Sale {
                mode: DeliveryMode::Charge,
                ..
            } => KIND_CHARGE_SALE,
            TxPayload::Purchase { .. } => KIND_PURCHASE,
            TxPayload::Deliver { .. } => KIND_DELIVER,
            TxPayload::AuctionJoin { .. } => KIND_AUCTION_JOIN,
            TxPayload::BidCommit { .. } => KIND_BID_COMMIT,
            TxPayload::BidReveal { .. } => KIND_BID_REVEAL,
            TxPayload::ScheduleCommit(_) => KIND_SCHEDULE_COMMIT,
            TxPayload::MeterReadings { .. } => KIND_METER_READINGS,
            TxPayload::Evidence(_) => KIND_EVIDENCE,
            TxPayload::MemberPropose(_) => KIND_MEMBER_PROPOSE,
            TxPayload::MemberApprove { .. } => KIND_MEMBER_APPROVE,
        }
    }

    fn encode_into(&self, w: &mut Writer) {
        w.u8(self.kind());
        match self {
            TxPayload::Transfer { to, amount } => {
                w.fixed(&to.0).u64(amount.get());
            }
            TxPayload::Attest(a) => a.encode_into(w),
            TxPayload::Sale {
                mode: _,
                energy_wh,
                price,
                expiry_height,
                attestation,
            } => {
                w.u64(energy_wh.get()).u64(price.get()).u64(*expiry_height);
                encode_optional_attestation(attestation, w);
            }
            TxPayload::Purchase { contract, payment } => {
                w.fixed(&contract.0).u64(payment.get());
            }
            TxPayload::Deliver {
                trade,
                delivered_wh,
                receipt,
            } => {
                w.fixed(&trade.0).u64(delivered_wh.get()).fixed(&receipt.0);
            }
            TxPayload::AuctionJoin {
                round,
                energy_wh,
                attestation,
            } => {
                w.u64(*round).u64(energy_wh.get());
                encode_optional_attestation(attestation, w);
            }
            TxPayload::BidCommit { round, commitment } => {
                w.u64(*round).fixed(&commitment.0);
            }
            TxPayload::BidReveal {
                round,
                energy_wh,
                price,
                salt,
            } => {
                w.u64(*round)
                    .u64(energy_wh.get())
                    .u64(price.get())
                    .fixed(&salt.0);
            }
            TxPayload::ScheduleCommit(c) => c.encode_into(w),
            TxPayload::MeterReadings { day, readings } => {
                w.u64(*day);
                encode_readings(readings, w);
            }
            TxPayload::Evidence(e) => {
                e.first.write(w);
                e.second.write(w);
            }
            TxPayload::MemberPropose(change) => change.encode_into(w),
            TxPayload::MemberApprove { proposal } => {
                w.fixed(&proposal.0);
            }
        }
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<TxPayload, DecodeError> {
        match r.u8()? {
            KIND_TRANSFER => Ok(TxPayload::Transfer {
                to: MemberKey::from_bytes(r.array()?)?,
                amount: MicroCredits::new(r.u64()?),
            }),
            KIND_ATTEST => Ok(TxPayload::Attest(Attestation::decode_from(r)?)),
            kind @ (KIND_SALE | KIND_CHARGE_SALE) => Ok(TxPayload::Sale {
                mode: if kind == KIND_SALE {
                    DeliveryMode::Discharge
                } else {
                    DeliveryMode::Charge
                },
                energy_wh: WattHours::new(r.u64()?),
                price: Price::new(r.u64()?),
                expiry_height: r.u64()?,
                attestation: decode_optional_attestation(r)?,
            }),
            KIND_PURCHASE => Ok(TxPayload::Purchase {
                contract: Hash32(r.array()?),
                payment: MicroCredits::new(r.u64()?),
            }),
            KIND_DELIVER => Ok(TxPayload::Deliver {
                trade: Hash32(r.array()?),
                delivered_wh: WattHours::new(r.u64()?),
                receipt: Signature::from_bytes(r.array()?)?,
            }),
            KIND_AUCTION_JOIN => Ok(TxPayload::AuctionJoin {
                round: r.u64()?,
                energy_wh: WattHours::new(r.u64()?),
                attestation: decode_optional_attestation(r)?,
            }),
            KIND_BID_COMMIT => Ok(TxPayload::BidCommit {
                round: r.u64()?,
                commitment: Hash32(r.array()?),
            }),
            KIND_BID_REVEAL => Ok(TxPayload::BidReveal {
                round: r.u64()?,
                energy_wh: WattHours::new(r.u64()?),
                price: Price::new(r.u64()?),
                salt: Hash32(r.array()?),
            }),
            KIND_SCHEDULE_COMMIT => Ok(TxPayload::ScheduleCommit(Box::new(
                ScheduleCommit::decode_from(r)?,
            ))),
            KIND_METER_READINGS => Ok(TxPayload::MeterReadings {
                day: r.u64()?,
                readings: decode_readings(r)?,
            }),
            KIND_EVIDENCE => Ok(TxPayload::Evidence(Box::new(crate::finality::DoubleVote {
                first: crate::finality::SignedVote::read(r)?,
                second: crate::finality::SignedVote::read(r)?,
            }))),
            KIND_MEMBER_PROPOSE => Ok(TxPayload::MemberPropose(
                crate::membership::MemberChange::decode_from(r)?,
            )),
            KIND_MEMBER_APPROVE => Ok(TxPayload::MemberApprove {
                proposal: Hash32(r.array()?),
            }),
            kind => Err(DecodeError::UnknownKind { kind }),
        }
    }
}

/// An unsigned transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transaction {
    /// The genesis hash of the chain this transaction is for (no cross-chain replay).
    pub chain_id: Hash32,
    /// The member who signs and pays.
    pub sender: MemberKey,
    /// The sender's next nonce: each nonce is accepted once, in order.
    pub nonce: u64,
    /// Micro-credits paid to the community account; must equal the genesis fee.
    pub fee: MicroCredits,
    /// What the transaction does.
    pub payload: TxPayload,
}

impl Transaction {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        w.finish()
    }

    fn encode_into(&self, w: &mut Writer) {
        w.u8(TX_VERSION)
            .fixed(&self.chain_id.0)
            .fixed(&self.sender.0)
            .u64(self.nonce)
            .u64(self.fee.get());
        self.payload.encode_into(w);
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Transaction, DecodeError> {
        let version = r.u8()?;
        if version != TX_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                what: "transaction",
                expected: TX_VERSION,
                found: version,
            });
        }
        Ok(Transaction {
            chain_id: Hash32(r.array()?),
            sender: MemberKey::from_bytes(r.array()?)?,
            nonce: r.u64()?,
            fee: MicroCredits::new(r.u64()?),
            payload: TxPayload::decode_from(r)?,
        })
    }

    /// The digest the sender signs.
    pub fn signing_digest(&self) -> Hash32 {
        Hash32::tagged(TX_SIGN_TAG, &[&self.encode()])
    }

    /// Signs with the sender's secret key. The caller makes sure `sk` is the sender's.
    pub fn sign(self, sk: &SecretKey) -> SignedTransaction {
        let signature = Signature::sign(&self.signing_digest(), sk);
        SignedTransaction::from_parts(self, signature)
    }
}

/// A transaction with its sender's signature. Its bytes and id are computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTransaction {
    tx: Transaction,
    signature: Signature,
    bytes: Vec<u8>,
    id: Hash32,
}

impl SignedTransaction {
    /// Joins a transaction and a signature (not verified here: see [`Self::verify_signature`]).
    pub fn from_parts(tx: Transaction, signature: Signature) -> SignedTransaction {
        let mut w = Writer::new();
        tx.encode_into(&mut w);
        w.fixed(&signature.0);
        let bytes = w.finish();
        let id = Hash32::tagged(TX_ID_TAG, &[&bytes]);
        SignedTransaction {
            tx,
            signature,
            bytes,
            id,
        }
    }

    /// Decodes the canonical encoding; anything else is refused.
    pub fn decode(bytes: &[u8]) -> Result<SignedTransaction, DecodeError> {
        let mut r = Reader::new(bytes);
        let tx = Transaction::decode_from(&mut r)?;
        let signature = Signature::from_bytes(r.array()?)?;
        r.finish()?;
        let signed = SignedTransaction::from_parts(tx, signature);
        // The format has exactly one encoding per value; this guards that claim.
        if signed.bytes != bytes {
            return Err(DecodeError::TrailingBytes {
                offset: signed.bytes.len(),
                remaining: 0,
            });
        }
        Ok(signed)
    }

    /// The transaction.
    pub fn tx(&self) -> &Transaction {
        &self.tx
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The canonical signed encoding.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The transaction id.
    pub fn id(&self) -> Hash32 {
        self.id
    }

    /// Whether the signature is the sender's, given the sender's parsed key.
    pub fn verify_signature(&self, sender: &secp256k1::PublicKey) -> bool {
        self.signature.verify(&self.tx.signing_digest(), sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::deterministic_key;

    fn sample() -> (SignedTransaction, SecretKey) {
        let sk = deterministic_key(7, 0);
        let to = MemberKey::from_secret(&deterministic_key(7, 1));
        let tx = Transaction {
            chain_id: Hash32::sha256(b"chain"),
            sender: MemberKey::from_secret(&sk),
            nonce: 3,
            fee: MicroCredits::new(10),
            payload: TxPayload::Transfer {
                to,
                amount: MicroCredits::new(500),
            },
        };
        (tx.sign(&sk), sk)
    }

    #[test]
    fn decode_encode_round_trip() {
        let (signed, sk) = sample();
        let back = SignedTransaction::decode(signed.bytes()).unwrap();
        assert_eq!(back, signed);
        assert!(back.verify_signature(&sk.public_key()));
    }

    #[test]
    fn every_single_byte_change_invalidates() {
        let (signed, sk) = sample();
        let pk = sk.public_key();
        for i in 0..signed.bytes().len() {
            for flip in [0x01u8, 0x80] {
                let mut bytes = signed.bytes().to_vec();
                bytes[i] ^= flip;
                if let Ok(decoded) = SignedTransaction::decode(&bytes) {
                    assert!(
                        decoded.tx().sender != signed.tx().sender || !decoded.verify_signature(&pk),
                        "byte {i} flip {flip:#x} still verifies"
                    );
                }
            }
        }
    }

    #[test]
    fn unknown_kind_and_version_are_named() {
        let (signed, _) = sample();
        let mut bytes = signed.bytes().to_vec();
        bytes[1 + 32 + 33 + 8 + 8] = 99;
        assert_eq!(
            SignedTransaction::decode(&bytes),
            Err(DecodeError::UnknownKind { kind: 99 })
        );
        let mut bytes = signed.bytes().to_vec();
        bytes[0] = 2;
        assert!(matches!(
            SignedTransaction::decode(&bytes),
            Err(DecodeError::UnsupportedVersion { found: 2, .. })
        ));
    }
}
