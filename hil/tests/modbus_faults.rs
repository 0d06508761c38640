//! The Modbus driver against the simulators, including when they misbehave.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use gridlet_drivers::backoff::BackoffPolicy;
use gridlet_drivers::modbus::{sunspec_scan, Endpoint, LinkConfig, ModbusError, ModbusLink};
use gridlet_drivers::sunspec::{SunSpecImage, Value, WordOrder};
use gridlet_hil::{FaultPlan, ModbusSim, SimDevice};

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A device whose every register holds a value derived from its address, so an answer that
/// belongs to another request can never pass for the right one.
fn patterned() -> SimDevice {
    let mut dev = SimDevice::meter(0, 0);
    dev.image = SunSpecImage {
        base: 0,
        regs: (0..4000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 16) as u16)
            .collect(),
        models: Vec::new(),
        writable: vec![false; 4000],
    };
    dev.frozen = true;
    dev
}

fn link(addr: SocketAddr, timeout_ms: u64) -> ModbusLink {
    let mut cfg = LinkConfig::new(Endpoint::Tcp(addr));
    cfg.timeout = Duration::from_millis(timeout_ms);
    cfg.backoff = BackoffPolicy {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(20),
    };
    ModbusLink::new(cfg)
}

#[tokio::test]
async fn scan_reads_every_simulated_device() {
    let mut devices = BTreeMap::new();
    devices.insert(1, SimDevice::inverter(40000, 6000, 12 * 3_600_000));
    devices.insert(2, SimDevice::battery(40000, 10_000, 5_000, 64));
    devices.insert(3, SimDevice::meter(40000, -1500));
    let sim = ModbusSim::start(local(), devices, FaultPlan::default())
        .await
        .unwrap();
    let mut l = link(sim.addr, 1000);
    let inv = sunspec_scan(&mut l, 1, WordOrder::BigEndian)
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<u16> = inv.models.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 103, 120]);
    assert_eq!(inv.models[1].point("W").unwrap().as_f64(), Some(6000.0));
    let bat = sunspec_scan(&mut l, 2, WordOrder::BigEndian)
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<u16> = bat.models.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 124, 802, 713]);
    assert_eq!(bat.models[2].point("SoC").unwrap().as_f64(), Some(64.0));
    let met = sunspec_scan(&mut l, 3, WordOrder::BigEndian)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        met.models[1].point("W"),
        Some(&Value::Scaled { raw: -1500, exp: 0 })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_replies_are_never_attributed_to_the_wrong_request() {
    let mut devices = BTreeMap::new();
    let dev = patterned();
    let image = dev.image.clone();
    devices.insert(1, dev);
    let plan = FaultPlan {
        late_percent: 20,
        late_by_ms: 15,
        seed: 324,
        ..FaultPlan::default()
    };
    let sim = ModbusSim::start(local(), devices, plan).await.unwrap();
    // Four links in parallel, 2 500 reads each: 10 000 reads in all.
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let image = image.clone();
        let addr = sim.addr;
        tasks.push(tokio::spawn(async move {
            let mut l = link(addr, 10);
            let (mut good, mut wrong, mut failed) = (0u32, 0u32, 0u32);
            let mut x = 0x9E37_79B9u64 ^ t;
            for _ in 0..2_500 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let count = 1 + (x % 125) as u16;
                let addr = ((x >> 8) % (4000 - 125)) as u16;
                let result = loop {
                    match l.read_holding(1, addr, count).await {
                        // Backing off sends nothing: wait it out and try the same read again.
                        Err(ModbusError::BackingOff { .. }) => {
                            tokio::time::sleep(l.backoff_remaining()).await;
                        }
                        other => break other,
                    }
                };
                match result {
                    Ok(Ok(words)) => {
                        if words.as_slice() == image.read(addr, count).unwrap() {
                            good += 1;
                        } else {
                            wrong += 1;
                        }
                    }
                    Ok(Err(_)) => wrong += 1, // no exceptions are injected here
                    Err(ModbusError::Timeout { .. }) => failed += 1,
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
            (good, wrong, failed, l.stats().clone())
        }));
    }
    let (mut good, mut wrong, mut failed, mut reconnects) = (0, 0, 0, 0);
    for t in tasks {
        let (g, w, f, stats) = t.await.unwrap();
        good += g;
        wrong += w;
        failed += f;
        reconnects += stats.connects;
    }
    eprintln!("10000 reads: {good} good, {failed} timed out, {wrong} misattributed, {reconnects} connects");
    assert_eq!(good + wrong + failed, 10_000);
    assert_eq!(wrong, 0, "values attributed to the wrong request");
    assert!(
        failed > 1_000,
        "the fault plan should have caused timeouts: {failed}"
    );
    assert!(good > 7_000);
}

