//! The MQTT meter driver against a real Mosquitto broker and the simulated meters.

use std::process::{Child, Command};
use std::time::Duration;

use gridlet_drivers::backoff::BackoffPolicy;
use gridlet_drivers::mqtt_meter::{spawn, MeterState, MqttMeterConfig, PayloadFormat};
use gridlet_drivers::quality::Reading;
use gridlet_hil::mqtt_sim::{run_meter, MqttMeterSpec};
use tokio::time::Instant;

struct Broker(Child, u16, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto() -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .args(["-c", conf.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto is installed (scripts/test installs it)");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "mosquitto did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker(child, port, dir)
}

fn config(port: u16, topic: &str, format: PayloadFormat, max_age_ms: u64) -> MqttMeterConfig {
    MqttMeterConfig {
        host: "127.0.0.1".into(),
        port,
        client_id: format!("gridlet-test-{topic}"),
        topic: topic.into(),
        format,
        max_age: Duration::from_millis(max_age_ms),
        backoff: BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        },
    }
}

async fn wait_for(
    rx: &mut tokio::sync::watch::Receiver<MeterState>,
    what: impl Fn(&MeterState) -> bool,
) -> MeterState {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if what(&rx.borrow()) {
                return rx.borrow().clone();
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("condition reached in time")
}

#[tokio::test]
async fn tasmota_and_shelly_meters_through_mosquitto_with_malformed_payloads_and_staleness() {
    let broker = mosquitto();
    for (format, topic, power) in [
        (PayloadFormat::Tasmota, "tele/home1/SENSOR", 1250),
        (
            PayloadFormat::Shelly,
            "shellypro3em-gridlet/events/rpc",
            -640,
        ),
    ] {
        let (mut rx, sub) = spawn(config(broker.1, topic, format, 400));
        let publisher = tokio::spawn(run_meter(
            MqttMeterSpec {
                broker: format!("127.0.0.1:{}", broker.1),
                topic: topic.into(),
                format,
                interval_ms: 50,
                power_w: power,
                malformed_percent: 30,
            },
            7,
        ));
        let state = wait_for(&mut rx, |s| s.messages >= 10 && s.rejected >= 2).await;
        let now = Instant::now();
        let p = MeterState::reading(state.power_w, now, Duration::from_millis(400));
        assert_eq!(
            p,
            Reading::Valid {
                value: f64::from(power)
            },
            "{format:?}"
        );
        assert!(MeterState::reading(state.import_wh, now, Duration::from_millis(400)).is_valid());
        assert!(state.last_error.is_some());
        // The counter in the power's direction advances (import while importing, export while
        // exporting), the other one stands still.
        let counters = |s: &MeterState| (s.import_wh.map(|x| x.0), s.export_wh.map(|x| x.0));
        let (import0, export0) = counters(&state);
        let later = wait_for(&mut rx, |s| {
            let (i, e) = counters(s);
            if power > 0 {
                i > import0
            } else {
                e > export0
            }
        })
        .await;
        let (import1, export1) = counters(&later);
        if power > 0 {
            assert_eq!(export1, export0, "{format:?}");
        } else {
            assert_eq!(import1, import0, "{format:?}");
        }
        // The meter goes quiet: its values turn stale after the max age, never silently stay valid.
        publisher.abort();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let state = rx.borrow().clone();
        assert!(matches!(
            MeterState::reading(state.power_w, Instant::now(), Duration::from_millis(400)),
            Reading::Stale { .. }
        ));
        sub.abort();
    }
}

#[tokio::test]
async fn the_subscriber_reconnects_after_a_broker_restart() {
    let broker = mosquitto();
    let port = broker.1;
    let (mut rx, sub) = spawn(config(
        port,
        "tele/home2/SENSOR",
        PayloadFormat::Tasmota,
        5000,
    ));
    wait_for(&mut rx, |s| s.connected).await;
    drop(broker);
    wait_for(&mut rx, |s| !s.connected).await;
    // Same port again.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("m.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .args(["-c", conf.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _again = Broker(child, port, dir);
    let state = wait_for(&mut rx, |s| s.connected && s.connects >= 2).await;
    assert!(state.connects >= 2);
    sub.abort();
}
