//! Finding the home's devices at start-up: SunSpec discovery with retries, the battery's
//! release journal.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use gridlet_actors::battery::BatterySettings;
use gridlet_actors::ledger_actor::Clock;
use gridlet_drivers::backoff::BackoffPolicy;

use crate::config::{RawBattery, RawPv};

pub type BatteryParts = (
    gridlet_drivers::modbus::ModbusLink,
    gridlet_drivers::device::SunSpecDevice,
    gridlet_actors::journal::ReleaseJournal,
    BatterySettings,
);

/// Finds a SunSpec device at `host:port` unit `unit`, retrying for a while: a gateway often
/// boots before the inverter's network interface does.
async fn discover(
    what: &str,
    host: &str,
    port: u16,
    settings: gridlet_drivers::device::DeviceSettings,
) -> Result<(
    gridlet_drivers::modbus::ModbusLink,
    gridlet_drivers::device::SunSpecDevice,
)> {
    use gridlet_drivers::modbus::{Endpoint, LinkConfig, ModbusLink};
    let policy = BackoffPolicy {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(5),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut failures = 0u32;
    loop {
        let attempt = async {
            let addr = tokio::net::lookup_host((host, port))
                .await
                .with_context(|| format!("cannot resolve {what} {host}:{port}"))?
                .next()
                .with_context(|| format!("{what} {host} has no address"))?;
            let name = if what == "battery" { "battery" } else { "pv" };
            let mut link = ModbusLink::new(LinkConfig::new(Endpoint::Tcp(addr)).named(name));
            let unit = settings.unit;
            let device =
                gridlet_drivers::device::SunSpecDevice::discover(&mut link, settings.clone())
                    .await?
                    .with_context(|| format!("no SunSpec {what} at {addr} unit {unit}"))?;
            anyhow::Ok((link, device))
        };
        match attempt.await {
            Ok((link, device)) => {
                tracing::info!(what, models = ?device.models().iter().map(|m| m.id).collect::<Vec<_>>(), "device found");
                return Ok((link, device));
            }
            Err(e) if std::time::Instant::now() < deadline => {
                failures = failures.saturating_add(1);
                tracing::warn!(what, %e, "device not found yet; retrying");
                tokio::time::sleep(policy.delay(failures).max(Duration::from_millis(100))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Discovers the battery and opens its release journal.
pub async fn connect_battery(
    b: &RawBattery,
    data_dir: &Path,
    clock: Clock,
) -> Result<BatteryParts> {
    let settings = gridlet_drivers::device::DeviceSettings {
        unit: b.unit,
        order: b.word_order,
        invert: false,
        limits: gridlet_drivers::quality::Limits {
            nameplate_w: b.nameplate_w,
        },
        stale_after: Duration::from_millis(b.poll_ms.saturating_mul(5)),
    };
    let (link, device) = discover("battery", &b.host, b.port, settings).await?;
    let journal = gridlet_actors::journal::ReleaseJournal::open(data_dir)?;
    let settings = BatterySettings {
        release_power_w: b.release_power_w,
        clock,
        poll: Duration::from_millis(b.poll_ms),
        safe_after: Duration::from_millis(b.safe_after_ms),
    };
    Ok((link, device, journal, settings))
}

/// Where the PV inverter is expected (its actor finds it, retrying).
pub fn pv_target(p: &RawPv) -> gridlet_actors::devices::DeviceTarget {
    gridlet_actors::devices::DeviceTarget {
        what: "PV inverter".into(),
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
