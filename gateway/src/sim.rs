//! `gridlet sim`: a whole community on one machine, each home a real gateway process talking to
//! simulated devices over real links. Per home: a Modbus TCP server with a PV inverter (unit 1)
//! and a battery (unit 2) on loopback, a DSMR meter on a socat pseudo-terminal (the last home:
//! an MQTT meter instead), and `gridlet run` with its own data dir, keys and config under
//! `DIR/homes/<n>/`. The gateways find each other on the embedded MQTT broker (or `--broker`).
//!
//! Scenario time runs `--speedup` times faster than wall time, for the gateways (through the
//! `[clock]` of their configs) and the device physics alike. When the day is over the gateways
//! stop producing, the orchestrator waits for them to agree on one tip, stops them with
//! SIGTERM, re-verifies every data dir and writes `report.json` and `chart.png`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use gridlet_actors::clock::Clock;
use gridlet_actors::journal::{ReleaseJournal, ReleaseState};
use gridlet_hil::home::{Counters, Flows, HomeProfile, MeterOutput, SimHome};
use gridlet_hil::pty::PtyPair;
use gridlet_ledger::crypto::deterministic_key;
use gridlet_ledger::genesis::Member;
use gridlet_ledger::market::book::TradeSource;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::{Genesis, MemberKey};
use serde_json::json;

use crate::chart::ChartSample;
use crate::{chain_cmd, keys};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Homes.
    pub homes: usize,
    /// Simulated hours.
    pub hours: f64,
    /// Scenario time per wall time.
    pub speedup: f64,
    /// Seed (keys, homes).
    pub seed: u64,
    /// Report directory.
    pub report: PathBuf,
    /// External broker `host:port` (none: an embedded one).
    pub broker: Option<String>,
    /// Slot length, scenario ms.
    pub slot_ms: u64,
    /// Hour of the day the scenario starts at.
    pub start_hour: f64,
    /// Homes trade in sealed-bid auction rounds instead of sale contracts.
    pub auctions: bool,
    /// Day-ahead schedule mode: the homes plan the day together (ADMM over the bus), follow
    /// their plans, and are billed on their signed meter readings; no live trading.
    pub schedule: bool,
    /// Show a progress line.
    pub progress: bool,
}

/// Gateway processes, stopped (SIGTERM, then SIGKILL) when dropped.
struct Gateways(Vec<Child>);

