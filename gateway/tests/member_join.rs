//! A home joins a running community without a new genesis: three real gateways, one proposes
//! the new home with `gridlet member propose --add`, the others approve (one with `gridlet member
//! approve`, one through the API); the new home's gateway, started on the same genesis, syncs,
//! becomes a member, produces and precommits; its stored chain verifies with `chain verify`.

mod common;

use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "a-long-enough-secret-token";

fn get(port: u16, path: &str) -> Option<serde_json::Value> {
    http(port, "GET", path, "")
        .filter(|(c, _)| *c == 200)
        .map(|(_, v)| v)
}

fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, serde_json::Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code: u16 = resp.get(9..12)?.parse().ok()?;
    let json = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    Some((code, serde_json::from_str(json).unwrap_or_default()))
}

fn wait_until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn gridlet(args: &[&str]) -> (bool, String, String) {
    run(Command::new(BIN).args(args))
}

fn spawn_gateway(d: &Path, home: &str) -> Guard {
    let log = std::fs::File::create(d.join(format!("{home}.log"))).unwrap();
    Guard(
        Command::new(BIN)
            .args([
                "run",
                "--config",
                d.join(format!("{home}.toml")).to_str().unwrap(),
            ])
            .env("RUST_LOG", "info,rumqttd=off,actix_server=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn final_height(port: u16) -> Option<u64> {
    get(port, "/api/chain/final")?["height"].as_u64()
}

/// The member keys that signed a certificate (protocol.md §9: `u8 1 | u64 | u32 | u64 | [32]
/// | u32 count | count × ([33] member | [64] signature)`).
fn signers(cert_hex: &str) -> Vec<String> {
    let b = cert_hex.as_bytes();
    let count_at = 2 * (1 + 8 + 4 + 8 + 32);
    let count = u32::from_str_radix(&cert_hex[count_at..count_at + 8], 16).unwrap() as usize;
    (0..count)
        .map(|i| {
            let at = count_at + 8 + i * 2 * (33 + 64);
            String::from_utf8(b[at..at + 66].to_vec()).unwrap()
        })
        .collect()
}

#[test]
fn a_new_home_is_admitted_by_the_others_syncs_and_takes_part() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for n in ["a", "b", "c", "d"] {
        for k in [format!("{n}.key"), format!("{n}-ess.key")] {
            let (ok, _, err) = gridlet(&["keygen", "--out", d.join(k).to_str().unwrap()]);
            assert!(ok, "{err}");
        }
    }
    let member = |n: &str| {
        format!(
            "{n},{},{}",
            d.join(format!("{n}.key.pub")).display(),
            d.join(format!("{n}-ess.key.pub")).display()
        )
    };
    let genesis = d.join("genesis.json");
    let (ok, _, err) = gridlet(&[
        "genesis",
        "--member",
        &member("a"),
        "--member",
        &member("b"),
        "--member",
        &member("c"),
        "--slot-ms",
        "400",
        "--out",
        genesis.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let broker = free_port();
    let mut api = std::collections::BTreeMap::new();
    for n in ["a", "b", "c", "d"] {
        let port = free_port();
        api.insert(n, port);
        let bus = if n == "a" {
            format!("embedded_port = {broker}")
        } else {
            format!("broker = \"127.0.0.1:{broker}\"")
        };
        std::fs::write(
            d.join(format!("{n}.toml")),
            format!(
                "data_dir = \"data-{n}\"\nkey_file = \"{n}.key\"\ngenesis = \"genesis.json\"\n[node]\nname = \"{n}\"\n[bus]\n{bus}\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n"
            ),
        )
        .unwrap();
    }
    let cfg = |n: &str| d.join(format!("{n}.toml")).to_str().unwrap().to_owned();
    let mut gateways = Vec::new();
    for n in ["a", "b", "c"] {
        gateways.push(spawn_gateway(d, n));
        let port = api[n];
        wait_until(15, "the API answers", || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }
    wait_until(30, "the community finalizes", || {
        final_height(api["a"]).filter(|h| *h >= 3)
    });

    // The check of the new home's config says how it joins, and does not fail.
    let (ok, out, _) = gridlet(&["check", "--offline", "--config", &cfg("d")]);
    assert!(ok && out.contains("is not a genesis member"), "{out}");

    // a proposes with the CLI, b approves with the CLI, c through the API.
    let (ok, out, err) = gridlet(&[
        "member",
        "--config",
        &cfg("a"),
        "propose",
        "--add",
        &member("d"),
    ]);
    assert!(ok, "{out}{err}");
    let proposal: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let id = proposal["tx"].as_str().unwrap().to_owned();
    wait_until(20, "the proposal is on b's chain", || {
        let m = get(api["b"], "/api/members")?;
        m["proposals"]
            .as_array()?
            .iter()
            .any(|p| p["id"] == id.as_str())
            .then_some(())
    });
    let (ok, out, err) = gridlet(&["member", "--config", &cfg("b"), "approve", &id]);
    assert!(ok, "{out}{err}");
    let (code, answer) = http(
        api["c"],
        "POST",
        "/api/members/approvals",
        &format!(r#"{{"proposal": "{id}"}}"#),
    )
    .unwrap();
    assert_eq!(code, 201, "{answer}");
    // A malformed body is refused with a reason.
    let (code, answer) = http(api["c"], "POST", "/api/members/proposals", r#"{"add": 1}"#).unwrap();
    assert_eq!(code, 400, "{answer}");
    let d_key = std::fs::read_to_string(d.join("d.key.pub")).unwrap();
    let d_key: serde_json::Value = serde_json::from_str(&d_key).unwrap();
    let d_key = d_key["public_key"].as_str().unwrap().to_owned();
    wait_until(30, "d is a member on a's chain", || {
        let m = get(api["a"], "/api/members")?;
        let members = m["members"].as_array()?;
        (members.len() == 4 && members.iter().any(|x| x["key"] == d_key.as_str())).then_some(())
    });
    // Its equipment is in the state: `--add NAME,KEY,ATTESTOR` took the defaults.
    let m = get(api["a"], "/api/members").unwrap();
    let entry = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["key"] == d_key.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (&entry["signer"], &entry["battery_wh"], &entry["pv_w"]),
        (&json!("gateway"), &json!(10_000), &json!(5_000)),
        "{entry}"
    );

    // The new home starts on the same genesis and catches up.
    gateways.push(spawn_gateway(d, "d"));
    let port = api["d"];
    wait_until(15, "d's API answers", || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    wait_until(60, "d is a member, caught up and producing", || {
        let m = get(api["d"], "/api/members")?;
        let s = get(api["d"], "/api/status")?;
        let (fd, fa) = (final_height(api["d"])?, final_height(api["a"])?);
        (m["member"] == true && fd + 3 >= fa && s["blocks_produced"].as_u64()? > 0).then_some(())
    });
    let (ok, out, err) = gridlet(&["member", "--config", &cfg("d"), "list"]);
    assert!(ok && out.contains(&d_key), "{out}{err}");
    // Let it vote in a few checkpoints, then stop everyone and check d's copy.
    std::thread::sleep(Duration::from_secs(4));
    drop(gateways);
    let data = d.join("data-d");
    let (ok, out, err) = gridlet(&["chain", "verify", "--data", data.to_str().unwrap()]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["certificates"].as_u64().unwrap() > 0, "{v}");
    let (ok, out, err) = gridlet(&["chain", "export", "--data", data.to_str().unwrap()]);
    assert!(ok, "{err}");
    let precommitted = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|b| b["certificate"].as_str().map(signers))
        .any(|s| s.contains(&d_key));
    assert!(
        precommitted,
        "d's precommits are in its stored certificates"
    );
}
