//! The battery's signing block: a vendor register map, outside the SunSpec models (where
//! vendors put their own registers), through which a battery that holds the home's attestor
//! key signs the home's energy claims — as a calibrated meter signs its readings under OCMF.
//! The gateway writes a request; the device checks it against what it measures itself and
//! answers with a signature or a refusal. This module is the codec only (pure, no I/O): the
//! gateway's driver and the HIL battery both use it, so they cannot drift apart.
//!
//! Layout from [`BASE`] (16-bit big-endian words):
//!
//! | offset | words | content |
//! |---|---|---|
//! | 0 | 2 | magic `0x4753 0x0001` ("GS", version 1) |
//! | 2 | 17 | the attestor's public key, 33 bytes, the last word's low byte 0 |
//! | 20 | 27 | request: `op`, `u64 a`, `u64 b`, `[32] trade`, `u32 seq` |
//! | 50 | 39 | response: `status`, `u32 seq`, `u64 limit_wh`, `[64] signature` |
//!
//! Requests: `op 1` attest `energy_wh = b` for `interval = a`; `op 2` begin trade (`a` = 1 for a
//! charge, 0 for a discharge): the device starts counting what it moves for it; `op 3` receipt
//! of `delivered_wh = a` for the trade. The response echoes the request's `seq`.

/// First register of the block.
pub const BASE: u16 = 50_000;
/// Registers in the block.
pub const LEN: u16 = 89;
/// The magic words at [`BASE`].
pub const MAGIC: [u16; 2] = [0x4753, 0x0001];
/// Offset of the attestor key.
pub const KEY_AT: u16 = 2;
/// Words of the attestor key.
pub const KEY_WORDS: usize = 17;
/// Offset of the request.
pub const REQUEST_AT: u16 = 20;
/// Words of a request.
pub const REQUEST_WORDS: usize = 27;
/// Offset of the response.
pub const RESPONSE_AT: u16 = 50;
/// Words of a response.
pub const RESPONSE_WORDS: usize = 39;

/// What the gateway asks the device to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignRequest {
    /// Attest `energy_wh` of sellable energy for `interval`.
    Attest {
        /// The market interval.
        interval: u64,
        /// Energy claimed, Wh.
        energy_wh: u64,
    },
    /// A trade's release starts: count what the battery moves for it from now on.
    BeginTrade {
        /// The trade id.
        trade: [u8; 32],
        /// A charge (the battery takes energy) rather than a discharge.
        charge: bool,
    },
    /// Sign the receipt of `delivered_wh` for the trade.
    Receipt {
        /// The trade id.
        trade: [u8; 32],
        /// Energy delivered, Wh.
        delivered_wh: u64,
    },
}

/// The device's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignOutcome {
    /// Nothing asked yet.
    Idle,
    /// The signature over the request's digest.
    Signed([u8; 64]),
    /// The trade's counting started.
    Begun,
    /// The claim is beyond what the device measured; it would sign at most `limit_wh`.
    Refused {
        /// The most it would sign now, Wh.
        limit_wh: u64,
    },
    /// A receipt for a trade whose begin the device never saw.
    UnknownTrade,
    /// The request did not decode.
    BadRequest,
    /// The device holds no key for this community (not commissioned).
    NotCommissioned,
}

/// A response with the sequence number of the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignResponse {
    /// The request's `seq`.
    pub seq: u32,
    /// The answer.
    pub outcome: SignOutcome,
}

/// Why a block's words do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignerCodecError {
    /// Fewer or more words than the part has.
    #[error("signing block: {what} has {got} words, expected {expected}")]
    Length {
        /// Which part.
        what: &'static str,
        /// Words given.
        got: usize,
        /// Words expected.
        expected: usize,
    },
    /// An operation or status code this version does not know.
    #[error("signing block: unknown {what} code {code}")]
    UnknownCode {
        /// Which field.
        what: &'static str,
        /// The code.
        code: u16,
    },
    /// The block does not start with the magic words: no signing device there.
    #[error("no signing block at register {BASE} (found {found:04x?} instead of the magic)")]
    NoMagic {
        /// The words found.
        found: [u16; 2],
    },
}

