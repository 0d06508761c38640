//! A buyer's live net power, signed, as it travels on the bus while a trade delivers to it: the
//! seller's battery follows it (it covers what the buyer imports, no more), and the delivered
//! energy is what both meters saw at once — `min(seller's export, buyer's import)`.
//!
//! Signed by the buying home's member key (digest in `docs/protocol.md` §9.4); only the trade's
//! buyers, named by the final chain, count, and a reading older than the last one seen from a
//! home is ignored (no replay).

use gridlet_ledger::crypto::{Hash32, MemberKey, Signature};
use secp256k1::SecretKey;

/// Domain tag of the signed digest.
pub const NET_POWER_TAG: &[u8] = b"gridlet/netpower/v1";

/// A home's net power at its grid meter (positive = import), as it travels on the bus.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetPowerMessage {
    /// The home.
    pub home: MemberKey,
    /// When the meter read it (community clock, ms).
    pub at_ms: u64,
    /// Net power, W (positive = import from the grid).
    pub net_w: i64,
    /// The home's signature over [`digest`], hex.
    pub signature: String,
}

/// The signed digest: `H(tag || chain_id || home || u64 at_ms || i64 net_w)`.
pub fn digest(chain_id: &Hash32, home: &MemberKey, at_ms: u64, net_w: i64) -> Hash32 {
    Hash32::tagged(
        NET_POWER_TAG,
        &[
            &chain_id.0,
            &home.0,
            &at_ms.to_be_bytes(),
            &net_w.to_be_bytes(),
        ],
    )
}

impl NetPowerMessage {
    /// Signs a reading as `key`'s home.
    pub fn sign(chain_id: &Hash32, key: &SecretKey, at_ms: u64, net_w: i64) -> NetPowerMessage {
        let home = MemberKey::from_secret(key);
        let sig = Signature::sign(&digest(chain_id, &home, at_ms, net_w), key);
        NetPowerMessage {
            home,
            at_ms,
            net_w,
            signature: sig.to_hex(),
        }
    }

    /// Whether the signature is the home's.
    pub fn verifies(&self, chain_id: &Hash32) -> bool {
        let Ok(public) = self.home.to_public_key() else {
            return false;
        };
        let Some(sig) = Signature::from_hex(&self.signature) else {
            return false;
        };
        sig.verify(
            &digest(chain_id, &self.home, self.at_ms, self.net_w),
            &public,
        )
    }
}

/// The latest verified net power of each home that sent one, newest reading wins.
#[derive(Debug, Clone, Default)]
pub struct NetPowers {
    latest: std::collections::BTreeMap<MemberKey, (u64, i64, u64)>,
}

impl NetPowers {
    /// Records a verified message received at `now_ms`; false if it is not newer than the
    /// last one from that home (a replay or a reordering).
    pub fn record(&mut self, m: &NetPowerMessage, now_ms: u64) -> bool {
        match self.latest.get(&m.home) {
            Some((at, _, _)) if *at >= m.at_ms => false,
            _ => {
                self.latest.insert(m.home, (m.at_ms, m.net_w, now_ms));
                true
            }
        }
    }

    /// The summed import (W) of `homes` whose readings arrived within `max_age_ms` of `now_ms`;
    /// `None` if none of them has a fresh reading.
    pub fn import_of(&self, homes: &[MemberKey], now_ms: u64, max_age_ms: u64) -> Option<u64> {
        self.sum_of(homes, now_ms, max_age_ms, |net| net)
    }

    /// The summed export (W) of `homes`, as [`NetPowers::import_of`].
    pub fn export_of(&self, homes: &[MemberKey], now_ms: u64, max_age_ms: u64) -> Option<u64> {
        self.sum_of(homes, now_ms, max_age_ms, i64::saturating_neg)
    }

    /// What a trade's peers offer: the buyers' import for a discharge, the seller's export for
    /// a charge.
    pub fn offered_by(
        &self,
        homes: &[MemberKey],
        mode: gridlet_ledger::DeliveryMode,
        now_ms: u64,
        max_age_ms: u64,
    ) -> Option<u64> {
        match mode {
            gridlet_ledger::DeliveryMode::Discharge => self.import_of(homes, now_ms, max_age_ms),
            gridlet_ledger::DeliveryMode::Charge => self.export_of(homes, now_ms, max_age_ms),
        }
    }

    fn sum_of(
        &self,
        homes: &[MemberKey],
        now_ms: u64,
        max_age_ms: u64,
        direction: impl Fn(i64) -> i64,
    ) -> Option<u64> {
        // Called at every battery poll: no allocation.
        homes
            .iter()
            .filter_map(|h| self.latest.get(h))
            .filter(|(_, _, got)| now_ms.saturating_sub(*got) <= max_age_ms)
            .fold(None, |acc: Option<u64>, (_, w, _)| {
                Some(
                    acc.unwrap_or(0)
                        .saturating_add(u64::try_from(direction(*w)).unwrap_or(0)),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridlet_ledger::crypto::deterministic_key;

    #[test]
    fn signed_readings_verify_and_a_changed_one_does_not() {
        let chain = Hash32::sha256(b"c");
        let key = deterministic_key(5, 0);
        let m = NetPowerMessage::sign(&chain, &key, 1_000, 750);
        assert!(m.verifies(&chain));
        assert!(!m.verifies(&Hash32::sha256(b"another chain")));
        let forged = NetPowerMessage {
            net_w: 5_000,
            ..m.clone()
        };
        assert!(!forged.verifies(&chain));
        let garbled = NetPowerMessage {
            signature: "zz".into(),
            ..m
        };
        assert!(!garbled.verifies(&chain));
    }

    #[test]
    fn only_newer_fresh_readings_of_the_named_homes_count() {
        let chain = Hash32::sha256(b"c");
        let (a, b) = (deterministic_key(5, 1), deterministic_key(5, 2));
        let mut p = NetPowers::default();
        assert!(p.record(&NetPowerMessage::sign(&chain, &a, 10, 400), 10));
        assert!(
            !p.record(&NetPowerMessage::sign(&chain, &a, 10, 9_999), 11),
            "replay"
        );
        assert!(p.record(&NetPowerMessage::sign(&chain, &b, 12, -300), 12));
        let homes = [MemberKey::from_secret(&a), MemberKey::from_secret(&b)];
        // The exporting home adds nothing; an unnamed home is not asked.
        assert_eq!(p.import_of(&homes, 20, 100), Some(400));
        assert_eq!(p.import_of(&homes[1..], 20, 100), Some(0));
        assert_eq!(p.import_of(&homes, 500, 100), None, "stale");
        // A charge trade asks for the seller's export instead.
        assert_eq!(p.export_of(&homes, 20, 100), Some(300));
        assert_eq!(
            p.offered_by(&homes[..1], gridlet_ledger::DeliveryMode::Charge, 20, 100),
            Some(0)
        );
    }
}
