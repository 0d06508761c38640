//! What several HIL tests of the actors share.

use std::net::SocketAddr;
use std::time::Duration;

use gridlet_drivers::device::{DeviceSettings, SunSpecDevice};
use gridlet_drivers::modbus::{Endpoint, LinkConfig, ModbusLink};
use gridlet_drivers::quality::Limits;
use gridlet_drivers::sunspec::WordOrder;

/// A link to the HIL battery at `addr` (unit 1, 5 kW) and the device found on it.
pub async fn discover_battery(addr: SocketAddr) -> (ModbusLink, SunSpecDevice) {
    let mut link = ModbusLink::new(LinkConfig::new(Endpoint::Tcp(addr)));
    let device = SunSpecDevice::discover(
        &mut link,
        DeviceSettings {
            unit: 1,
            order: WordOrder::BigEndian,
            invert: false,
            limits: Limits {
                nameplate_w: Some(5_000.0),
            },
            stale_after: Duration::from_secs(5),
        },
    )
    .await
    .unwrap()
    .unwrap();
    (link, device)
}
