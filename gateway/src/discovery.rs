//! Finding the home's devices at start-up: SunSpec discovery with retries, the battery's
//! release journal.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use gridlet_actors::battery::BatterySettings;
use gridlet_actors::devices::DeviceTarget;
use gridlet_actors::ledger_actor::Clock;
use gridlet_drivers::backoff::BackoffPolicy;

use crate::config::{RawBattery, RawPv};

pub type BatteryParts = (
    gridlet_drivers::modbus::ModbusLink,
    gridlet_drivers::device::SunSpecDevice,
    gridlet_actors::journal::ReleaseJournal,
    BatterySettings,
);

/// Finds a device, retrying for a while: a gateway often boots before the inverter's network
/// interface does.
async fn discover(
    target: &DeviceTarget,
) -> Result<(
    gridlet_drivers::modbus::ModbusLink,
    gridlet_drivers::device::SunSpecDevice,
)> {
    let policy = BackoffPolicy {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(5),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut reconnect = policy.schedule();
    loop {
        match target.connect().await {
            Ok(found) => return Ok(found),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(%e, "device not found yet; retrying");
                tokio::time::sleep(reconnect.failed().max(Duration::from_millis(100))).await;
            }
            Err(e) => anyhow::bail!("{e}"),
        }
    }
}

/// Discovers the battery and opens its release journal.
pub async fn connect_battery(
    b: &RawBattery,
    data_dir: &Path,
    clock: Clock,
    chain_id: gridlet_ledger::Hash32,
) -> Result<BatteryParts> {
    let target = DeviceTarget {
        what: "battery".into(),
        link: "battery".into(),
        host: b.host.clone(),
        port: b.port,
        settings: gridlet_drivers::device::DeviceSettings {
            unit: b.unit,
            order: b.word_order,
            invert: false,
            limits: gridlet_drivers::quality::Limits {
                nameplate_w: b.nameplate_w,
            },
            stale_after: Duration::from_millis(b.poll_ms.saturating_mul(5)),
        },
    };
    let (link, device) = discover(&target).await?;
    let journal = gridlet_actors::journal::ReleaseJournal::open(data_dir)?;
    let settings = BatterySettings {
        release_power_w: b.release_power_w,
        clock,
        poll: Duration::from_millis(b.poll_ms),
        safe_after: Duration::from_millis(b.safe_after_ms),
        chain_id,
    };
    Ok((link, device, journal, settings))
}

/// Where the PV inverter is expected (its actor finds it, retrying).
pub fn pv_target(p: &RawPv) -> DeviceTarget {
    DeviceTarget {
        what: "PV inverter".into(),
        link: "pv".into(),
        host: p.host.clone(),
        port: p.port,
        settings: gridlet_drivers::device::DeviceSettings {
            unit: p.unit,
            order: p.word_order,
            invert: p.invert,
            limits: gridlet_drivers::quality::Limits {
                nameplate_w: p.nameplate_w,
            },
            stale_after: Duration::from_millis(p.poll_ms.saturating_mul(5)),
        },
    }
}
