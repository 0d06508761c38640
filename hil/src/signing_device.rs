//! A battery that holds the home's attestor key and signs only what it measures itself: the
//! device side of `gridlet_drivers::signer`'s register block. It is commissioned for one
//! community and one home (the chain id and the member key are part of every digest), so a
//! gateway can relay its claims but cannot make it sign more:
//!
//! - an **attestation** of at most what it stores now plus an hour of what the home exports
//!   now (the PV surplus a charge sale sells);
//! - a **receipt** of at most what it moved while the trade ran: the energy the home exported
//!   since the trade's begin for a discharge, what the battery charged for a charge.

use std::collections::BTreeMap;

use gridlet_drivers::signer::{
    encode_key, SignOutcome, SignRequest, SignResponse, KEY_AT, LEN, MAGIC, REQUEST_AT,
    REQUEST_WORDS, RESPONSE_AT,
};
use gridlet_ledger::crypto::Signature;
use gridlet_ledger::market::{attestation_digest, receipt_digest};
use gridlet_ledger::{Hash32, MemberKey, WattHours};
use secp256k1::SecretKey;

use crate::devices::BatteryState;

/// Slack on a receipt, Wh: the gateway integrates sampled power, the device its own counters.
const RECEIPT_SLACK_WH: u64 = 5;

/// The signing part of a simulated battery.
#[derive(Debug, Clone)]
pub struct SigningDevice {
    key: SecretKey,
    /// The key's public half as the block serves it (computed once, not per read).
    key_words: Vec<u16>,
    chain_id: Hash32,
    home: MemberKey,
    /// Trades begun: whether a charge, and the counter (mWh) at the begin.
    trades: BTreeMap<[u8; 32], (bool, u64)>,
    request: Vec<u16>,
    response: SignResponse,
    /// The home's grid power as its connection meters it (W, positive = import).
    pub grid_w: i64,
    /// The home's export counter, mWh.
    pub exported_mwh: u64,
    /// Requests answered with a signature.
    pub signed: u64,
    /// Requests refused.
    pub refused: u64,
}

impl SigningDevice {
    /// A device commissioned for `home` of community `chain_id`, signing with `key`.
    pub fn new(key: SecretKey, chain_id: Hash32, home: MemberKey) -> SigningDevice {
        SigningDevice {
            key,
            key_words: encode_key(&MemberKey::from_secret(&key).0),
            chain_id,
            home,
            trades: BTreeMap::new(),
            request: vec![0; REQUEST_WORDS],
            response: SignResponse {
                seq: 0,
                outcome: SignOutcome::Idle,
            },
            grid_w: 0,
            exported_mwh: 0,
            signed: 0,
            refused: 0,
        }
    }

    fn words(&self) -> Vec<u16> {
        let mut w = vec![0u16; usize::from(LEN)];
        let mut put = |at: u16, words: &[u16]| {
            for (i, x) in words.iter().enumerate() {
                if let Some(slot) = w.get_mut(usize::from(at) + i) {
                    *slot = *x;
                }
            }
        };
        put(0, &MAGIC);
        put(KEY_AT, &self.key_words);
        put(REQUEST_AT, &self.request);
        put(RESPONSE_AT, &self.response.encode());
        w
    }

    /// `count` registers from `offset` within the block, `None` past its end.
    pub fn read(&self, offset: u16, count: u16) -> Option<Vec<u16>> {
        let end = usize::from(offset).checked_add(usize::from(count))?;
        self.words()
            .get(usize::from(offset)..end)
            .map(<[u16]>::to_vec)
    }

    /// Writes `words` at `offset`; only the request may be written. A complete request is
    /// answered at once against the battery's state. `false`: not writable there.
    pub fn write(&mut self, offset: u16, words: &[u16], battery: &BatteryState) -> bool {
        let at = usize::from(offset);
        let start = usize::from(REQUEST_AT);
        if at < start || at + words.len() > start + REQUEST_WORDS {
            return false;
        }
        for (i, x) in words.iter().enumerate() {
            if let Some(slot) = self.request.get_mut(at - start + i) {
                *slot = *x;
            }
        }
        // The request is complete when its last word (the seq's low half) was written.
        if at + words.len() == start + REQUEST_WORDS {
            self.answer(battery);
        }
        true
    }

    /// The most it attests now: what it stores plus an hour of the home's export, Wh.
    pub fn attest_limit_wh(&self, battery: &BatteryState) -> u64 {
        let export_w = u64::try_from(-self.grid_w.min(0)).unwrap_or(0);
        battery.energy_mwh / 1_000 + export_w
    }

    fn answer(&mut self, battery: &BatteryState) {
        let (request, seq) = match SignRequest::decode(&self.request) {
            Ok(r) => r,
            Err(_) => {
                self.response = SignResponse {
                    seq: 0,
                    outcome: SignOutcome::BadRequest,
                };
                return;
            }
        };
        let outcome = match request {
            SignRequest::Attest {
                interval,
                energy_wh,
            } => {
                let limit_wh = self.attest_limit_wh(battery);
                if energy_wh == 0 || energy_wh > limit_wh {
                    SignOutcome::Refused { limit_wh }
                } else {
                    let d = attestation_digest(
                        &self.chain_id,
                        &self.home,
                        interval,
                        WattHours::new(energy_wh),
                    );
                    SignOutcome::Signed(Signature::sign(&d, &self.key).0)
                }
            }
            SignRequest::BeginTrade { trade, charge } => {
                let counter = self.counter(charge, battery);
                self.trades.entry(trade).or_insert((charge, counter));
                SignOutcome::Begun
            }
            SignRequest::Receipt {
                trade,
                delivered_wh,
            } => match self.trades.get(&trade).copied() {
                None => SignOutcome::UnknownTrade,
                Some((charge, start)) => {
                    let moved_wh = self.counter(charge, battery).saturating_sub(start) / 1_000;
                    let limit_wh = moved_wh + RECEIPT_SLACK_WH;
                    if delivered_wh > limit_wh {
                        SignOutcome::Refused { limit_wh }
                    } else {
                        let d = receipt_digest(
                            &self.chain_id,
                            &Hash32(trade),
                            WattHours::new(delivered_wh),
                        );
                        SignOutcome::Signed(Signature::sign(&d, &self.key).0)
                    }
                }
            },
        };
        match outcome {
            SignOutcome::Signed(_) => self.signed += 1,
            SignOutcome::Refused { .. } => self.refused += 1,
            _ => {}
        }
        self.response = SignResponse { seq, outcome };
    }

    /// What the device counts for a trade: the home's export (discharge) or what the battery
    /// charged (charge), mWh.
    fn counter(&self, charge: bool, battery: &BatteryState) -> u64 {
        if charge {
            battery.charged_mwh
        } else {
            self.exported_mwh
        }
    }
}
