//! Crash test: a process committing blocks is killed with SIGKILL at random moments; after
//! every restart the stored chain verifies and holds every block whose commit was acknowledged
//! (acknowledgements are read from the process's stdout, outside the killed process), and no
//! slot was ever signed twice.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{spawn_reading_lines, BIN};

const CYCLES: usize = 100; // row S1 of the fault matrix

fn gridlet(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("gridlet runs")
}

fn ok(args: &[&str]) -> String {
    let out = gridlet(args);
    assert!(
        out.status.success(),
        "gridlet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[derive(Debug, Clone, PartialEq)]
struct Ack {
    height: u64,
    hash: String,
    slot: u64,
}

fn setup(dir: &Path) -> String {
    let k1 = dir.join("a.key");
    let k2 = dir.join("b.key");
    ok(&["keygen", "--out", k1.to_str().unwrap()]);
    ok(&["keygen", "--out", k2.to_str().unwrap()]);
    let data = dir.join("data");
    ok(&[
        "genesis",
        "--member",
        &format!("a,{},{}", k1.display(), k1.display()),
        "--member",
        &format!("b,{}.pub,{}.pub", k2.display(), k2.display()),
        "--fallback-ranks",
        "2",
        "--data",
        data.to_str().unwrap(),
        "--out",
        dir.join("genesis.json").to_str().unwrap(),
    ]);
    data.to_str().unwrap().to_owned()
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_block() {
    let dir = tempfile::tempdir().unwrap();
    let data = setup(dir.path());
    let key = dir.path().join("a.key");
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let mut rng = 0x5eed_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut early_kills = 0;
    for cycle in 0..CYCLES {
        let sink = acks.clone();
        let (mut child, reader) = spawn_reading_lines(
            Command::new(BIN)
                .args([
                    "chain",
                    "produce",
                    "--data",
                    &data,
                    "--key",
                    key.to_str().unwrap(),
                    "--blocks",
                    "1000000",
                    "--txs-per-block",
                    "10",
                ])
                .stderr(Stdio::null()),
            move |line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                if let ["committed", h, hash, slot] = f.as_slice() {
                    sink.lock().unwrap().push(Ack {
                        height: h.parse().unwrap(),
                        hash: (*hash).to_owned(),
                        slot: slot.parse().unwrap(),
                    });
                }
            },
        );
        // One cycle in ten dies during start-up (opening and re-verifying the store).
        let wait_ms = if cycle % 10 == 3 {
            early_kills += 1;
            next() % 15
        } else {
            20 + next() % 300
        };
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();

        let verified: serde_json::Value =
            serde_json::from_str(&ok(&["chain", "verify", "--data", &data])).unwrap();
        let height = verified["height"].as_u64().unwrap();
        let max_acked = acks
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.height)
            .max()
            .unwrap_or(0);
        assert!(
            height >= max_acked,
            "cycle {cycle}: stored height {height} below acknowledged {max_acked}"
        );
    }

    let acks = acks.lock().unwrap().clone();
    assert!(
        acks.len() > CYCLES,
        "too few blocks acknowledged: {}",
        acks.len()
    );
    assert!(early_kills >= 5);
    // Every acknowledged block is in the final chain, at its height.
    let export = ok(&["chain", "export", "--data", &data]);
    let stored: BTreeMap<u64, (String, u64)> = export
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["height"].as_u64().unwrap(),
                (
                    v["hash"].as_str().unwrap().to_owned(),
                    v["slot"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    for a in &acks {
        assert_eq!(
            stored.get(&a.height).map(|(h, _)| h.as_str()),
            Some(a.hash.as_str()),
            "acknowledged block {} lost",
            a.height
        );
    }
    // No slot was signed for two different blocks, and slots only move forward.
    let mut by_slot: BTreeMap<u64, &str> = BTreeMap::new();
    for a in &acks {
        if let Some(prev) = by_slot.insert(a.slot, &a.hash) {
            assert_eq!(prev, a.hash, "slot {} signed twice", a.slot);
        }
    }
    for w in acks.windows(2) {
        assert!(
            w[1].slot > w[0].slot,
            "slot went back: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    eprintln!(
        "{CYCLES} kills, {} acknowledged blocks, final height {}, 0 lost",
        acks.len(),
        stored.len()
    );
}

/// Votes signed by a process killed at random moments, 100 times, each run asked for other
/// values: every (checkpoint, round, step) only ever had one signature released.
#[test]
fn sigkill_between_signing_and_sending_never_yields_two_votes_for_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let data = setup(dir.path());
    let key = dir.path().join("a.key");
    let mut released: BTreeMap<(u64, u64, u64), std::collections::BTreeSet<String>> =
        BTreeMap::new();
    let mut rng = 0xfeed_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for cycle in 0..100u64 {
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        let (mut child, reader) = spawn_reading_lines(
            Command::new(BIN).args([
                "chain",
                "sign-votes",
                "--data",
                &data,
                "--key",
                key.to_str().unwrap(),
                "--count",
                "3",
                "--salt",
                &cycle.to_string(),
            ]),
            move |l| sink.lock().unwrap().push(l),
        );
        std::thread::sleep(Duration::from_millis(next() % 25));
        let _ = child.kill();
        let _ = child.wait();
        reader.join().unwrap();
        for l in lines.lock().unwrap().iter() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() == 5 && f[0] == "signed" {
                let k = (
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                    f[3].parse().unwrap(),
                );
                released.entry(k).or_default().insert(f[4].to_owned());
            }
        }
    }
    let equivocations: Vec<_> = released.iter().filter(|(_, s)| s.len() > 1).collect();
    assert!(
        equivocations.is_empty(),
        "two votes released for one step: {equivocations:?}"
    );
    assert!(
        released.len() >= 10,
        "only {} steps were signed",
        released.len()
    );
}