fn bytes_to_words(bytes: &[u8], words: usize) -> Vec<u16> {
    (0..words)
        .map(|i| {
            let hi = bytes.get(2 * i).copied().unwrap_or(0);
            let lo = bytes.get(2 * i + 1).copied().unwrap_or(0);
            u16::from_be_bytes([hi, lo])
        })
        .collect()
}

fn words_to_bytes<const N: usize>(words: &[u16]) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, b) in words
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .take(N)
        .enumerate()
    {
        if let Some(slot) = out.get_mut(i) {
            *slot = b;
        }
    }
    out
}

fn u64_words(v: u64) -> [u16; 4] {
    let b = v.to_be_bytes();
    [
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]),
    ]
}

fn words_u64(w: &[u16]) -> u64 {
    w.iter()
        .take(4)
        .fold(0u64, |acc, x| (acc << 16) | u64::from(*x))
}

fn check_len(what: &'static str, words: &[u16], expected: usize) -> Result<(), SignerCodecError> {
    if words.len() == expected {
        Ok(())
    } else {
        Err(SignerCodecError::Length {
            what,
            got: words.len(),
            expected,
        })
    }
}

/// The key words of the block.
pub fn encode_key(key: &[u8; 33]) -> Vec<u16> {
    bytes_to_words(key, KEY_WORDS)
}

/// Checks the magic and returns the attestor key of a block read from [`BASE`] (at least
/// `KEY_AT + KEY_WORDS` words).
pub fn decode_header(words: &[u16]) -> Result<[u8; 33], SignerCodecError> {
    let found = [
        words.first().copied().unwrap_or(0),
        words.get(1).copied().unwrap_or(0),
    ];
    if found != MAGIC {
        return Err(SignerCodecError::NoMagic { found });
    }
    let key = words
        .get(usize::from(KEY_AT)..usize::from(KEY_AT) + KEY_WORDS)
        .ok_or(SignerCodecError::Length {
            what: "header",
            got: words.len(),
            expected: usize::from(KEY_AT) + KEY_WORDS,
        })?;
    Ok(words_to_bytes::<33>(key))
}

impl SignRequest {
    /// The request's words, with `seq`.
    pub fn encode(&self, seq: u32) -> Vec<u16> {
        let (op, a, b, trade) = match *self {
            SignRequest::Attest {
                interval,
                energy_wh,
            } => (1u16, interval, energy_wh, [0u8; 32]),
            SignRequest::BeginTrade { trade, charge } => (2, u64::from(charge), 0, trade),
            SignRequest::Receipt {
                trade,
                delivered_wh,
            } => (3, delivered_wh, 0, trade),
        };
        let mut w = Vec::with_capacity(REQUEST_WORDS);
        w.push(op);
        w.extend(u64_words(a));
        w.extend(u64_words(b));
        w.extend(bytes_to_words(&trade, 16));
        w.extend([(seq >> 16) as u16, seq as u16]);
        w
    }

    /// A request and its `seq` from its words.
    pub fn decode(words: &[u16]) -> Result<(SignRequest, u32), SignerCodecError> {
        check_len("request", words, REQUEST_WORDS)?;
        let part = |from: usize, to: usize| words.get(from..to).unwrap_or(&[]);
        let (a, b) = (words_u64(part(1, 5)), words_u64(part(5, 9)));
        let trade = words_to_bytes::<32>(part(9, 25));
        let seq = part(25, 27)
            .iter()
            .fold(0u32, |acc, x| (acc << 16) | u32::from(*x));
        let request = match words.first().copied().unwrap_or(0) {
            1 => SignRequest::Attest {
                interval: a,
                energy_wh: b,
            },
            2 => SignRequest::BeginTrade {
                trade,
                charge: a == 1,
            },
            3 => SignRequest::Receipt {
                trade,
                delivered_wh: a,
            },
            code => return Err(SignerCodecError::UnknownCode { what: "op", code }),
        };
        Ok((request, seq))
    }
}

