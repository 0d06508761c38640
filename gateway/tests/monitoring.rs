//! The monitoring the repo ships, against a real Prometheus scraping the gateways of a running
//! `gridlet sim`: promtool accepts the config, the rules and what `/metrics` serves; every
//! PromQL expression of every dashboard panel returns data; every alert rule evaluates and
//! every metric it names exists.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, BIN};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default()
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(port: u16, q: &str) -> serde_json::Value {
    let body = get(port, &format!("/api/v1/query?query={}", encode(q)));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn has_data(v: &serde_json::Value) -> bool {
    v["status"] == "success"
        && v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test installs prometheus)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every `expr` of every panel of every dashboard, with Grafana's variables as Grafana would
/// expand them for "all homes" over a short range.
fn panel_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (title, expr) in raw_panel_exprs() {
        let expanded = expr
            .replace("$home", ".*")
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1m");
        out.push((title, expanded));
    }
    out
}

fn dashboards() -> Vec<serde_json::Value> {
    std::fs::read_dir(repo("dashboards/grafana/dashboards"))
        .unwrap()
        .map(|e| {
            serde_json::from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap()).unwrap()
        })
        .collect()
}

fn raw_panel_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for d in dashboards() {
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                out.push((
                    format!("{} / {}", d["title"], p["title"]),
                    t["expr"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    out
}

/// Every `expr:` of the alert rules.
fn alert_exprs() -> Vec<String> {
    std::fs::read_to_string(repo("dashboards/alerts.yml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:").map(|e| e.trim().to_owned()))
        .collect()
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("gridlet_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_shipped_config_and_rules_pass_promtool() {
    let (ok, out) = promtool(
        &[
            "check",
            "config",
            repo("dashboards/prometheus.yml").to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}");
    let (ok, out) = promtool(
        &[
            "check",
            "rules",
            repo("dashboards/alerts.yml").to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}");
    assert!(alert_exprs().len() >= 6);
    assert!(panel_exprs().len() >= 25);
    // The rules' own unit tests: a gateway that stops answering, a height that stands still.
    let (ok, out) = promtool(
        &[
            "test",
            "rules",
            repo("dashboards/alerts_test.yml").to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}");
}

#[test]
fn dashboards_pick_their_data_source_and_homes() {
    for d in dashboards() {
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(vars, ["datasource", "home"], "{}", d["title"]);
        for p in d["panels"].as_array().unwrap() {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    for (panel, expr) in raw_panel_exprs() {
        // Every series the panel selects is filtered by the chosen homes, and no counter is
        // shown raw through max() (a restart resets it).
        let selectors = expr.matches("gridlet_").count();
        let filtered = expr.matches("{home=~\"$home\"").count();
        assert_eq!(selectors, filtered, "{panel}: {expr}");
        assert!(
            !(expr.starts_with("max(gridlet_") && expr.contains("_total")),
            "{panel}: {expr}"
        );
    }
}

#[test]
fn every_panel_and_alert_has_data_from_a_running_community() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("sim");
    let sim = Command::new(BIN)
        .args([
            "sim",
            "--homes",
            "3",
            "--start-hour",
            "16",
            "--hours",
            "2.5",
            "--speedup",
            "120",
            "--report",
            report.to_str().unwrap(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("sim.err")).unwrap())
        .spawn()
        .unwrap();
    let mut sim = Killed(sim);
    let targets = report.join("prometheus-targets.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !targets.exists() {
        assert!(Instant::now() < deadline, "the sim wrote no targets");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));

    // Prometheus with the repo's config, scraping every second.
    let prom = dir.path().join("prom");
    std::fs::create_dir_all(prom.join("targets")).unwrap();
    std::fs::copy(&targets, prom.join("targets/sim.json")).unwrap();
    std::fs::copy(repo("dashboards/alerts.yml"), prom.join("alerts.yml")).unwrap();
    let config = std::fs::read_to_string(repo("dashboards/prometheus.yml"))
        .unwrap()
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace("refresh_interval: 30s", "refresh_interval: 1s");
    std::fs::write(prom.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            prom.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed (scripts/test installs it)");
    let _prometheus = Killed(prometheus);

    // Scrapes of all three gateways, and enough of them for rates over a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = TcpStream::connect(("127.0.0.1", port))
            .is_ok()
            .then(|| query(port, "count(up == 1)"));
        let ready = up
            .as_ref()
            .and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(|s| s == "3")
            })
            .unwrap_or(false);
        if ready
            && has_data(&query(
                port,
                "count_over_time(gridlet_ledger_height[1m]) >= 15",
            ))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape the gateways"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // What a gateway serves passes promtool's metrics check.
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&targets).unwrap()).unwrap();
    let addr = t[0]["targets"][0].as_str().unwrap().to_owned();
    let api_port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let text = get(api_port, "/metrics");
    let (ok, out) = promtool(&["check", "metrics"], Some(&text));
    assert!(ok, "promtool check metrics: {out}");

    let mut empty = Vec::new();
    for (panel, expr) in panel_exprs() {
        if !has_data(&query(port, &expr)) {
            empty.push(format!("{panel}: {expr}"));
        }
    }
    for expr in alert_exprs() {
        let v = query(port, &expr);
        assert_eq!(v["status"], "success", "{expr}: {v}");
        for name in metric_names(&expr) {
            if !has_data(&query(port, &name)) {
                empty.push(format!("alert {expr}: {name}"));
            }
        }
    }
    assert!(empty.is_empty(), "no data for:\n{}", empty.join("\n"));
    // The rules loaded into Prometheus are the repo's.
    let rules: serde_json::Value = serde_json::from_str(&get(port, "/api/v1/rules")).unwrap();
    let loaded = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(loaded, alert_exprs().len());

    let status = sim.0.wait().unwrap();
    let err = std::fs::read_to_string(dir.path().join("sim.err")).unwrap_or_default();
    let tail: String = err
        .chars()
        .rev()
        .take(3000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(status.success(), "the sim failed:\n{tail}");
}