#[tokio::test]
async fn exceptions_are_refusals_and_drops_recover_on_the_next_request() {
    let mut devices = BTreeMap::new();
    devices.insert(1, patterned());
    let plan = FaultPlan {
        exception_percent: 30,
        seed: 1,
        ..FaultPlan::default()
    };
    let sim = ModbusSim::start(local(), devices, plan).await.unwrap();
    let mut l = link(sim.addr, 500);
    let (mut ok, mut refused) = (0, 0);
    for i in 0..1_000u16 {
        match l.read_holding(1, i, 10).await {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(code)) => {
                assert_eq!(code, tokio_modbus::ExceptionCode::ServerDeviceFailure);
                refused += 1
            }
            Err(e) => panic!("an exception is not a transport error: {e}"),
        }
    }
    assert!((200..400).contains(&refused), "{refused}");
    assert_eq!(ok + refused, 1_000);
    assert_eq!(
        l.stats().connects,
        1,
        "exceptions must not drop the connection"
    );

    let mut devices = BTreeMap::new();
    devices.insert(1, patterned());
    let plan = FaultPlan {
        drop_percent: 30,
        seed: 2,
        ..FaultPlan::default()
    };
    let sim = ModbusSim::start(local(), devices, plan).await.unwrap();
    let mut l = link(sim.addr, 500);
    let mut after_drop_ok = 0;
    let mut previous_failed = false;
    let mut kinds = std::collections::BTreeMap::new();
    for i in 0..500u16 {
        match l.read_holding(1, i, 5).await {
            Ok(Ok(_)) => {
                if previous_failed {
                    after_drop_ok += 1;
                }
                previous_failed = false;
            }
            Err(e) => {
                *kinds
                    .entry(format!("{e}").split(':').next().unwrap().to_owned())
                    .or_insert(0) += 1;
                previous_failed = true;
                tokio::time::sleep(l.backoff_remaining()).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    eprintln!("{kinds:?} {:?}", l.stats());
    assert!(
        after_drop_ok > 50,
        "reconnects after dropped connections: {after_drop_ok}"
    );
}

#[tokio::test]
async fn a_device_that_comes_back_is_read_within_one_backoff_period() {
    let mut devices = BTreeMap::new();
    devices.insert(1, patterned());
    let sim = ModbusSim::start(local(), devices, FaultPlan::default())
        .await
        .unwrap();
    let addr = sim.addr;
    let mut l = link(addr, 200);
    l.read_holding(1, 0, 1).await.unwrap().unwrap();
    sim.stop();
    drop(sim);
    tokio::time::sleep(Duration::from_millis(20)).await;
    // While the device is away: failures, then backoff without I/O.
    let mut backing_off = 0;
    for _ in 0..20 {
        match l.read_holding(1, 0, 1).await {
            Err(ModbusError::BackingOff { .. }) => backing_off += 1,
            Err(_) => {}
            Ok(r) => panic!("device is down, got {r:?}"),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(backing_off > 0);
    assert!(l.failures() >= 2);
    // The device returns on the same port.
    let mut devices = BTreeMap::new();
    devices.insert(1, patterned());
    let _sim = ModbusSim::start(addr, devices, FaultPlan::default())
        .await
        .unwrap();
    let wait = l.backoff_remaining();
    assert!(wait <= Duration::from_millis(20));
    tokio::time::sleep(wait).await;
    assert!(l.read_holding(1, 0, 1).await.unwrap().is_ok());
    assert_eq!(l.failures(), 0);
}

#[tokio::test]
async fn garbled_frames_are_rejected_and_the_link_recovers() {
    let mut devices = BTreeMap::new();
    let dev = patterned();
    let image = dev.image.clone();
    devices.insert(1, dev);
    let plan = FaultPlan {
        garbage_percent: 30,
        seed: 3,
        ..FaultPlan::default()
    };
    let sim = ModbusSim::start(local(), devices, plan).await.unwrap();
    let mut l = link(sim.addr, 100);
    let (mut good, mut rejected) = (0, 0);
    for i in 0..1_000u16 {
        let addr = (i * 3) % 3800;
        match l.read_holding(1, addr, 20).await {
            Ok(Ok(words)) => {
                assert_eq!(
                    words.as_slice(),
                    image.read(addr, 20).unwrap(),
                    "garbled frame accepted"
                );
                good += 1;
            }
            Ok(Err(_)) => panic!("no exceptions injected"),
            Err(ModbusError::BackingOff { .. }) => tokio::time::sleep(l.backoff_remaining()).await,
            Err(_) => rejected += 1,
        }
    }
    eprintln!("garbage: {good} good, {rejected} rejected frames");
    assert!(rejected > 100, "{rejected}");
    assert!(good > 500, "{good}");
}

#[tokio::test]
async fn a_frozen_device_keeps_its_values() {
    let mut devices = BTreeMap::new();
    devices.insert(1, SimDevice::inverter(40000, 6000, 9 * 3_600_000));
    let frozen = ModbusSim::start(
        local(),
        devices.clone(),
        FaultPlan {
            frozen: true,
            ..FaultPlan::default()
        },
    )
    .await
    .unwrap();
    let live = ModbusSim::start(local(), devices, FaultPlan::default())
        .await
        .unwrap();
    let read_w = |sim: &ModbusSim| {
        sim.devices.lock().unwrap()[&1]
            .image
            .value(103, "W")
            .unwrap()
    };
    let (before_f, before_l) = (read_w(&frozen), read_w(&live));
    frozen.step(3_600_000);
    live.step(3_600_000);
    assert_eq!(read_w(&frozen), before_f);
    assert_ne!(read_w(&live), before_l);
}
