//! `gridlet run --config FILE`: one home's gateway. Today it runs the ledger on the community
//! bus (block production, validation, sync); devices, the market actor and the HTTP API are
//! wired here as they land.
//!
//! Configuration is read in two stages, as ripgrep does: [`RawConfig`] mirrors the TOML (serde,
//! unknown fields refused), then [`GatewayConfig`] is checked and typed, and every error names
//! the field and the reason.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use gridlet_actors::bus::{self, BusConfig};
use gridlet_actors::ledger_actor::{
    forward_bus, initial_sync, Clock, LedgerActor, LedgerStatus, NodeWorker,
};
use gridlet_actors::node::{Node, NodeConfig};
use gridlet_drivers::backoff::BackoffPolicy;
use gridlet_ledger::store::{open_sled, SignerGuard};
use gridlet_ledger::MemberKey;
use serde::Deserialize;

use crate::{chain_cmd, keys};

/// The TOML as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Data directory (chain, signer guard, release journal).
    pub data_dir: PathBuf,
    /// This home's key file (0600).
    pub key_file: PathBuf,
    /// The community genesis file.
    pub genesis: PathBuf,
    /// Node settings.
    #[serde(default)]
    pub node: RawNode,
    /// Community bus.
    pub bus: RawBus,
}

/// `[node]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// Name on the bus (default: `home-` and the key's first hex digits).
    pub name: Option<String>,
    /// Clock tick, ms.
    pub tick_ms: Option<u64>,
    /// Mempool limit.
    pub max_mempool: Option<usize>,
}

/// `[bus]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBus {
    /// External broker `host:port`.
    pub broker: Option<String>,
    /// Start an embedded broker on this loopback port (when no broker is given).
    pub embedded_port: Option<u16>,
    /// Topic prefix.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Keep the broker session across reconnects.
    #[serde(default = "yes")]
    pub persistent_session: bool,
}

fn default_prefix() -> String {
    "gridlet".into()
}

fn yes() -> bool {
    true
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Key file.
    pub key_file: PathBuf,
    /// Genesis file.
    pub genesis: PathBuf,
    /// Node name.
    pub name: Option<String>,
    /// Tick.
    pub tick: Duration,
    /// Mempool limit.
    pub max_mempool: usize,
    /// Broker host and port.
    pub broker: (String, u16),
    /// Whether to start the embedded broker.
    pub embedded: bool,
    /// Topic prefix.
    pub prefix: String,
    /// Persistent session.
    pub persistent_session: bool,
}

fn field(name: &str, reason: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("config field `{name}`: {reason}")
}

impl GatewayConfig {
    /// Reads and checks a config file; relative paths are relative to the file.
    pub fn load(path: &Path) -> Result<GatewayConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let raw: RawConfig =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let tick_ms = raw.node.tick_ms.unwrap_or(100);
        if !(10..=10_000).contains(&tick_ms) {
            return Err(field(
                "node.tick_ms",
                format!("{tick_ms} is outside 10–10000"),
            ));
        }
        let broker = match (&raw.bus.broker, raw.bus.embedded_port) {
            (Some(_), Some(_)) => {
                return Err(field(
                    "bus",
                    "give either `broker` or `embedded_port`, not both",
                ))
            }
            (None, None) => {
                return Err(field(
                    "bus",
                    "give `broker = \"host:port\"` or `embedded_port`",
                ))
            }
            (Some(b), None) => {
                let (h, p) = b
                    .rsplit_once(':')
                    .ok_or_else(|| field("bus.broker", format!("{b:?} is not host:port")))?;
                let port = p
                    .parse::<u16>()
                    .map_err(|_| field("bus.broker", format!("bad port in {b:?}")))?;
                (h.to_owned(), port)
            }
            (None, Some(port)) => ("127.0.0.1".to_owned(), port),
        };
        if raw.bus.prefix.is_empty() || raw.bus.prefix.contains(['#', '+']) {
            return Err(field(
                "bus.prefix",
                "must be non-empty and free of MQTT wildcards",
            ));
        }
        Ok(GatewayConfig {
            data_dir: abs(&raw.data_dir),
            key_file: abs(&raw.key_file),
            genesis: abs(&raw.genesis),
            name: raw.node.name,
            tick: Duration::from_millis(tick_ms),
            max_mempool: raw.node.max_mempool.unwrap_or(10_000),
            broker,
            embedded: raw.bus.embedded_port.is_some(),
            prefix: raw.bus.prefix,
            persistent_session: raw.bus.persistent_session,
        })
    }
}

/// Runs the gateway until SIGINT or SIGTERM.
pub fn run(cfg: GatewayConfig) -> Result<()> {
    let genesis = chain_cmd::load_genesis(&cfg.genesis)?;
    chain_cmd::install_genesis(&cfg.data_dir, &genesis)?;
    let sk = keys::load_secret(&cfg.key_file)?;
    let me = MemberKey::from_secret(&sk);
    if !genesis.members.iter().any(|m| m.key == me) {
        bail!(
            "key {} is not a member of community {}",
            me,
            genesis.chain_id
        );
    }
    let name = cfg
        .name
        .clone()
        .unwrap_or_else(|| format!("home-{}", me.short()));
    let (chain, report) = open_sled(&cfg.data_dir, genesis.clone(), 1_000)
        .with_context(|| format!("cannot open the chain in {}", cfg.data_dir.display()))?;
    if let Some((from, count, reason)) = &report.dropped {
        tracing::warn!(from, count, %reason, "dropped stored blocks that did not verify; peers will resend them");
    }
    tracing::info!(height = chain.chain().head_height(), %name, "chain opened");
    let guard = SignerGuard::open(&cfg.data_dir)?;
    let from_height = chain.chain().finalized().1 + 1;
    let node = Node::new(
        NodeConfig {
            name: name.clone(),
            max_mempool: cfg.max_mempool,
            sync_batch: 200,
        },
        sk,
        chain,
        guard,
    );
    if cfg.embedded {
        bus::start_embedded_broker(cfg.broker.1, 8 * 1024 * 1024)
            .map_err(|e| anyhow::anyhow!("embedded broker: {e}"))?;
        tracing::info!(port = cfg.broker.1, "embedded MQTT broker started");
    }
    let system = actix::System::new();
    system.block_on(async move {
        let bus_cfg = BusConfig {
            host: cfg.broker.0.clone(),
            port: cfg.broker.1,
            node: name.clone(),
            prefix: cfg.prefix.clone(),
            chain_id: genesis.hash().to_hex(),
            persistent_session: cfg.persistent_session,
            backoff: BackoffPolicy {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(30),
            },
            max_packet_bytes: 8 * 1024 * 1024,
        };
        let (bus, events, _bus_task) = bus::spawn(bus_cfg);
        let node_cell = std::sync::Mutex::new(Some(node));
        let worker = actix::SyncArbiter::start(1, move || {
            NodeWorker::new(
                node_cell
                    .lock()
                    .ok()
                    .and_then(|mut n| n.take())
                    .expect("the node worker is started exactly once"),
            )
        });
        let status = Arc::new(Mutex::new(LedgerStatus::default()));
        let actor = actix::Actor::start(LedgerActor::new(
            worker,
            bus.clone(),
            Clock::real(),
            cfg.tick,
            status,
        ));
        forward_bus(events, actor);
        initial_sync(&bus, &name, from_height).await;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        anyhow::Ok(())
    })?;
    Ok(())
}
