//! Real gateway processes (`gridlet run`) forming a community over the embedded broker: they
//! agree on one chain, a gateway killed with SIGKILL and restarted catches up, a gateway started
//! late syncs the whole chain, and a broken config is refused with the field named.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, i: usize) -> Gateway {
    let log = std::fs::File::create(dir.join(format!("l{i}.log"))).unwrap();
    Gateway(
        Command::new(BIN)
            .args([
                "run",
                "--config",
                dir.join(format!("c{i}.toml")).to_str().unwrap(),
            ])
            .env("RUST_LOG", "info,rumqttd=off")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn stop(g: Gateway) {
    let pid = g.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let mut g = g;
    let _ = g.0.wait();
}

fn verify(dir: &Path, i: usize) -> serde_json::Value {
    let (ok, out, err) = run(Command::new(BIN).args([
        "chain",
        "verify",
        "--data",
        dir.join(format!("d{i}")).to_str().unwrap(),
    ]));
    assert!(ok, "node {i}: {err}");
    serde_json::from_str(&out).unwrap()
}

fn export_hashes(dir: &Path, i: usize) -> Vec<String> {
    let (ok, out, _) = run(Command::new(BIN).args([
        "chain",
        "export",
        "--data",
        dir.join(format!("d{i}")).to_str().unwrap(),
    ]));
    assert!(ok);
    out.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["hash"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn gateways_agree_survive_sigkill_and_a_late_one_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..4 {
        let (ok, _, err) = run(Command::new(BIN).args([
            "keygen",
            "--out",
            d.join(format!("k{i}.key")).to_str().unwrap(),
        ]));
        assert!(ok, "{err}");
    }
    let mut args = vec!["genesis".to_owned()];
    for i in 0..4 {
        let k = d.join(format!("k{i}.key"));
        args.push("--member".into());
        args.push(format!("h{i},{},{}", k.display(), k.display()));
    }
    args.extend(
        [
            "--slot-ms",
            "400",
            "--out",
            d.join("genesis.json").to_str().unwrap(),
        ]
        .map(String::from),
    );
    let (ok, _, err) = run(Command::new(BIN).args(&args));
    assert!(ok, "{err}");
    let port = free_port();
    for i in 0..4 {
        let bus = if i == 0 {
            format!("embedded_port = {port}")
        } else {
            format!("broker = \"127.0.0.1:{port}\"")
        };
        std::fs::write(
            d.join(format!("c{i}.toml")),
            format!("data_dir = \"d{i}\"\nkey_file = \"k{i}.key\"\ngenesis = \"genesis.json\"\n[node]\nname = \"home-{i}\"\n[bus]\n{bus}\n[api]\nlisten = \"off\"\n"),
        )
        .unwrap();
    }
    let g0 = start(d, 0);
    std::thread::sleep(Duration::from_millis(500));
    let g1 = start(d, 1);
    let g2 = start(d, 2);
    std::thread::sleep(Duration::from_secs(5));
    // SIGKILL node 2 mid-run, restart it.
    drop(g2);
    std::thread::sleep(Duration::from_secs(2));
    let g2 = start(d, 2);
    // Node 3 joins late: its member has been absent from every block so far.
    let g3 = start(d, 3);
    std::thread::sleep(Duration::from_secs(6));
    for g in [g3, g2, g1, g0] {
        stop(g);
    }
    let heights: Vec<u64> = (0..4)
        .map(|i| verify(d, i)["height"].as_u64().unwrap())
        .collect();
    let low = *heights.iter().min().unwrap();
    let high = *heights.iter().max().unwrap();
    assert!(low >= 20, "too few blocks: {heights:?}");
    assert!(high - low <= 3, "a gateway fell behind: {heights:?}");
    // Everything below the last few blocks is the same chain everywhere.
    let chains: Vec<Vec<String>> = (0..4).map(|i| export_hashes(d, i)).collect();
    let common = (low - 3) as usize;
    for c in &chains[1..] {
        assert_eq!(c[..common], chains[0][..common]);
    }
    let log = std::fs::read_to_string(d.join("l3.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_broken_config_is_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    for (body, needle) in [
        ("data_dir = \"d\"\nkey_file = \"k\"\ngenesis = \"g\"\n[bus]\n", "`bus`"),
        ("data_dir = \"d\"\nkey_file = \"k\"\ngenesis = \"g\"\n[bus]\nbroker = \"nohost\"\n", "bus.broker"),
        ("data_dir = \"d\"\nkey_file = \"k\"\ngenesis = \"g\"\n[node]\ntick_ms = 1\n[bus]\nembedded_port = 1\n", "node.tick_ms"),
        ("data_dir = \"d\"\nkey_file = \"k\"\ngenesis = \"g\"\ncolour = \"blue\"\n[bus]\nembedded_port = 1\n", "colour"),
        ("data_dir = 3\n", "data_dir"),
        ("data_dir = \"d\"\nkey_file = \"k\"\ngenesis = \"g\"\n[bus]\nembedded_port = 1\nembedded_bind = \"everywhere\"\n", "bus.embedded_bind"),
        ("data_dir = \"d\"\nkey_file = \"k\"\ngenesis = \"g\"\n[bus]\nbroker = \"h:1\"\nembedded_bind = \"0.0.0.0\"\n", "bus.embedded_bind"),
        ("data_dir = \"d\"\nkey_file = \"k\"\ngenesis = \"g\"\n[bus]\nembedded_port = 1\n[meter]\nkind = \"smoke-signals\"\n", "meter.kind"),
        ("data_dir = \"d\"\nkey_file = \"k\"\ngenesis = \"g\"\n[bus]\nembedded_port = 1\n[meter]\nkind = \"dsmr\"\n", "meter.path"),
        ("data_dir = \"d\"\nkey_file = \"k\"\ngenesis = \"g\"\n[bus]\nembedded_port = 1\n[meter]\nkind = \"mqtt\"\ntopic = \"tele/#\"\n", "meter.topic"),
        ("data_dir = \"d\"\nkey_file = \"k\"\ngenesis = \"g\"\n[bus]\nembedded_port = 1\n[pv]\nhost = \"x\"\npoll_ms = 5\n", "pv.poll_ms"),
        ("data_dir = \"d\"\nkey_file = \"k\"\ngenesis = \"g\"\n[bus]\nembedded_port = 1\n[strategy]\nreserve = 3\n", "reserve"),
        ("data_dir = \"d\"\nkey_file = \"k\"\ngenesis = \"g\"\n[bus]\nembedded_port = 1\n[clock]\nanchor_unix_ms = 0\norigin_ms = 0\nspeedup = -1.0\n", "clock.speedup"),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, body).unwrap();
        let (ok, _, err) = run(Command::new(BIN).args(["run", "--config", path.to_str().unwrap()]));
        assert!(!ok);
        assert!(err.contains(needle), "expected {needle} in: {err}");
    }
}

#[test]
fn the_example_config_parses() {
    // It points at paths of a real home, so `run` stops at the missing key file, not the config.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/home.toml");
    let (ok, _, err) = run(Command::new(BIN).args(["run", "--config", example.to_str().unwrap()]));
    assert!(!ok);
    assert!(err.contains("genesis") || err.contains("key"), "{err}");
    assert!(!err.contains("config field"), "{err}");
}
