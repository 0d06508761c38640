//! Device commands: `gridlet sunspec scan` and `gridlet hil`.

use std::net::ToSocketAddrs;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use gridlet_drivers::modbus::{sunspec_scan as scan, Endpoint, LinkConfig, ModbusLink};
use gridlet_drivers::sunspec::WordOrder;
use gridlet_hil::Scenario;

/// `--word-order`.
#[derive(Clone, Copy, ValueEnum)]
pub enum WordOrderArg {
    /// Most significant word first (SunSpec).
    BigEndian,
    /// Least significant word first.
    LittleEndian,
}

impl From<WordOrderArg> for WordOrder {
    fn from(w: WordOrderArg) -> Self {
        match w {
            WordOrderArg::BigEndian => WordOrder::BigEndian,
            WordOrderArg::LittleEndian => WordOrder::LittleEndian,
        }
    }
}

/// A runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Scans a device and returns the JSON document.
pub async fn sunspec_scan(
    host: &str,
    port: u16,
    unit: u8,
    timeout_ms: u64,
    order: WordOrder,
) -> Result<serde_json::Value> {
    let addr = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}:{port}"))?
        .next()
        .with_context(|| format!("{host}:{port} has no address"))?;
    let mut cfg = LinkConfig::new(Endpoint::Tcp(addr));
    cfg.timeout = Duration::from_millis(timeout_ms);
    let mut link = ModbusLink::new(cfg);
    let result = scan(&mut link, unit, order).await?;
    link.disconnect().await;
    match result {
        Some(found) => Ok(serde_json::to_value(&found)?),
        None => bail!("no SunSpec marker at base 40000, 0 or 50000 on {addr} unit {unit}"),
    }
}

/// Starts the scenario's simulators, prints where they listen, runs until SIGINT/SIGTERM.
pub async fn hil(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read scenario {}", path.display()))?;
    let scenario = Scenario::from_toml(&text).with_context(|| path.display().to_string())?;
    let (running, started) = scenario.start().await?;
    println!("{}", serde_json::json!({ "modbus": started }));
    use std::io::Write;
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = running.run_physics(Duration::from_millis(100)) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("simulators stopped");
    Ok(())
}
