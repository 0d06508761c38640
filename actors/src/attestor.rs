//! Who signs this home's energy claims (attestations and delivery receipts, protocol.md §12):
//! the battery itself over its signing block (`gridlet_drivers::signer`), checking each claim
//! against what it measures, or — for a home without a signing device — the gateway with the
//! attestor key in its data directory (lower trust, flagged on chain by the member's `signer`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use gridlet_drivers::signer::{
    decode_header, SignOutcome, SignRequest, SignResponse, BASE, KEY_AT, KEY_WORDS, REQUEST_AT,
    RESPONSE_AT, RESPONSE_WORDS,
};
use gridlet_ledger::crypto::Signature;
use gridlet_ledger::market::{attestation_digest, receipt_digest};
use gridlet_ledger::tx::Attestation;
use gridlet_ledger::{Hash32, MemberKey, WattHours};
use secp256k1::{PublicKey, SecretKey};

use crate::battery::SharedIo;

/// Why a claim was not signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    /// No key and no signing battery.
    #[error("no battery key configured and no signing battery: only a battery can attest energy")]
    NoSigner,
    /// The battery measured less than claimed.
    #[error(
        "the battery refused to sign {what} of {claimed_wh} Wh: by its own measurement it can \
         vouch for at most {limit_wh} Wh now"
    )]
    Refused {
        /// An attestation or a receipt.
        what: &'static str,
        /// The claim, Wh.
        claimed_wh: u64,
        /// The device's limit, Wh.
        limit_wh: u64,
    },
    /// A receipt for a trade whose release the battery did not see begin.
    #[error("the battery never saw trade {trade} begin, so it cannot receipt it")]
    UnknownTrade {
        /// The trade.
        trade: Hash32,
    },
    /// The battery holds no key for this community.
    #[error("the battery holds no attestor key (it is not commissioned for this home)")]
    NotCommissioned,
    /// The signature does not verify with the home's attestor key.
    #[error(
        "the battery's signature does not verify with this home's attestor key in genesis: is \
         it commissioned for this community and home?"
    )]
    BadSignature,
    /// The signing block could not be reached or answered something else.
    #[error("the battery's signing block (register {BASE}): {0}")]
    Link(String),
}

/// The battery's signing block, over the battery actor's Modbus link.
#[derive(Clone)]
pub struct DeviceSigner {
    io: SharedIo,
    /// The attestor key genesis names for this home: every answer is checked against it.
    expected: PublicKey,
    seq: Arc<AtomicU32>,
}

impl std::fmt::Debug for DeviceSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSigner").finish_non_exhaustive()
    }
}

impl DeviceSigner {
    pub(crate) fn new(io: SharedIo, expected: PublicKey) -> DeviceSigner {
        DeviceSigner {
            io,
            expected,
            seq: Arc::new(AtomicU32::new(1)),
        }
    }

    /// Sends `request` and returns the device's answer to it.
    pub async fn ask(&self, request: SignRequest) -> Result<SignOutcome, AttestError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut io = self.io.lock().await;
        let (link, unit) = io.link_and_unit();
        let header = answered(
            "the header",
            link.read_holding(unit, BASE, KEY_AT + KEY_WORDS as u16)
                .await,
        )?;
        let key = decode_header(&header).map_err(|e| AttestError::Link(e.to_string()))?;
        if MemberKey(key).to_public_key().ok() != Some(self.expected) {
            return Err(AttestError::BadSignature);
        }
        answered(
            "the request",
            link.write_registers(unit, BASE + REQUEST_AT, &request.encode(seq))
                .await,
        )?;
        let words = answered(
            "the response",
            link.read_holding(unit, BASE + RESPONSE_AT, RESPONSE_WORDS as u16)
                .await,
        )?;
        let response =
            SignResponse::decode(&words).map_err(|e| AttestError::Link(e.to_string()))?;
        if response.seq != seq {
            return Err(AttestError::Link(format!(
                "answered request {} where {seq} was asked",
                response.seq
            )));
        }
        Ok(response.outcome)
    }

    async fn sign(
        &self,
        what: &'static str,
        claimed_wh: u64,
        digest: &Hash32,
        request: SignRequest,
    ) -> Result<Signature, AttestError> {
        match self.ask(request).await? {
            SignOutcome::Signed(bytes) => {
                let sig = Signature(bytes);
                if sig.verify(digest, &self.expected) {
                    Ok(sig)
                } else {
                    Err(AttestError::BadSignature)
                }
            }
            SignOutcome::Refused { limit_wh } => Err(AttestError::Refused {
                what,
                claimed_wh,
                limit_wh,
            }),
            SignOutcome::UnknownTrade => match request {
                SignRequest::Receipt { trade, .. } => Err(AttestError::UnknownTrade {
                    trade: Hash32(trade),
                }),
                _ => Err(AttestError::Link("unknown trade for a non-receipt".into())),
            },
            SignOutcome::NotCommissioned => Err(AttestError::NotCommissioned),
            other => Err(AttestError::Link(format!("unexpected answer {other:?}"))),
        }
    }
}

/// A Modbus exchange's value, or why `what` did not get through.
fn answered<T>(what: &str, r: gridlet_drivers::modbus::ModbusResult<T>) -> Result<T, AttestError> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(code)) => Err(AttestError::Link(format!(
            "{what} was refused with exception {code:?}"
        ))),
        Err(e) => Err(AttestError::Link(format!("{what}: {e}"))),
    }
}

/// Who signs this home's claims.
#[derive(Debug, Clone)]
pub enum Attestor {
    /// Nobody: the home has no battery (it can buy, not sell).
    None,
    /// The gateway, with the attestor key from its data directory (lower trust).
    Gateway(SecretKey),
    /// The battery, over its signing block.
    Device(DeviceSigner),
}

impl Attestor {
    /// An attestation of `energy_wh` for `interval` by home `me`.
    pub async fn attest(
        &self,
        chain_id: &Hash32,
        me: &MemberKey,
        interval: u64,
        energy_wh: WattHours,
    ) -> Result<Attestation, AttestError> {
        let digest = attestation_digest(chain_id, me, interval, energy_wh);
        let signature = match self {
            Attestor::None => return Err(AttestError::NoSigner),
            Attestor::Gateway(key) => Signature::sign(&digest, key),
            Attestor::Device(d) => {
                d.sign(
                    "an attestation",
                    energy_wh.get(),
                    &digest,
                    SignRequest::Attest {
                        interval,
                        energy_wh: energy_wh.get(),
                    },
                )
                .await?
            }
        };
        Ok(Attestation {
            interval,
            energy_wh,
            signature,
        })
    }

    /// The receipt of `delivered_wh` for `trade`.
    pub async fn receipt(
        &self,
        chain_id: &Hash32,
        trade: &Hash32,
        delivered_wh: WattHours,
    ) -> Result<Signature, AttestError> {
        let digest = receipt_digest(chain_id, trade, delivered_wh);
        match self {
            Attestor::None => Err(AttestError::NoSigner),
            Attestor::Gateway(key) => Ok(Signature::sign(&digest, key)),
            Attestor::Device(d) => {
                d.sign(
                    "a receipt",
                    delivered_wh.get(),
                    &digest,
                    SignRequest::Receipt {
                        trade: trade.0,
                        delivered_wh: delivered_wh.get(),
                    },
                )
                .await
            }
        }
    }

    /// Whether anything can sign (a battery is there).
    pub fn is_some(&self) -> bool {
        !matches!(self, Attestor::None)
    }
}
