//! Hashes, member keys and signatures.
//!
//! Signatures are secp256k1 ECDSA over a SHA-256 digest, in the 64-byte compact form `r || s`
//! with `s` in the lower half of the group order (low-S). libsecp256k1 already refuses high-S
//! signatures on verification; decoding refuses them too, so a re-signed or re-encoded copy of
//! a transaction can never be a second valid encoding of it.

use std::fmt;

use secp256k1::{ecdsa, Message, PublicKey, SecretKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::codec::{from_hex, to_hex};
use crate::error::DecodeError;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// The all-zero hash, used as the previous hash of the first block.
    pub const ZERO: Hash32 = Hash32([0u8; 32]);

    /// SHA-256 of `tag || parts[0] || parts[1] || …`.
    pub fn tagged(tag: &[u8], parts: &[&[u8]]) -> Hash32 {
        let mut h = Sha256::new();
        h.update(tag);
        for p in parts {
            h.update(p);
        }
        Hash32(h.finalize().into())
    }

    /// SHA-256 of `bytes`.
    pub fn sha256(bytes: &[u8]) -> Hash32 {
        Hash32(Sha256::digest(bytes).into())
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Hash32> {
        let bytes = from_hex(s)?;
        Some(Hash32(bytes.try_into().ok()?))
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({})", self.to_hex())
    }
}

impl Serialize for Hash32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hash32::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex characters"))
    }
}

/// A member's identity: its 33-byte compressed secp256k1 public key.
///
/// Decoding only checks the prefix byte (0x02 or 0x03); whether the bytes are a point on the
/// curve is checked once, when genesis is loaded, because only genesis members can act.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberKey(pub [u8; 33]);

impl MemberKey {
    /// The key of a secret key.
    pub fn from_secret(sk: &SecretKey) -> MemberKey {
        MemberKey(sk.public_key().serialize())
    }

    /// Accepts 33 bytes with a compressed-point prefix.
    pub fn from_bytes(bytes: [u8; 33]) -> Result<MemberKey, DecodeError> {
        match bytes[0] {
            0x02 | 0x03 => Ok(MemberKey(bytes)),
            prefix => Err(DecodeError::InvalidKeyPrefix { prefix }),
        }
    }

    /// Parses the key as a curve point.
    pub fn to_public_key(&self) -> Result<PublicKey, DecodeError> {
        PublicKey::from_byte_array_compressed(self.0)
            .map_err(|_| DecodeError::InvalidKey { key: self.to_hex() })
    }

    /// Lower-case hex of the 33 bytes.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Parses 66 hex characters into a key that is a valid curve point.
    pub fn from_hex(s: &str) -> Result<MemberKey, DecodeError> {
        let bytes: [u8; 33] = from_hex(s)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| DecodeError::InvalidKey { key: s.to_owned() })?;
        let key = MemberKey::from_bytes(bytes)?;
        key.to_public_key()?;
        Ok(key)
    }

    /// The first 8 hex characters, for logs and summaries.
    pub fn short(&self) -> String {
        to_hex(&self.0[1..5])
    }
}

impl fmt::Display for MemberKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemberKey({})", self.short())
    }
}

impl Serialize for MemberKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for MemberKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MemberKey::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// A 64-byte compact low-S ECDSA signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl Signature {
    /// Signs a 32-byte digest (RFC 6979 deterministic nonce, low-S).
    pub fn sign(digest: &Hash32, sk: &SecretKey) -> Signature {
        Signature(ecdsa::sign(Message::from_digest(digest.0), sk).serialize_compact())
    }

    /// Accepts only the canonical form: `r` and `s` below the group order and `s` low.
    pub fn from_bytes(bytes: [u8; 64]) -> Result<Signature, DecodeError> {
        let parsed =
            ecdsa::Signature::from_compact(&bytes).map_err(|_| DecodeError::InvalidSignature)?;
        let mut normalized = parsed;
        normalized.normalize_s();
        if normalized != parsed {
            return Err(DecodeError::HighS);
        }
        Ok(Signature(bytes))
    }

    /// Whether this is `key`'s signature over `digest`.
    pub fn verify(&self, digest: &Hash32, key: &PublicKey) -> bool {
        match ecdsa::Signature::from_compact(&self.0) {
            Ok(sig) => ecdsa::verify(&sig, Message::from_digest(digest.0), key).is_ok(),
            Err(_) => false,
        }
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Parses 128 hex digits of a canonical signature.
    pub fn from_hex(s: &str) -> Option<Signature> {
        let bytes: [u8; 64] = crate::codec::from_hex(s)?.try_into().ok()?;
        Signature::from_bytes(bytes).ok()
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", to_hex(&self.0[..8]))
    }
}

/// A secret key derived deterministically from a seed and an index, for simulations and tests.
///
/// Never use for real homes: `gridlet keygen` draws keys from the operating system's RNG.
pub fn deterministic_key(seed: u64, index: u64) -> SecretKey {
    let mut counter = 0u64;
    loop {
        let digest = Hash32::tagged(
            b"gridlet/devkey/v1",
            &[
                &seed.to_be_bytes(),
                &index.to_be_bytes(),
                &counter.to_be_bytes(),
            ],
        );
        if let Ok(sk) = SecretKey::from_secret_bytes(digest.0) {
            return sk;
        }
        counter = counter.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_s_signature_is_refused() {
        let sk = deterministic_key(1, 1);
        let digest = Hash32::sha256(b"x");
        let sig = Signature::sign(&digest, &sk);
        assert!(sig.verify(&digest, &sk.public_key()));
        // s' = n - s is the malleated twin of the same signature.
        let n: [u8; 32] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c,
            0xd0, 0x36, 0x41, 0x41,
        ];
        let mut s = [0u8; 32];
        s.copy_from_slice(&sig.0[32..]);
        let mut high = [0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let d = n[i] as i16 - s[i] as i16 - borrow;
            high[i] = d.rem_euclid(256) as u8;
            borrow = if d < 0 { 1 } else { 0 };
        }
        let mut malleated = sig.0;
        malleated[32..].copy_from_slice(&high);
        assert_eq!(Signature::from_bytes(malleated), Err(DecodeError::HighS));
        assert!(!Signature(malleated).verify(&digest, &sk.public_key()));
        assert_eq!(Signature::from_bytes(sig.0), Ok(sig));
    }

    #[test]
    fn member_key_hex_checks_the_point() {
        let key = MemberKey::from_secret(&deterministic_key(1, 2));
        assert_eq!(MemberKey::from_hex(&key.to_hex()).unwrap(), key);
        let mut bad = key.0;
        bad[0] = 0x05;
        assert!(MemberKey::from_hex(&to_hex(&bad)).is_err());
        let mut off_curve = key.0;
        off_curve[1..].fill(0xff);
        assert!(MemberKey::from_hex(&to_hex(&off_curve)).is_err());
    }
}
