//! While a trade delivers to this home, its grid meter's net power goes on the bus at every
//! reading, signed with the member key: the seller's battery follows it
//! ([`gridlet_core::net_power`]). Outside a delivery window nothing is published.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gridlet_core::net_power::NetPowerMessage;
use gridlet_core::node::BusMessage;
use gridlet_ledger::Hash32;
use secp256k1::SecretKey;

use crate::bus::BusHandle;
use crate::clock::Clock;
use crate::devices::{fresh, MeterFeed};

/// Until when (community clock, ms) this home is being delivered to; the market actor sets it
/// to the latest deadline of its released, unsettled purchases.
#[derive(Debug, Clone, Default)]
pub struct BuyingUntil(Arc<AtomicU64>);

impl BuyingUntil {
    /// Publishes until `until_ms` (0: not at all).
    pub fn set(&self, until_ms: u64) {
        self.0.store(until_ms, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Starts publishing this home's net power (readings no older than `max_age`) while
/// `window` says so. Runs until the meter's feed closes.
pub fn spawn(
    mut meter: MeterFeed,
    bus: BusHandle,
    chain_id: Hash32,
    key: SecretKey,
    clock: Clock,
    max_age: Duration,
    window: BuyingUntil,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while meter.changed().await.is_ok() {
            let now = clock.now_ms();
            if now >= window.get() {
                continue;
            }
            let Some(w) = fresh(meter.borrow().power_w, max_age) else {
                continue;
            };
            let m = NetPowerMessage::sign(&chain_id, &key, now, w.round() as i64);
            if bus.publish(BusMessage::NetPower(m)).await {
                metrics::counter!(crate::metrics::NET_POWER_SENT).increment(1);
            }
        }
    })
}
