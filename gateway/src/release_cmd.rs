//! `gridlet release-orders`: the gateway's battery path alone (discovery, the release journal in
//! `--data`, the battery actor) executing release orders against a Modbus battery, printing
//! `reported TRADE WH` once a delivery is reported. For the exactly-once crash test (row D6):
//! the test plays the chain — a printed report is "on chain" — and after each SIGKILL hands a
//! restarted process only the orders with no report yet, as a restarted gateway does with the
//! open releases of its final state.

use std::io::Write;
use std::path::Path;

use actix::prelude::*;
use anyhow::{Context as _, Result};
use gridlet_actors::battery::{BatteryStatus, BatteryStorage, Delivered, Release};
use gridlet_actors::clock::Clock;
use gridlet_core::release::ReleaseOrder;
use gridlet_ledger::{DeliveryMode, Hash32};

/// Prints each report, and stops the system once every order was reported.
struct Printer {
    left: usize,
}

impl Actor for Printer {
    type Context = Context<Self>;
}

impl Handler<Delivered> for Printer {
    type Result = ();

    fn handle(&mut self, msg: Delivered, _: &mut Context<Self>) {
        let mut out = std::io::stdout().lock();
        // Flushed line by line: what the test reads is what a kill cannot take back.
        let _ = writeln!(out, "reported {} {}", msg.trade.to_hex(), msg.delivered_wh);
        let _ = out.flush();
        self.left = self.left.saturating_sub(1);
        if self.left == 0 {
            System::current().stop();
        }
    }
}

/// One order as `TRADE_HEX:WH`.
pub fn parse_order(s: &str) -> Result<(Hash32, u64)> {
    let (trade, wh) = s
        .split_once(':')
        .with_context(|| format!("order {s:?}: expected TRADE_HEX:WH"))?;
    let trade = Hash32::from_hex(trade).with_context(|| format!("order {s:?}: bad trade id"))?;
    let wh = wh
        .parse()
        .with_context(|| format!("order {s:?}: bad energy"))?;
    Ok((trade, wh))
}

/// Runs the orders to their reports (one after the other, as the battery takes them).
pub fn run(
    data: &Path,
    host: &str,
    port: u16,
    speedup: f64,
    orders: &[(Hash32, u64)],
) -> Result<()> {
    // A `[battery]` section as a config file would give it: every other field keeps the
    // config's default.
    let raw: crate::config::RawBattery = toml::from_str(&format!(
        "host = {host:?}\nport = {port}\npoll_ms = 20\nnameplate_w = 5000.0"
    ))?;
    let data = data.to_path_buf();
    let orders = orders.to_vec();
    let system = System::new();
    system.block_on(async move {
        let clock = Clock::scenario(0, speedup);
        let chain_id = Hash32::sha256(b"release-orders");
        let (link, device, journal, settings) =
            crate::discovery::connect_battery(&raw, &data, clock, chain_id).await?;
        let printer = Printer { left: orders.len() }.start();
        let battery = BatteryStorage::new(
            link,
            device,
            journal,
            settings,
            printer.recipient(),
            std::sync::Arc::new(std::sync::Mutex::new(BatteryStatus::default())),
        )
        .start();
        for (trade, energy_wh) in orders.iter().copied() {
            battery.do_send(Release(ReleaseOrder {
                trade,
                energy_wh,
                deadline_ms: u64::MAX,
                peers: Vec::new(),
                share_ppm: 1_000_000,
                mode: DeliveryMode::Discharge,
            }));
        }
        if orders.is_empty() {
            System::current().stop();
        }
        Ok::<(), anyhow::Error>(())
    })?;
    // Until the printer stops it.
    system.run()?;
    Ok(())
}