impl Gateways {
    fn terminate(&mut self, grace: Duration) {
        let mut children = std::mem::take(&mut self.0);
        for c in &children {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + grace;
        for c in &mut children {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for Gateways {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(5));
    }
}

/// A free loopback port, chosen by the OS (bound to port 0, then let go): for the embedded
/// broker, which binds it moments later in this process, before any gateway starts.
fn os_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("no free port")?;
    Ok(listener.local_addr()?.port())
}

/// Waits for each gateway to bind its API on a port of the OS's choosing and write it to
/// `api.addr` in its data dir; a gateway that exits meanwhile fails the simulation.
fn await_api_ports(setups: &mut [HomeSetup], gateways: &mut Gateways) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, s) in setups.iter_mut().enumerate() {
        loop {
            let text = std::fs::read_to_string(s.dir.join("api.addr")).unwrap_or_default();
            if let Ok(addr) = text.trim().parse::<std::net::SocketAddr>() {
                s.api_port = addr.port();
                break;
            }
            if let Some(status) = gateways
                .0
                .get_mut(i)
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "gateway {i} exited ({status}) before its API was up; see {}",
                    s.dir.join("gateway.log").display()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "gateway {i} did not start its API within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `GET path` on a gateway's API; the JSON body.
async fn api_get(port: u16, path: &str) -> Option<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let body = text.split_once("\r\n\r\n")?.1;
        serde_json::from_str(body).ok()
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()
        .flatten()
}

struct HomeSetup {
    dir: PathBuf,
    api_port: u16,
    member: MemberKey,
    name: String,
}

/// The community-wide settings of every gateway's config.
#[derive(Debug, Clone, Copy)]
struct Knobs {
    /// Wall anchor, scenario origin, speedup, end.
    clock: (u64, u64, f64, u64),
    /// Node tick.
    tick_ms: u64,
    /// Trade in auctions.
    auctions: bool,
    /// Day-ahead schedule mode.
    schedule: bool,
}

fn gateway_config(
    h: &HomeSetup,
    profile: &HomeProfile,
    modbus_port: u16,
    meter: &str,
    broker: (&str, u16),
    knobs: &Knobs,
) -> String {
    let Knobs {
        clock,
        tick_ms,
        auctions,
        schedule,
    } = *knobs;
    let schedule_section = if schedule {
        "\n[schedule]\nforecast = \"forecast.json\"\nlead_hours = 12\nresend_ms = 500\ndeadline_s = 300\n"
    } else {
        ""
    };
    format!(
        r#"# Written by `gridlet sim`: one home of the simulated community.
data_dir = "."
key_file = "home.key"
genesis = "../../genesis.json"
attestor_key_file = "battery.key"

[node]
name = "{name}"
tick_ms = {tick}

[bus]
broker = "{bhost}:{bport}"
prefix = "gridlet"

[pv]
host = "127.0.0.1"
port = {modbus_port}
unit = 1
poll_ms = 100
nameplate_w = {pv}

[battery]
host = "127.0.0.1"
port = {modbus_port}
unit = 2
poll_ms = 50
release_power_w = {release}
nameplate_w = {bat}
safe_after_ms = 2000

{meter}

[strategy]
period_ms = 900000
reserve_soc_pct = 40
min_offer_wh = 300
max_offer_wh = 2000
offer_price = 180000
offer_blocks = 30
max_buy_price = 250000
buy_below_soc_pct = 50
buy_above_import_w = 300
max_buy_wh = 2000
auctions = {auctions}
enabled = {trading}
{schedule_section}
[api]
listen = "127.0.0.1:0"

[clock]
anchor_unix_ms = {anchor}
origin_ms = {origin}
speedup = {speedup}
end_ms = {end}
"#,
        name = h.name,
        tick = tick_ms,
        auctions = auctions,
        trading = !schedule,
        bhost = broker.0,
        bport = broker.1,
        pv = profile.nameplate_w,
        release = profile.battery_w.min(3_000),
        bat = profile.battery_w,
        anchor = clock.0,
        origin = clock.1,
        speedup = clock.2,
        end = clock.3,
    )
}

/// Runs the simulated community and returns the summary (also in `report.json`).
pub fn run(o: &SimOptions) -> Result<serde_json::Value> {
    ensure!(o.homes >= 2, "--homes must be at least 2");
    ensure!(
        (0.0..24.0).contains(&o.start_hour),
        "--start-hour must be within 0–24"
    );
    ensure!(
        o.hours > 0.0 && o.hours <= 24.0 * 7.0,
        "--hours must be between 0 and 168"
    );
    ensure!(
        (1.0..=20_000.0).contains(&o.speedup),
        "--speedup must be between 1 and 20000"
    );
    let slot_real_ms = o.slot_ms as f64 / o.speedup;
    ensure!(
        slot_real_ms >= 40.0,
        "a slot of {} ms at speedup {} lasts {slot_real_ms:.0} ms of wall time; at least 40 ms \
         are needed (lower --speedup or raise --slot-ms)",
        o.slot_ms,
        o.speedup
    );
    let homes_dir = o.report.join("homes");
    if homes_dir.exists() {
        bail!(
            "{} already exists: choose another --report or delete it",
            homes_dir.display()
        );
    }
    std::fs::create_dir_all(&homes_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_async(o, &homes_dir))
}

async fn run_async(o: &SimOptions, homes_dir: &Path) -> Result<serde_json::Value> {
    // The community: keys, members, genesis.
    let members: Vec<Member> = (0..o.homes as u64)
        .map(|i| Member {
            name: format!("home-{i}"),
            key: MemberKey::from_secret(&deterministic_key(o.seed, i)),
            attestor: MemberKey::from_secret(&deterministic_key(o.seed ^ 0xE55, i)),
            balance: 100_000_000,
        })
        .collect();
    let mut genesis = Genesis::with_defaults(
        &format!("gridlet-sim-{}", o.seed),
        0,
        members.clone(),
        SelectionRule::Paper,
    );
    genesis.slot_ms = o.slot_ms;
    genesis.selection.fallback_delay_ms = o.slot_ms / 4;
    if o.schedule {
        genesis.schedule = Some(schedule_params(o.homes));
    }
    genesis.validate().context("simulation genesis")?;
    let initial_credits: u128 = members.iter().map(|m| u128::from(m.balance)).sum();
    std::fs::write(o.report.join("genesis.json"), genesis.to_json())?;

    let (broker_host, broker_port) = match &o.broker {
        Some(b) => {
            let (h, p) = b
                .rsplit_once(':')
                .with_context(|| format!("--broker {b:?} is not host:port"))?;
            (h.to_owned(), p.parse::<u16>().context("--broker port")?)
        }
        None => {
            let port = os_port()?;
            gridlet_actors::bus::start_embedded_broker(port, 8 * 1024 * 1024)
                .map_err(|e| anyhow::anyhow!("embedded broker: {e}"))?;
            ("127.0.0.1".to_owned(), port)
        }
    };

    // Devices.
    let mut sims = Vec::new();
    let mut meters = Vec::new();
    let mut ptys = Vec::new();
    let mut setups = Vec::new();
    let start_ms = (o.start_hour * 3_600_000.0) as u64;
    // Schedule mode runs into the next day until its first half hour is over: the meters
    // close the last interval there, and the readings reach the chain to be billed.
    // At least 8 s of wall time for that at high speedups.
    let billing_ms = if o.schedule {
        BILLING_MS.max((8_000.0 * o.speedup) as u64)
    } else {
        0
    };
    let end_ms = start_ms + (o.hours * 3_600_000.0) as u64 + billing_ms;
    // Ten node ticks per slot of wall time: enough for the fallback delay (a quarter slot),
    // cheap enough for a hundred gateways on two cores.
    let tick_ms = (o.slot_ms as f64 / o.speedup / 10.0).clamp(10.0, 100.0) as u64;
    // Gateways start a few seconds before scenario time does, to find their devices (and in
    // schedule mode to plan the day while the clock still stands at its start).
    let anchor = wall_ms() + if o.schedule { 15_000 } else { 5_000 };
    for (i, member) in members.iter().enumerate() {
        let profile = HomeProfile::from_seed(o.seed, i as u64);
        let home = SimHome::start(profile, start_ms).await?;
        let dir = homes_dir.join(i.to_string());
        std::fs::create_dir_all(&dir)?;
        keys::write_new(&dir.join("home.key"), &deterministic_key(o.seed, i as u64))?;
        keys::write_new(
            &dir.join("battery.key"),
            &deterministic_key(o.seed ^ 0xE55, i as u64),
        )?;
        chain_cmd::install_genesis(&dir, &genesis)?;
        if o.schedule {
            std::fs::write(
                dir.join("forecast.json"),
                serde_json::to_string_pretty(&forecast(&profile))?,
            )?;
        }
        let setup = HomeSetup {
            dir: dir.clone(),
            // Chosen by the OS when the gateway binds; read back from `api.addr`.
            api_port: 0,
            member: member.key,
            name: format!("home-{i}"),
        };
        let mqtt = i + 1 == o.homes;
        let meter_cfg = if mqtt {
            let topic = format!("sim/home-{i}/tele/SENSOR");
            meters.push(MeterOutput::mqtt(
                &broker_host,
                broker_port,
                &format!("sim-meter-{i}"),
                &topic,
            ));
            format!(
                "[meter]\nkind = \"mqtt\"\ntopic = \"{topic}\"\nformat = \"tasmota\"\nmax_age_ms = 2000\n"
            )
        } else {
            let pair =
                PtyPair::start().context("socat (needed for the DSMR meters' serial lines)")?;
            meters.push(MeterOutput::dsmr(&pair.a)?);
            let cfg = format!(
                "[meter]\nkind = \"dsmr\"\npath = \"{}\"\nversion = \"v5\"\nmax_age_ms = 2000\n",
                pair.b
            );
            ptys.push(pair);
            cfg
        };
        std::fs::write(
            dir.join("gateway.toml"),
            gateway_config(
                &setup,
                &profile,
                home.addr().port(),
                &meter_cfg,
                (&broker_host, broker_port),
                &Knobs {
                    clock: (anchor, start_ms, o.speedup, end_ms),
                    tick_ms,
                    auctions: o.auctions,
                    schedule: o.schedule,
                },
            ),
        )?;
        sims.push(home);
        setups.push(setup);
    }

    // Gateways.
    let exe = std::env::current_exe()?;
    let mut gateways = Gateways(Vec::new());
    for s in &setups {
        let log = std::fs::File::create(s.dir.join("gateway.log"))?;
        let child = Command::new(&exe)
            .args(["run", "--stop-on-stdin-eof", "--config"])
            .arg(s.dir.join("gateway.toml"))
            .env(
                "RUST_LOG",
                std::env::var("GRIDLET_SIM_LOG").unwrap_or_else(|_| "info,rumqttd=off".into()),
            )
            // A pipe nobody writes to: it closes when this process dies, however it dies, and
            // the gateway stops with it.
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start a gateway")?;
        gateways.0.push(child);
    }

    tokio::task::block_in_place(|| await_api_ports(&mut setups, &mut gateways))?;

    // Prometheus file service discovery: every gateway's /metrics, labelled by home.
    let targets: Vec<serde_json::Value> = setups
        .iter()
        .map(|s| {
            json!({
                "targets": [format!("127.0.0.1:{}", s.api_port)],
                "labels": {"home": s.name, "community": genesis.chain_id},
            })
        })
        .collect();
    std::fs::write(
        o.report.join("prometheus-targets.json"),
        serde_json::to_string_pretty(&targets)?,
    )?;

    // The day.
    let clock = Clock::anchored(anchor, start_ms, o.speedup);
    let mut samples = Vec::new();
    let mut last_ms = start_ms;
    let mut next_sample = start_ms;
    let sample_every = 5 * 60_000;
    let mut next_meter = Instant::now();
    let mut next_progress = Instant::now();
    let mut community = Counters::default();
    let mut community_shadow = Counters::default();
    let mut meter_errors = 0u64;
    let mut last_height = 0u64;
    let mut last_trades = 0usize;
    let mut logged_decile = u64::MAX;
    let mut physics = tokio::time::interval(Duration::from_millis(20));
    // Per interval of the first day, the community's net exchange (W·ms) with and without the
    // day-ahead plans (the shadow homes run self-consumption only).
    let mut stored_at_midnight: Option<(u64, i64)> = None;
    let mut interval_grid = vec![0i64; 96];
    let mut interval_shadow = vec![0i64; 96];
    // Telegrams several times per market interval, so interval readings are close to exact.
    let meter_every =
        Duration::from_millis(((INTERVAL_MS as f64 / o.speedup / 8.0) as u64).clamp(50, 200));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = physics.tick() => {}
            // Stopped early: the gateways go with the simulation (the guard stops them).
            _ = term.recv() => bail!("simulation stopped by SIGTERM"),
            _ = interrupt.recv() => bail!("simulation interrupted"),
        }
        for (i, g) in gateways.0.iter_mut().enumerate() {
            if let Some(status) = g.try_wait()? {
                bail!(
                    "gateway {i} exited ({status}) during the simulation; see {}",
                    setups[i].dir.join("gateway.log").display()
                );
            }
        }
        let now = clock.now_ms().min(end_ms);
        let dt = now.saturating_sub(last_ms);
        last_ms = now;
        let flows: Vec<Flows> = sims.iter_mut().map(|h| h.step(dt)).collect();
        let community_w: i64 = flows.iter().map(|f| f.grid_w).sum();
        let shadow_w: i64 = sims.iter().map(|h| h.shadow_grid_w()).sum();
        community.add(community_w, dt);
        community_shadow.add(shadow_w, dt);
        if now >= next_sample {
            samples.push(ChartSample {
                hour: now as f64 / 3_600_000.0,
                community_w,
                community_no_trading_w: shadow_w,
                soc_pct: flows.iter().map(|f| f.soc_pct).collect(),
            });
            next_sample = next_sample.saturating_add(sample_every);
        }
        if o.schedule && now >= start_ms + DAY_MS && stored_at_midnight.is_none() {
            stored_at_midnight = Some((
                sims.iter().map(SimHome::stored_wh).sum::<u64>(),
                sims.iter().map(SimHome::shadow_stored_wh).sum::<i64>(),
            ));
        }
        if o.schedule && now < start_ms + DAY_MS {
            let t = ((now % DAY_MS) / INTERVAL_MS) as usize;
            if let (Some(imp), Some(shadow)) =
                (interval_grid.get_mut(t), interval_shadow.get_mut(t))
            {
                *imp += community_w * dt as i64;
                *shadow += shadow_w * dt as i64;
            }
        }
        if Instant::now() >= next_meter {
            next_meter = Instant::now() + meter_every;
            for (i, m) in meters.iter_mut().enumerate() {
                if m.send(&flows[i], &sims[i].meter, now / 1000).await.is_err() {
                    meter_errors += 1;
                }
            }
        }
        if Instant::now() >= next_progress {
            next_progress = Instant::now() + Duration::from_secs(1);
            if let Some(s) = api_get(setups[0].api_port, "/api/status").await {
                last_height = s["height"].as_u64().unwrap_or(last_height);
            }
            if let Some(t) = api_get(setups[0].api_port, "/api/trades").await {
                last_trades = t.as_array().map_or(last_trades, Vec::len);
            }
            let pct = (now - start_ms) * 100 / (end_ms - start_ms).max(1);
            let line = format!(
                "[{:<20}] {:02}:{:02} simulated, height {last_height}, trades {last_trades}",
                "#".repeat((pct / 5) as usize),
                now / 3_600_000,
                now / 60_000 % 60
            );
            if o.progress {
                eprint!("\r{line}");
            } else if pct / 10 != logged_decile {
                logged_decile = pct / 10;
                tracing::info!("{line}");
            }
        }
        if now >= end_ms {
            break;
        }
    }
    if o.progress {
        eprintln!();
    }

    // Let the gateways agree on one tip, then stop them. The gateways' clocks stand still at
    // the end, where the last slot's block is still being produced and spread: a tip counts as
    // agreed only once it is that last slot's block, after which no gateway produces again
    // (an agreement seen earlier was a race with that block, not the end of the day).
    let last_slot = genesis.slot_at(end_ms);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut agreed = None;
    while Instant::now() < deadline {
        let mut heads = Vec::new();
        for s in &setups {
            heads.push(
                api_get(s.api_port, "/api/chain/head")
                    .await
                    .and_then(|v| Some((v["head"].as_str()?.to_owned(), v["slot"].as_u64()?))),
            );
        }
        let done = heads
            .iter()
            .all(|h| h.is_some() && *h == heads[0] && h.as_ref().is_some_and(|h| h.1 == last_slot));
        if done {
            agreed = heads[0].clone().map(|h| h.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Home 0's own view of its scheduled days, from its API.
    let api_schedule = if o.schedule {
        api_get(setups[0].api_port, "/api/schedule").await
    } else {
        None
    };
    tokio::task::block_in_place(|| gateways.terminate(Duration::from_secs(20)));
    drop(meters);
    drop(ptys);

    let exchange = DayObservations {
        grid_wms: interval_grid,
        self_consumption_wms: interval_shadow,
        stored_at_midnight,
        home_0_api: api_schedule,
    };
    report(
        o,
        &genesis,
        &setups,
        &sims,
        &samples,
        (&community, &community_shadow),
        initial_credits,
        agreed,
        meter_errors,
        &exchange,
    )
}

/// What the simulation saw of a scheduled day.
struct DayObservations {
    /// The community's net exchange per interval, W·ms.
    grid_wms: Vec<i64>,
    /// The same for the shadow homes (self-consumption only).
    self_consumption_wms: Vec<i64>,
    /// Energy stored in all batteries at midnight, Wh: actual, shadow.
    stored_at_midnight: Option<(u64, i64)>,
    /// Home 0's `/api/schedule` at the end.
    home_0_api: Option<serde_json::Value>,
}

const DAY_MS: u64 = 86_400_000;
const INTERVAL_MS: u64 = 15 * 60_000;
const BILLING_MS: u64 = 30 * 60_000;

/// The community's side of the day-ahead problem: a time-of-use tariff (night 0.22, day
/// 0.30, evening peak 17–21 h 0.40 credits/kWh), feed-in 0.08, a feeder of 3 kW per home.
fn schedule_params(homes: usize) -> gridlet_ledger::genesis::ScheduleParams {
    let mut p = gridlet_ledger::genesis::ScheduleParams::with_feeder(3_000 * homes as u64);
    p.import_prices = (0..96)
        .map(|t| match t / 4 {
            0..=6 => 220_000,
            17..=20 => 400_000,
            21..=23 => 260_000,
            _ => 300_000,
        })
        .collect();
    p
}

/// A home's forecast for the day: its load and clear-sky PV averaged over each interval, and
/// its battery as the simulator models it (lossless).
fn forecast(profile: &HomeProfile) -> serde_json::Value {
    let mean = |f: &dyn Fn(u64) -> f64, t: u64| -> f64 {
        (0..15)
            .map(|m| f(t * INTERVAL_MS + m * 60_000 + 30_000))
            .sum::<f64>()
            / 15.0
            / 1000.0
    };
    let pv = |ms: u64| {
        f64::from(gridlet_hil::devices::solar_profile_w(
            profile.nameplate_w,
            ms,
        ))
    };
    let load = |ms: u64| f64::from(profile.load_w(ms));
    let capacity = f64::from(profile.capacity_wh) / 1000.0;
    let soc0 = capacity * f64::from(profile.soc_pct.min(100)) / 100.0;
    json!({
        "pv_kw": (0..96).map(|t| mean(&pv, t)).collect::<Vec<_>>(),
        "load_kw": (0..96).map(|t| mean(&load, t)).collect::<Vec<_>>(),
        "capacity_kwh": capacity,
        "charge_kw": f64::from(profile.battery_w) / 1000.0,
        "discharge_kw": f64::from(profile.battery_w) / 1000.0,
        "efficiency": 1.0,
        "soc0_kwh": soc0,
        "soc_min_kwh": (capacity * 0.1).min(soc0),
    })
}

/// The community's largest mean export over an interval, W.
fn worst_export_w(wms: &[i64]) -> i64 {
    wms.iter()
        .map(|e| -e / INTERVAL_MS as i64)
        .max()
        .unwrap_or(0)
        .max(0)
}

/// The cost of a day's net exchange per interval (W·ms) at the import tariff and feed-in
/// price of `p`, µcredits.
fn grid_cost(p: &gridlet_ledger::genesis::ScheduleParams, tariff: u64, wms: &[i64]) -> i64 {
    wms.iter()
        .enumerate()
        .map(|(t, e)| {
            let wh = *e as f64 / 3_600_000.0;
            let price = if wh >= 0.0 {
                p.import_price_at(tariff, t)
            } else {
                p.feed_in_price
            };
            (wh * price as f64 / 1000.0).round() as i64
        })
        .sum()
}

#[allow(clippy::too_many_arguments)]
fn report(
    o: &SimOptions,
    genesis: &Genesis,
    setups: &[HomeSetup],
    sims: &[SimHome],
    samples: &[ChartSample],
    energy: (&Counters, &Counters),
    initial_credits: u128,
    agreed: Option<String>,
    meter_errors: u64,
    exchange: &DayObservations,
) -> Result<serde_json::Value> {
    // Every home's data dir re-verified from genesis, as `gridlet chain verify` does.
    let mut tips = Vec::new();
    for s in setups {
        let v = chain_cmd::verify(&s.dir)
            .with_context(|| format!("{} does not verify", s.dir.display()))?;
        tips.push(v["tip_hash"].as_str().unwrap_or_default().to_owned());
    }
    let same_tip = tips.iter().all(|t| *t == tips[0]);
    let verified = chain_cmd::load_verified(&setups[0].dir)?;
    let chain = &verified.chain;
    let state = chain.head_state();
    let market = state.market();
    let name_of = |k: &MemberKey| {
        setups
            .iter()
            .find(|s| s.member == *k)
            .map_or_else(|| k.short(), |s| s.name.clone())
    };
    let mut produced: BTreeMap<String, u64> = BTreeMap::new();
    for p in &verified.producers {
        *produced.entry(name_of(p)).or_default() += 1;
    }
    let every_home_produced = setups.iter().all(|s| produced.contains_key(&s.name));
    // Battery releases from every home's journal against the trades on chain.
    let mut releases = 0u64;
    let mut released_wh = 0u64;
    let mut releases_match = true;
    for s in setups {
        let journal = ReleaseJournal::open(&s.dir)?;
        for (trade, st) in journal.entries() {
            releases += 1;
            let on_chain = market.trades.get(&trade);
            releases_match &= on_chain.is_some_and(|t| t.seller == s.member && t.released);
            if let ReleaseState::Done { delivered_wh } = st {
                released_wh += delivered_wh;
            }
        }
    }
    let energy_traced = setups.iter().all(|s| {
        market.delivered_wh(&s.member) <= market.attested_wh(&s.member)
            && market
                .trades
                .values()
                .filter(|t| t.seller == s.member)
                .all(|t| t.allocation.iter().map(|a| a.wh).sum::<u64>() == t.energy_wh)
    });
    let credits_conserved = state.total_credits() == initial_credits;
    let auction_trades = market
        .trades
        .values()
        .filter(|t| matches!(t.source, TradeSource::Auction { .. }))
        .count();
    let auction_rounds: std::collections::BTreeSet<u64> = market
        .trades
        .values()
        .filter_map(|t| match t.source {
            TradeSource::Auction { round } => Some(round),
            TradeSource::Sale { .. } => None,
        })
        .collect();
    let wh_traded: u64 = market.trades.values().map(|t| t.energy_wh).sum();
    let wh_delivered: u64 = market.trades.values().filter_map(|t| t.delivered_wh).sum();
    let credits_moved: u64 = market.trades.values().map(|t| t.paid_out).sum();
    let mut prices: Vec<(f64, u64)> = Vec::new();
    for t in market.trades.values() {
        if let TradeSource::Sale { contract } = t.source {
            if let Some(c) = market.contracts.get(&contract) {
                let hour = (t.traded_height as f64 * genesis.slot_ms as f64) / 3_600_000.0;
                prices.push((hour, c.price));
            }
        }
    }
    prices.sort_by(|a, b| a.0.total_cmp(&b.0));
    let battery_discharged_wh: Vec<u64> = sims
        .iter()
        .map(|h| h.battery_discharged_mwh() / 1000)
        .collect();
    // Schedule mode: the first day's commitment and bills.
    let day0 = market.days.get(&0);
    let schedule_ok = !o.schedule || day0.is_some_and(|d| d.bills.is_some());
    let schedule = match (&genesis.schedule, day0) {
        (Some(p), Some(d)) => {
            let bills: BTreeMap<String, i64> = d
                .bills
                .iter()
                .flatten()
                .map(|(k, v)| (name_of(k), *v))
                .collect();
            let scheduled: BTreeMap<String, i64> = d
                .schedule_wh
                .iter()
                .map(|(k, v)| (name_of(k), v.iter().sum()))
                .collect();
            let metered: BTreeMap<String, i64> = d
                .metered_wh
                .iter()
                .map(|(k, v)| (name_of(k), v.iter().sum()))
                .collect();
            let deviation: BTreeMap<String, i64> = d
                .metered_wh
                .iter()
                .filter_map(|(k, m)| {
                    let s = d.schedule_wh.get(k)?;
                    Some((
                        name_of(k),
                        m.iter().zip(s).map(|(a, b)| (a - b).abs()).sum(),
                    ))
                })
                .collect();
            json!({
                "day": 0,
                "iterations": d.iterations,
                "primal_residual_w": d.primal_w,
                "dual_residual_w": d.dual_w,
                "clearing_price_min": d.prices.iter().min(),
                "clearing_price_max": d.prices.iter().max(),
                "scheduled_net_wh": scheduled,
                "metered_net_wh": metered,
                "abs_deviation_wh": deviation,
                "bills_microcredits": bills,
                "bills_total": d.bills.iter().flatten().map(|(_, v)| *v).sum::<i64>(),
                "community_account": state.community_balance(),
                "community_grid_cost_with_schedule": grid_cost(p, genesis.grid_tariff, &exchange.grid_wms),
                "community_grid_cost_self_consumption_only": grid_cost(p, genesis.grid_tariff, &exchange.self_consumption_wms),
                // What the batteries hold at midnight differs between the two: the schedule
                // ends the day at least as full as it began, self-consumption need not.
                "home_0_api": exchange.home_0_api,
                "feeder_w": p.feeder_w,
                "worst_interval_export_w": worst_export_w(&exchange.grid_wms),
                "worst_interval_export_w_self_consumption_only": worst_export_w(&exchange.self_consumption_wms),
                "stored_wh_at_midnight": exchange.stored_at_midnight.map(|s| s.0),
                "stored_wh_at_midnight_self_consumption_only": exchange.stored_at_midnight.map(|s| s.1),
            })
        }
        (Some(_), None) => json!({"day": 0, "committed": false}),
        _ => serde_json::Value::Null,
    };
    let summary = json!({
        "schedule": schedule,
        "homes": o.homes,
        "hours": o.hours,
        "speedup": o.speedup,
        "seed": o.seed,
        "slot_ms": o.slot_ms,
        "height": chain.head_height(),
        "tip_hash": tips[0],
        "tips_agreed_before_stop": agreed.is_some(),
        "blocks_per_producer": produced,
        "market": {
            "contracts": market.contracts.len(),
            "trades": market.trades.len(),
            "auction_trades": auction_trades,
            "auction_rounds_cleared_with_trades": auction_rounds.len(),
            "wh_traded": wh_traded,
            "battery_releases": releases,
            "wh_released": released_wh,
            "wh_delivered_on_chain": wh_delivered,
            "credits_paid_to_sellers": credits_moved,
            "credits_in_escrow": market.escrow,
            "trade_prices": prices.iter().map(|p| json!({"hour": p.0, "price": p.1})).collect::<Vec<_>>(),
        },
        "grid": {
            "community_import_wh": energy.0.import_mwh / 1000,
            "community_export_wh": energy.0.export_mwh / 1000,
            "community_import_without_trading_wh": energy.1.import_mwh / 1000,
            "community_export_without_trading_wh": energy.1.export_mwh / 1000,
            "home_import_wh": sims.iter().map(|h| h.meter.import_mwh / 1000).collect::<Vec<_>>(),
            "battery_discharged_wh": battery_discharged_wh,
            "meter_send_errors": meter_errors,
        },
        "invariants": {
            "credits_conserved": credits_conserved,
            "all_homes_same_tip": same_tip,
            "every_home_produced": every_home_produced,
            "every_release_matches_one_trade": releases_match,
            "delivered_energy_traces_to_attested_generation": energy_traced,
            "scheduled_day_committed_and_billed": schedule_ok,
        },
        "profiles": sims.iter().map(|h| h.profile).collect::<Vec<_>>(),
        "data_dirs": o.report.join("homes").display().to_string(),
    });
    std::fs::write(
        o.report.join("report.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    crate::chart::draw(&o.report.join("chart.png"), samples, &prices)?;
    if !same_tip {
        let odd: Vec<usize> = (0..tips.len()).filter(|i| tips[*i] != tips[0]).collect();
        bail!(
            "homes disagree on the tip: home 0 has {}, homes {odd:?} do not",
            tips[0]
        );
    }
    ensure!(credits_conserved, "credits not conserved");
    ensure!(
        schedule_ok,
        "schedule mode: day 0 was not committed and billed (see the gateways' logs)"
    );
    ensure!(
        releases_match,
        "a battery release matches no final trade of its home"
    );
    ensure!(
        energy_traced,
        "delivered energy does not trace back to attested generation"
    );
    Ok(summary)
}
