//! Helpers shared by the gateway's integration tests: the binary, the Python peers, free
//! ports, and a structural JSON comparison with a float tolerance.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_gridlet");

/// The Python interpreter with the reference peers (pysunspec2, pymodbus, dsmr-parser, ecdsa).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("GRIDLET_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python test peer: run scripts/test (it creates .venv) or set GRIDLET_PYTHON"
    );
    venv
}

/// A test script under `gateway/tests/py/`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

/// A site-packages file of the venv (pysunspec2's device images).
pub fn site_file(rel: &str) -> PathBuf {
    let out = Command::new(python())
        .args([
            "-c",
            "import sunspec2, os; print(os.path.dirname(sunspec2.__file__))",
        ])
        .output()
        .expect("python runs");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join(rel)
}

/// Runs a command; returns (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.env("RUST_LOG", "warn").output().expect("command runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A free TCP port on loopback (for peers that cannot report the port they bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns a command and returns it with its first stdout line.
pub fn spawn_until_line(cmd: &mut Command) -> (Guard, String) {
    let mut child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawns");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    (Guard(child), line)
}

/// Spawns a command (`RUST_LOG=warn`) and hands each stdout line to `on_line` on a thread as it
/// comes, so a crash test keeps what a process printed before it was killed; join the thread
/// after the kill.
pub fn spawn_reading_lines(
    cmd: &mut Command,
    mut on_line: impl FnMut(String) + Send + 'static,
) -> (Child, std::thread::JoinHandle<()>) {
    let mut child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawns");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            on_line(line);
        }
    });
    (child, reader)
}

/// Compares two JSON documents; numbers within a relative 1e-6. Returns the differing paths.
pub fn json_diff(a: &serde_json::Value, b: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value as V;
    match (a, b) {
        (V::Number(x), V::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if (x - y).abs() > 1e-6 * x.abs().max(1.0) {
                out.push(format!("{path}: {x} vs {y}"));
            }
        }
        (V::Object(x), V::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => json_diff(v, w, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}: only on the left")),
                }
            }
            for k in y.keys() {
                if !x.contains_key(k) {
                    out.push(format!("{path}.{k}: only on the right"));
                }
            }
        }
        (V::Array(x), V::Array(y)) => {
            if x.len() != y.len() {
                out.push(format!("{path}: {} vs {} elements", x.len(), y.len()));
            }
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                json_diff(v, w, &format!("{path}[{i}]"), out);
            }
        }
        (x, y) if x == y => {}
        (x, y) => out.push(format!("{path}: {x} vs {y}")),
    }
}

/// One home's files in `dir`: `home.key`, `battery.key` (with their `.pub`) and a
/// `genesis.json` whose only member, `home-0`, they are.
pub fn home_files(dir: &std::path::Path) {
    for k in ["home.key", "battery.key"] {
        let (ok, _, err) =
            run(Command::new(BIN).args(["keygen", "--out", dir.join(k).to_str().unwrap()]));
        assert!(ok, "{err}");
    }
    home_genesis(dir, "");
}

/// `dir/genesis.json` with one member, home-0, of the keys in `dir`; `equipment` is the
/// member spec's tail (`""`: the defaults, or e.g. `",9000,4000,device"`).
pub fn home_genesis(dir: &std::path::Path, equipment: &str) {
    let member = format!(
        "home-0,{},{}{equipment}",
        dir.join("home.key.pub").display(),
        dir.join("battery.key.pub").display()
    );
    let genesis = dir.join("genesis.json");
    let _ = std::fs::remove_file(&genesis);
    let (ok, _, err) = run(Command::new(BIN).args([
        "genesis",
        "--member",
        &member,
        "--out",
        genesis.to_str().unwrap(),
    ]));
    assert!(ok, "{err}");
}
