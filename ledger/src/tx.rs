//! Transactions: what a member asks the community to do, signed by that member.
//!
//! Encoding (see `docs/protocol.md`): `version u8 = 1 | chain_id [32] | sender [33] |
//! nonce u64 | fee u64 | kind u8 | body`. The signing digest is
//! `SHA-256("gridlet/tx/v1" || encoding)`; a signed transaction is the encoding followed by the
//! 64-byte signature, and its id is `SHA-256("gridlet/txid/v1" || signed bytes)`.

use secp256k1::SecretKey;
use serde::Serialize;

use crate::codec::{Reader, Writer};
use crate::crypto::{Hash32, MemberKey, Signature};
use crate::error::DecodeError;

/// The transaction format version this node writes and accepts.
pub const TX_VERSION: u8 = 1;

const TX_SIGN_TAG: &[u8] = b"gridlet/tx/v1";
const TX_ID_TAG: &[u8] = b"gridlet/txid/v1";

/// Kind byte of [`TxPayload::Transfer`].
pub const KIND_TRANSFER: u8 = 1;

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
        amount: u64,
    },
}

impl TxPayload {
    /// The kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            TxPayload::Transfer { .. } => KIND_TRANSFER,
        }
    }

    fn encode_into(&self, w: &mut Writer) {
        w.u8(self.kind());
        match self {
            TxPayload::Transfer { to, amount } => {
                w.fixed(&to.0).u64(*amount);
            }
        }
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<TxPayload, DecodeError> {
        match r.u8()? {
            KIND_TRANSFER => Ok(TxPayload::Transfer {
                to: MemberKey::from_bytes(r.array()?)?,
                amount: r.u64()?,
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
    pub fee: u64,
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
            .u64(self.fee);
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
            fee: r.u64()?,
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
            fee: 10,
            payload: TxPayload::Transfer { to, amount: 500 },
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
