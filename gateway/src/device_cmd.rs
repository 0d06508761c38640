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

fn dialect(name: &str) -> Result<gridlet_hil::dsmr_sim::Dialect> {
    use gridlet_hil::dsmr_sim::Dialect;
    Ok(match name {
        "v2_2" | "2.2" => Dialect::V2_2,
        "v4" | "4" => Dialect::V4,
        "v5" | "5" => Dialect::V5,
        "fluvius" | "be" => Dialect::Fluvius,
        other => bail!("unknown dialect {other:?}: use v2_2, v4, v5 or fluvius"),
    })
}

fn version(name: &str) -> Result<gridlet_drivers::dsmr::reader::DsmrVersion> {
    use gridlet_drivers::dsmr::reader::DsmrVersion;
    Ok(match name {
        "v2_2" | "2.2" => DsmrVersion::V2_2,
        "v4" | "4" => DsmrVersion::V4,
        "v5" | "5" | "fluvius" => DsmrVersion::V5,
        other => bail!("unknown DSMR version {other:?}: use v2_2, v4 or v5"),
    })
}

/// `gridlet dsmr parse FILE`.
pub fn dsmr_parse(file: &Path, x25: bool) -> Result<()> {
    use gridlet_drivers::dsmr::{parse, CrcKind};
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let kind = if x25 { CrcKind::X25 } else { CrcKind::Arc };
    match parse(&bytes, kind) {
        Ok(t) => {
            println!("{}", serde_json::to_string(&t)?);
            Ok(())
        }
        Err(e) => {
            let crc_bad = matches!(e, gridlet_drivers::dsmr::DsmrError::CrcMismatch { .. });
            println!(
                "{}",
                serde_json::json!({"crc_ok": if crc_bad { Some(false) } else { None }, "error": e.to_string()})
            );
            bail!("{}: telegram rejected: {e}", file.display())
        }
    }
}

/// `gridlet dsmr generate`.
pub fn dsmr_generate(name: &str, seed: u64, crc: &str, out: Option<&Path>) -> Result<()> {
    use gridlet_drivers::dsmr::CrcStyle;
    use gridlet_hil::dsmr_sim::{telegram, MeterReadings};
    let style = match crc {
        "padded" => CrcStyle::Padded,
        "unpadded" => CrcStyle::Unpadded,
        "wrong" => CrcStyle::Wrong,
        "none" => CrcStyle::None,
        other => bail!("unknown --crc {other:?}: use padded, unpadded, wrong or none"),
    };
    let bytes = telegram(dialect(name)?, &MeterReadings::from_seed(seed), style);
    match out {
        Some(p) => {
            std::fs::write(p, &bytes).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(())
}

/// `gridlet dsmr read`.
pub async fn dsmr_read(
    serial: Option<String>,
    tcp: Option<String>,
    version_name: &str,
    count: u64,
    stale_s: u64,
) -> Result<()> {
    use gridlet_drivers::dsmr::reader::{ReadEvent, TelegramReader};
    use gridlet_drivers::dsmr::CrcKind;
    let v = version(version_name)?;
    let stale = Duration::from_secs(stale_s.max(1));
    let stream: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match (serial, tcp) {
        (Some(path), _) => Box::new(
            v.open_serial(&path)
                .with_context(|| format!("cannot open {path}"))?,
        ),
        (None, Some(addr)) => Box::new(
            tokio::net::TcpStream::connect(&addr)
                .await
                .with_context(|| format!("cannot connect to {addr}"))?,
        ),
        (None, None) => bail!("give --serial PATH or --tcp HOST:PORT"),
    };
    let mut reader = TelegramReader::new(stream, CrcKind::Arc, stale);
    let mut good = 0u64;
    loop {
        match reader.next().await {
            ReadEvent::Telegram(t) => {
                println!("{}", serde_json::to_string(&t)?);
                good += 1;
                if count > 0 && good >= count {
                    return Ok(());
                }
            }
            ReadEvent::Rejected(e) => {
                tracing::warn!(%e, "telegram rejected");
                println!("{}", serde_json::json!({"rejected": e.to_string()}));
            }
            ReadEvent::Stale { since } => {
                tracing::warn!(
                    seconds = since.as_secs_f64(),
                    "no valid telegram: values are stale"
                );
                println!("{}", serde_json::json!({"stale_s": since.as_secs_f64()}));
            }
            ReadEvent::Closed(reason) => bail!("meter stream closed: {reason}"),
        }
    }
}