impl SignResponse {
    /// The response's words.
    pub fn encode(&self) -> Vec<u16> {
        let (status, limit, sig) = match self.outcome {
            SignOutcome::Idle => (0u16, 0, [0u8; 64]),
            SignOutcome::Signed(sig) => (1, 0, sig),
            SignOutcome::Begun => (2, 0, [0u8; 64]),
            SignOutcome::Refused { limit_wh } => (3, limit_wh, [0u8; 64]),
            SignOutcome::UnknownTrade => (4, 0, [0u8; 64]),
            SignOutcome::BadRequest => (5, 0, [0u8; 64]),
            SignOutcome::NotCommissioned => (6, 0, [0u8; 64]),
        };
        let mut w = Vec::with_capacity(RESPONSE_WORDS);
        w.push(status);
        w.extend([(self.seq >> 16) as u16, self.seq as u16]);
        w.extend(u64_words(limit));
        w.extend(bytes_to_words(&sig, 32));
        w
    }

    /// A response from its words.
    pub fn decode(words: &[u16]) -> Result<SignResponse, SignerCodecError> {
        check_len("response", words, RESPONSE_WORDS)?;
        let part = |from: usize, to: usize| words.get(from..to).unwrap_or(&[]);
        let seq = part(1, 3)
            .iter()
            .fold(0u32, |acc, x| (acc << 16) | u32::from(*x));
        let limit_wh = words_u64(part(3, 7));
        let outcome = match words.first().copied().unwrap_or(0) {
            0 => SignOutcome::Idle,
            1 => SignOutcome::Signed(words_to_bytes::<64>(part(7, 39))),
            2 => SignOutcome::Begun,
            3 => SignOutcome::Refused { limit_wh },
            4 => SignOutcome::UnknownTrade,
            5 => SignOutcome::BadRequest,
            6 => SignOutcome::NotCommissioned,
            code => {
                return Err(SignerCodecError::UnknownCode {
                    what: "status",
                    code,
                })
            }
        };
        Ok(SignResponse { seq, outcome })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_responses_and_the_key_round_trip() {
        let trade = [7u8; 32];
        for (r, seq) in [
            (
                SignRequest::Attest {
                    interval: u64::MAX - 3,
                    energy_wh: 1_234,
                },
                1,
            ),
            (
                SignRequest::BeginTrade {
                    trade,
                    charge: true,
                },
                0x0102_0304,
            ),
            (
                SignRequest::Receipt {
                    trade,
                    delivered_wh: 999,
                },
                u32::MAX,
            ),
        ] {
            let w = r.encode(seq);
            assert_eq!(w.len(), REQUEST_WORDS);
            assert_eq!(SignRequest::decode(&w), Ok((r, seq)));
        }
        let mut sig = [0u8; 64];
        sig.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        for outcome in [
            SignOutcome::Signed(sig),
            SignOutcome::Refused { limit_wh: 42 },
            SignOutcome::UnknownTrade,
            SignOutcome::NotCommissioned,
        ] {
            let r = SignResponse { seq: 9, outcome };
            let w = r.encode();
            assert_eq!(w.len(), RESPONSE_WORDS);
            assert_eq!(SignResponse::decode(&w), Ok(r));
        }
        let mut key = [0u8; 33];
        key[0] = 2;
        key[32] = 0xAB;
        let mut header = MAGIC.to_vec();
        header.extend(encode_key(&key));
        assert_eq!(decode_header(&header), Ok(key));
    }

    #[test]
    fn garbage_is_refused_by_name() {
        assert_eq!(
            decode_header(&[0xFFFF, 0xFFFF]),
            Err(SignerCodecError::NoMagic {
                found: [0xFFFF, 0xFFFF]
            })
        );
        let mut w = SignRequest::Attest {
            interval: 1,
            energy_wh: 1,
        }
        .encode(1);
        w[0] = 9;
        assert_eq!(
            SignRequest::decode(&w),
            Err(SignerCodecError::UnknownCode {
                what: "op",
                code: 9
            })
        );
        assert!(matches!(
            SignResponse::decode(&[1, 2, 3]),
            Err(SignerCodecError::Length { got: 3, .. })
        ));
    }
}
