//! A gateway under systemd's protocols and next to Home Assistant: it notifies READY=1 and
//! kicks the watchdog on `$NOTIFY_SOCKET`; on a real Mosquitto it publishes retained discovery
//! configs, its state, and `online` — and its last will says `offline` when it dies.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sub(port: u16, topic: &str, count: usize) -> Vec<(String, String)> {
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-v",
            "-C",
            &count.to_string(),
            "-W",
            "15",
        ])
        .output()
        .expect("mosquitto_sub is installed (scripts/test installs mosquitto-clients)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(t, p)| (t.to_owned(), p.to_owned())))
        .collect()
}

#[test]
fn systemd_notify_watchdog_and_home_assistant_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for n in ["a.key", "a-ess.key"] {
        let (ok, _, err) =
            run(Command::new(BIN).args(["keygen", "--out", d.join(n).to_str().unwrap()]));
        assert!(ok, "{err}");
    }
    let (ok, _, err) = run(Command::new(BIN).args([
        "genesis",
        "--member",
        &format!(
            "a,{},{}",
            d.join("a.key.pub").display(),
            d.join("a-ess.key.pub").display()
        ),
        "--out",
        d.join("genesis.json").to_str().unwrap(),
    ]));
    assert!(ok, "{err}");
    let port = free_port();
    std::fs::write(
        d.join("m.conf"),
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
    )
    .unwrap();
    let _mosquitto = Killed(
        Command::new("mosquitto")
            .args(["-c", d.join("m.conf").to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(
        d.join("a.toml"),
        format!(
            "data_dir = \"da\"\nkey_file = \"a.key\"\ngenesis = \"genesis.json\"\n[node]\nname = \"home-7\"\n[bus]\nbroker = \"127.0.0.1:{port}\"\n[api]\nlisten = \"off\"\n[home_assistant]\ninterval_ms = 1000\n"
        ),
    )
    .unwrap();
    let notify_path = d.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    // As systemd starts a service: WATCHDOG_PID names the main process (the shell's PID, which
    // `exec` hands to the gateway).
    let gateway = Command::new("sh")
        .args([
            "-c",
            "export WATCHDOG_PID=$$; exec \"$0\" run --config \"$1\"",
            BIN,
            d.join("a.toml").to_str().unwrap(),
        ])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut gateway = Killed(gateway);
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.iter().filter(|m: &&String| *m == "WATCHDOG=1").count() < 3 {
        let n = notify
            .recv(&mut buf)
            .expect("the gateway notifies systemd in time");
        // sd_notify(3) messages are newline-separated assignments; one per datagram here.
        got.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned());
    }
    assert!(got.contains(&"READY=1".to_owned()), "{got:?}");

    // Retained discovery configs, one per sensor, with the documented fields.
    let configs = sub(port, "homeassistant/#", 11);
    assert_eq!(configs.len(), 11, "{configs:?}");
    // The Energy dashboard's counters are among them: solar production, grid consumption and
    // return, battery charge and discharge.
    for id in [
        "pv_energy",
        "grid_import_energy",
        "grid_export_energy",
        "battery_charge_energy",
        "battery_discharge_energy",
    ] {
        let (_, p) = configs
            .iter()
            .find(|(t, _)| t.contains(&format!("/{id}/")))
            .unwrap_or_else(|| panic!("{id} is not announced"));
        let v: serde_json::Value = serde_json::from_str(p).unwrap();
        assert_eq!(v["state_class"], "total_increasing", "{v}");
        assert_eq!(v["device_class"], "energy", "{v}");
    }
    for (topic, payload) in &configs {
        assert!(topic.starts_with("homeassistant/sensor/home-7/") && topic.ends_with("/config"));
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        for f in [
            "unique_id",
            "state_topic",
            "unit_of_measurement",
            "availability",
            "device",
        ] {
            assert!(v.get(f).is_some(), "{topic} lacks {f}: {v}");
        }
        assert_eq!(v["availability"][0]["topic"], "gridlet/home-7/availability");
    }
    // No devices here: the state holds the chain's figures only (once the market actor has
    // read the chain; before that it is empty), never an invented reading.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let state = sub(port, "gridlet/home-7/state", 1);
        let v: serde_json::Value = serde_json::from_str(&state[0].1).unwrap();
        assert!(v.get("pv_power").is_none(), "{v}");
        assert!(v.get("grid_power").is_none(), "{v}");
        assert!(v.get("battery_discharge_energy").is_none(), "{v}");
        if v.get("credit_balance").is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no balance in the state: {v}");
    }
    assert_eq!(sub(port, "gridlet/home-7/availability", 1)[0].1, "online");

    // Killed: the broker publishes the last will.
    let _ = gateway.0.kill();
    let _ = gateway.0.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if sub(port, "gridlet/home-7/availability", 1)[0].1 == "offline" {
            break;
        }
        assert!(Instant::now() < deadline, "no last will");
        std::thread::sleep(Duration::from_millis(200));
    }
}
