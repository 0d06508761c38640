//! Role readings with quality against the simulators: valid values, battery commands read back,
//! implausible values refused, and stale values when the device goes away.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use gridlet_drivers::backoff::BackoffPolicy;
use gridlet_drivers::device::{DeviceSettings, SunSpecDevice};
use gridlet_drivers::modbus::{sunspec_scan, Endpoint, LinkConfig, ModbusLink};
use gridlet_drivers::quality::{Limits, Reading};
use gridlet_drivers::sunspec::{Value, WordOrder};
use gridlet_hil::{FaultPlan, ModbusSim, SimDevice};

fn settings(unit: u8, nameplate_w: Option<f64>) -> DeviceSettings {
    DeviceSettings {
        unit,
        order: WordOrder::BigEndian,
        invert: false,
        limits: Limits { nameplate_w },
        stale_after: Duration::from_millis(300),
    }
}

async fn setup() -> (ModbusSim, ModbusLink) {
    let mut devices = BTreeMap::new();
    devices.insert(1, SimDevice::inverter(40000, 6000, 12 * 3_600_000));
    devices.insert(2, SimDevice::battery(40000, 10_000, 5_000, 50));
    devices.insert(3, SimDevice::meter(40000, 800));
    let sim = ModbusSim::start(
        "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        devices,
        FaultPlan::default(),
    )
    .await
    .unwrap();
    let mut cfg = LinkConfig::new(Endpoint::Tcp(sim.addr));
    cfg.timeout = Duration::from_millis(200);
    cfg.backoff = BackoffPolicy {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    (sim, ModbusLink::new(cfg))
}

async fn device(link: &mut ModbusLink, unit: u8, nameplate: Option<f64>) -> SunSpecDevice {
    let scan = sunspec_scan(link, unit, WordOrder::BigEndian)
        .await
        .unwrap()
        .unwrap();
    SunSpecDevice::from_scan(settings(unit, nameplate), &scan)
}

#[tokio::test]
async fn roles_read_valid_values_and_the_battery_obeys_setpoints() {
    let (sim, mut link) = setup().await;
    let mut pv = device(&mut link, 1, Some(6000.0)).await;
    let mut bat = device(&mut link, 2, Some(5000.0)).await;
    let mut met = device(&mut link, 3, None).await;
    let r = pv.read_pv(&mut link).await;
    assert_eq!(r.power_w, Reading::Valid { value: 6000.0 });
    assert!(r.energy_wh.is_valid());
    let b = bat.read_battery(&mut link).await;
    assert_eq!(b.soc_pct, Reading::Valid { value: 50.0 });
    assert_eq!(b.power_w, Reading::Valid { value: 0.0 });
    let m = met.read_meter(&mut link).await;
    assert_eq!(m.power_w, Reading::Valid { value: 800.0 });

    bat.set_battery_power(&mut link, 2000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        bat.read_battery(&mut link).await.power_w,
        Reading::Valid { value: 2000.0 }
    );
    bat.set_battery_power(&mut link, -1500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        bat.read_battery(&mut link).await.power_w,
        Reading::Valid { value: -1500.0 }
    );
    // The safe state: discharge limited to zero.
    bat.set_battery_power(&mut link, 0).await.unwrap().unwrap();
    assert_eq!(
        bat.read_battery(&mut link).await.power_w,
        Reading::Valid { value: 0.0 }
    );
    // An hour at 2 kW moves the state of charge by 20 points.
    bat.set_battery_power(&mut link, 2000)
        .await
        .unwrap()
        .unwrap();
    for _ in 0..36 {
        sim.step(100_000);
    }
    assert_eq!(
        bat.read_battery(&mut link).await.soc_pct,
        Reading::Valid { value: 30.0 }
    );
}

#[tokio::test]
async fn implausible_values_are_refused_not_passed_on() {
    let (sim, mut link) = setup().await;
    // The inverter reports 6 kW, but this installation's nameplate is 4 kW: 6 > 1.2 × 4.
    let mut pv = device(&mut link, 1, Some(4000.0)).await;
    assert!(matches!(
        pv.read_pv(&mut link).await.power_w,
        Reading::Implausible { .. }
    ));
    // A battery mapping bug reporting 250 %.
    let mut bat = device(&mut link, 2, None).await;
    {
        let mut d = sim.devices.lock().unwrap();
        let b = d.get_mut(&2).unwrap();
        b.frozen = true;
        b.image.set(802, "SoC", Value::Uint(2500)).unwrap();
    }
    assert!(matches!(
        bat.read_battery(&mut link).await.soc_pct,
        Reading::Implausible { .. }
    ));
    // An energy counter that goes back.
    let mut met = device(&mut link, 3, None).await;
    assert!(met.read_meter(&mut link).await.import_wh.is_valid());
    {
        let mut d = sim.devices.lock().unwrap();
        let m = d.get_mut(&3).unwrap();
        m.frozen = true;
        m.image.set(203, "TotWhImp", Value::Uint(10)).unwrap();
    }
    assert!(matches!(
        met.read_meter(&mut link).await.import_wh,
        Reading::Implausible { .. }
    ));
    // A scale factor beyond f64 on a meter without a nameplate: infinite power, refused (it
    // passed as valid before: no nameplate, no limit).
    {
        let mut d = sim.devices.lock().unwrap();
        let m = d.get_mut(&3).unwrap();
        m.image.set(203, "W_SF", Value::Int(400)).unwrap();
    }
    match met.read_meter(&mut link).await.power_w {
        Reading::Implausible { reason } => assert!(reason.contains("not a finite"), "{reason}"),
        other => panic!("infinite power admitted: {other:?}"),
    }
}

#[tokio::test]
async fn a_vanished_device_gives_stale_then_no_values() {
    let (sim, mut link) = setup().await;
    let mut met = device(&mut link, 3, None).await;
    assert!(met.read_meter(&mut link).await.power_w.is_valid());
    sim.stop();
    drop(sim);
    let r = met.read_meter(&mut link).await;
    assert!(
        matches!(r.power_w, Reading::Stale { value, .. } if value == 800.0),
        "{r:?}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = met.read_meter(&mut link).await;
    assert!(matches!(r.power_w, Reading::CommError { .. }), "{r:?}");
}

#[tokio::test]
async fn a_der_device_without_model_124_is_commanded_through_704() {
    use gridlet_drivers::sunspec::SunSpecImage;
    let mut img = SunSpecImage::new(40000);
    img.add_model(1, None).unwrap();
    img.add_model(704, None).unwrap();
    img.add_model(802, None).unwrap();
    img.end();
    img.set(704, "WSet_SF", Value::Int(1)).unwrap();
    let mut dev = SimDevice::meter(40000, 0);
    dev.image = img;
    dev.frozen = true;
    let mut devices = BTreeMap::new();
    devices.insert(4, dev);
    let sim = ModbusSim::start(
        "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        devices,
        FaultPlan::default(),
    )
    .await
    .unwrap();
    let mut link = ModbusLink::new(LinkConfig::new(Endpoint::Tcp(sim.addr)));
    let mut bat = device(&mut link, 4, None).await;
    let ids: Vec<u16> = bat.models().iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 704, 802]);
    bat.set_battery_power(&mut link, -2350)
        .await
        .unwrap()
        .unwrap();
    let d = sim.devices.lock().unwrap();
    let img = &d[&4].image;
    // Pre-scaled by WSet_SF = 1: -2350 W is written as -235.
    assert_eq!(
        img.value(704, "WSet").unwrap(),
        Value::Scaled { raw: -235, exp: 1 }
    );
    assert_eq!(img.value(704, "WSetMod").unwrap(), Value::Uint(1));
    assert_eq!(img.value(704, "WSetEna").unwrap(), Value::Uint(1));
}

#[tokio::test]
async fn a_device_exception_is_a_refusal_not_a_communication_error() {
    let (_sim, mut link) = setup().await;
    let mut pv = device(&mut link, 1, Some(6000.0)).await;
    // The same inverter behind a server that answers every request with an exception.
    let mut devices = BTreeMap::new();
    devices.insert(1, SimDevice::inverter(40000, 6000, 12 * 3_600_000));
    let refusing = ModbusSim::start(
        "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        devices,
        FaultPlan {
            exception_percent: 100,
            seed: 3,
            ..FaultPlan::default()
        },
    )
    .await
    .unwrap();
    let mut cfg = LinkConfig::new(Endpoint::Tcp(refusing.addr));
    cfg.timeout = Duration::from_millis(200);
    let mut refusing_link = ModbusLink::new(cfg);
    let r = pv.read_pv(&mut refusing_link).await;
    assert_eq!(
        r.power_w,
        Reading::Refused {
            exception: "ServerDeviceFailure".into()
        },
        "{r:?}"
    );
    assert_eq!(
        refusing_link.stats().connects,
        1,
        "an exception keeps the link"
    );
}
