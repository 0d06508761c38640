//! Modbus RTU over a real serial line: a socat pseudo-terminal pair, the simulator on one end,
//! our driver on the other, unit ids multiplexed on the bus.

use std::collections::BTreeMap;
use std::time::Duration;

use gridlet_drivers::modbus::{sunspec_scan, Endpoint, LinkConfig, ModbusError, ModbusLink};
use gridlet_drivers::sunspec::WordOrder;
use gridlet_hil::modbus_sim::RtuSim;
use gridlet_hil::{FaultPlan, SimDevice};

#[tokio::test]
async fn rtu_scan_of_two_units_and_silence_from_an_absent_one() {
    let pty =
        gridlet_hil::pty::PtyPair::start().expect("socat is installed (scripts/test installs it)");
    let (a, b) = (pty.a.clone(), pty.b.clone());
    let mut devices = BTreeMap::new();
    devices.insert(1, SimDevice::inverter(40000, 5000, 12 * 3_600_000));
    devices.insert(7, SimDevice::battery(40000, 8_000, 4_000, 75));
    let _sim = RtuSim::start(&a, 115_200, devices, FaultPlan::default()).unwrap();
    let mut cfg = LinkConfig::new(Endpoint::Rtu {
        path: b.clone(),
        baud: 115_200,
    });
    cfg.timeout = Duration::from_millis(300);
    cfg.gap = Duration::from_millis(5);
    let mut link = ModbusLink::new(cfg);
    let inv = sunspec_scan(&mut link, 1, WordOrder::BigEndian)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        inv.models.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 103, 120]
    );
    assert_eq!(inv.models[1].point("W").unwrap().as_f64(), Some(5000.0));
    let bat = sunspec_scan(&mut link, 7, WordOrder::BigEndian)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bat.models[2].point("SoC").unwrap().as_f64(), Some(75.0));
    // Unit 9 is not on the bus: no answer, a timeout, and the link recovers for unit 1.
    assert!(matches!(
        link.read_holding(9, 40000, 2).await,
        Err(ModbusError::Timeout { .. })
    ));
    assert_eq!(
        link.read_holding(1, 40000, 2).await.unwrap().unwrap(),
        vec![0x5375, 0x6E53]
    );
}
