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

use gridlet_ledger::MicroCredits;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use gridlet_actors::clock::Clock;
use gridlet_hil::community::{
    forecast, schedule_params, DayObservations, BILLING_MS, DAY_MS, INTERVAL_MS,
};
use gridlet_hil::home::{Counters, Flows, HomeProfile, MeterOutput, SimHome};
use gridlet_hil::pty::NativePty;
use gridlet_ledger::crypto::deterministic_key;
use gridlet_ledger::genesis::{Equipment, Member};
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::{Genesis, MemberKey};
use serde_json::json;

use crate::chart::ChartSample;

pub mod compare;
pub mod faults;
mod home_config;
mod procs;
mod report;

use crate::{chain_cmd, keys};
use home_config::{gateway_config, HomeSetup, Knobs};
use procs::{api_get, await_api_ports, os_port, wall_ms, Gateways};
use report::report;

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
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Run the consensus fault suite (`gridlet faults`): relays, two brokers, perturbations.
    pub faults: Option<faults::FaultOptions>,
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

/// A simulated home's equipment as its genesis entry states it: the HIL battery's capacity and
/// the PV array's nameplate. The HIL battery holds the attestor key and signs — except in
/// schedule mode, whose meter readings are signed with the key on the gateway (a meter that
/// signs its own readings is not simulated), so those homes run gateway-signed.
fn equipment_of(profile: &HomeProfile, schedule: bool) -> Equipment {
    let (battery_wh, pv_w) = (
        u64::from(profile.capacity_wh),
        u64::from(profile.nameplate_w),
    );
    if schedule {
        Equipment::gateway(battery_wh, pv_w)
    } else {
        Equipment::device(battery_wh, pv_w)
    }
}

async fn run_async(o: &SimOptions, homes_dir: &Path) -> Result<serde_json::Value> {
    // The community: keys, members, genesis.
    let members: Vec<Member> = (0..o.homes as u64)
        .map(|i| Member {
            name: format!("home-{i}"),
            key: MemberKey::from_secret(&deterministic_key(o.seed, i)),
            attestor: MemberKey::from_secret(&deterministic_key(o.seed ^ 0xE55, i)),
            equipment: equipment_of(&HomeProfile::from_seed(o.seed, i), o.schedule),
            balance: MicroCredits::new(100_000_000),
        })
        .collect();
    // The keys follow the seed; the community's name is this run's own, so that two runs of
    // one seed on one machine (or one shared broker) are two communities, never one member
    // set signing on two chains.
    let mut genesis = Genesis::with_defaults(
        &format!("gridlet-sim-{}-{}", o.seed, run_tag()),
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
    let initial_credits: u128 = members.iter().map(|m| u128::from(m.balance.get())).sum();
    std::fs::write(o.report.join("genesis.json"), genesis.to_json())?;

    // The fault suite's second broker: a partition's minority talks on it.
    let broker_b = if o.faults.is_some() {
        let port = os_port()?;
        tokio::task::block_in_place(|| {
            gridlet_actors::bus::start_embedded_broker(port, 8 * 1024 * 1024)
        })
        .context("second embedded broker")?;
        Some(port)
    } else {
        None
    };
    let (broker_host, broker_port) = match &o.broker {
        Some(_) if o.faults.is_some() => bail!("the fault suite runs its own brokers"),
        Some(b) => {
            let (h, p) = b
                .rsplit_once(':')
                .with_context(|| format!("--broker {b:?} is not host:port"))?;
            (h.to_owned(), p.parse::<u16>().context("--broker port")?)
        }
        None => {
            let port = os_port()?;
            tokio::task::block_in_place(|| {
                gridlet_actors::bus::start_embedded_broker(port, 8 * 1024 * 1024)
            })
            .context("embedded broker")?;
            ("127.0.0.1".to_owned(), port)
        }
    };

    // Devices.
    let mut sims = Vec::new();
    let mut meters = Vec::new();
    let mut ptys = Vec::new();
    let mut setups = Vec::new();
    let mut relays = Vec::new();
    let start_ms = (o.start_hour * 3_600_000.0) as u64;
    // Schedule mode runs into the next day until its first half hour is over: the meters
    // close the last interval there, and the readings reach the chain to be billed.
    // At least 8 s of wall time for that at high speedups.
    let billing_ms = if o.schedule {
        BILLING_MS.max((8_000.0 * o.speedup) as u64)
    } else {
        0
    };
    let day_end_ms = start_ms + (o.hours * 3_600_000.0) as u64;
    let end_ms = day_end_ms + billing_ms;
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
        let attestor_key = deterministic_key(o.seed ^ 0xE55, i as u64);
        if o.schedule {
            keys::write_new(&dir.join("battery.key"), &attestor_key)?;
        } else {
            // The battery holds the key; the gateway never sees it.
            home.commission_signer(gridlet_hil::signing_device::SigningDevice::new(
                attestor_key,
                genesis.hash(),
                member.key,
            ));
        }
        chain_cmd::install_genesis(&dir, &genesis)?;
        // Every home has its forecast: the strategy keeps back what the home will need by it,
        // the day-ahead schedule plans with it.
        std::fs::write(
            dir.join("forecast.json"),
            serde_json::to_string_pretty(&forecast(&profile))?,
        )?;
        let setup = HomeSetup {
            dir: dir.clone(),
            // Chosen by the OS when the gateway binds; read back from `api.addr`.
            api_port: 0,
            member: member.key,
            name: format!("home-{i}"),
        };
        // The suite moves homes between brokers: every meter is a serial one there.
        let mqtt = i + 1 == o.homes && o.faults.is_none();
        let gateway_broker = if o.faults.is_some() {
            let relay = gridlet_hil::relay::Relay::start(gridlet_hil::relay::Upstream::To(
                std::net::SocketAddr::from(([127, 0, 0, 1], broker_port)),
            ))
            .await?;
            let port = relay.addr().port();
            relays.push(relay);
            ("127.0.0.1".to_owned(), port)
        } else {
            (broker_host.clone(), broker_port)
        };
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
            // The meter's serial line: a pseudo-terminal opened here (no socat needed).
            let pty =
                NativePty::open().context("cannot open a pseudo-terminal for a DSMR meter")?;
            meters.push(MeterOutput::dsmr(&pty)?);
            let cfg = format!(
                "[meter]\nkind = \"dsmr\"\npath = \"{}\"\nversion = \"v5\"\nmax_age_ms = 2000\n",
                pty.path
            );
            ptys.push(pty);
            cfg
        };
        std::fs::write(
            dir.join("gateway.toml"),
            gateway_config(
                &setup,
                &profile,
                home.addr().port(),
                &meter_cfg,
                (&gateway_broker.0, gateway_broker.1),
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
        gateways.0.push(spawn_gateway(&exe, s)?);
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

    // The fault suite, if asked for.
    let mut suite = o.faults.as_ref().map(|f| {
        faults::FaultRun::new(
            f,
            o.homes,
            std::net::SocketAddr::from(([127, 0, 0, 1], broker_port)),
            std::net::SocketAddr::from(([127, 0, 0, 1], broker_b.unwrap_or(broker_port))),
            (o.slot_ms as f64 / o.speedup) as u64,
        )
    });
    let mut targets: Vec<faults::Target> = relays
        .into_iter()
        .zip(&setups)
        .map(|(relay, s)| faults::Target {
            relay,
            api_port: s.api_port,
        })
        .collect();
    let mut down = vec![false; o.homes];

    // The day.
    let clock = Clock::anchored(anchor, start_ms, o.speedup);
    let mut samples = Vec::new();
    let mut last_ms = start_ms;
    let mut next_sample = start_ms;
    let sample_every = 5 * 60_000;
    let mut next_meter = Instant::now();
    let mut next_progress = Instant::now();
    // On a terminal a bar with the simulated time, its ETA and the chain; otherwise a plain
    // log line every tenth of the day (for pipes, CI logs and the journal).
    let bar = o
        .progress
        .then(|| progress_bar(end_ms.saturating_sub(start_ms) / 60_000));
    let mut community = Counters::default();
    let mut community_shadow = Counters::default();
    let mut meter_errors = 0u64;
    let mut load_wms = 0u64;
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
        if let Some(suite) = &mut suite {
            for op in suite.tick(&targets).await {
                apply_fault(
                    op,
                    &exe,
                    &mut gateways,
                    &mut setups,
                    &mut targets,
                    &mut down,
                )?;
            }
            // A restarted gateway writes its new API port when it is up.
            for (i, t) in targets.iter_mut().enumerate() {
                if down[i] {
                    let text =
                        std::fs::read_to_string(setups[i].dir.join("api.addr")).unwrap_or_default();
                    if let Ok(addr) = text.trim().parse::<std::net::SocketAddr>() {
                        setups[i].api_port = addr.port();
                        t.api_port = addr.port();
                        down[i] = false;
                    }
                }
            }
        }
        for (i, g) in gateways.0.iter_mut().enumerate() {
            if down[i] {
                continue;
            }
            if let Some(status) = g.try_wait()? {
                bail!(
                    "gateway {i} exited ({status}) during the simulation; see {}",
                    setups[i].dir.join("gateway.log").display()
                );
            }
        }
        let now = clock.now_ms().min(end_ms);
        let dt = now.saturating_sub(last_ms);
        // The community's exchange and load count over the simulated hours only, not the
        // billing tail after them (the no-trading twin and the reference day cover those hours).
        let dt_counted = now.min(day_end_ms).saturating_sub(last_ms.min(day_end_ms));
        last_ms = now;
        let flows: Vec<Flows> = sims.iter_mut().map(|h| h.step(dt)).collect();
        let community_w: i64 = flows.iter().map(|f| f.grid_w).sum();
        let load_w: i64 = flows.iter().map(|f| f.load_w.max(0)).sum();
        load_wms = load_wms.saturating_add(
            u64::try_from(load_w)
                .unwrap_or(0)
                .saturating_mul(dt_counted),
        );
        let shadow_w: i64 = sims.iter().map(|h| h.shadow_grid_w()).sum();
        community.add(community_w, dt_counted);
        community_shadow.add(shadow_w, dt_counted);
        if now >= next_sample {
            samples.push(ChartSample {
                hour: now as f64 / 3_600_000.0,
                community_w,
                community_no_trading_w: shadow_w,
                soc_pct: flows.iter().map(|f| f.soc_pct).collect(),
            });
            next_sample = next_sample.saturating_add(sample_every);
        }
        if now >= day_end_ms && stored_at_midnight.is_none() {
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
            let clock_text = format!("{:02}:{:02}", now / 3_600_000 % 24, now / 60_000 % 60);
            match &bar {
                Some(b) => {
                    b.set_position((now - start_ms) / 60_000);
                    b.set_message(format!(
                        "{clock_text} simulated, height {last_height}, trades {last_trades}"
                    ));
                }
                None if pct / 10 != logged_decile => {
                    logged_decile = pct / 10;
                    tracing::info!(
                        "{pct:>3} % — {clock_text} simulated, height {last_height}, trades {last_trades}"
                    );
                }
                None => {}
            }
        }
        if now >= end_ms {
            break;
        }
    }
    if let Some(b) = bar {
        b.set_position((end_ms - start_ms) / 60_000);
        b.finish_with_message(format!(
            "day simulated, height {last_height}, trades {last_trades}; settling the chain"
        ));
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
    let fault_summary = match &suite {
        Some(suite) => {
            let end = faults::end_check(&setups)?;
            let line = suite.summary(&end);
            std::fs::write(o.report.join("faults.json"), line.to_string())?;
            println!("{line}");
            Some(line)
        }
        None => None,
    };

    let exchange = DayObservations {
        grid_wms: interval_grid,
        self_consumption_wms: interval_shadow,
        stored_at_midnight,
        home_0_api: api_schedule,
        load_wms,
    };
    let mut summary = report(
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
    )?;
    if let Some(f) = fault_summary {
        summary["faults"] = f;
    }
    Ok(summary)
}

/// Starts one home's `gridlet run`.
fn spawn_gateway(exe: &Path, s: &HomeSetup) -> Result<std::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.dir.join("gateway.log"))?;
    Command::new(exe)
        .args(["run", "--stop-on-stdin-eof", "--config"])
        .arg(s.dir.join("gateway.toml"))
        .env(
            "RUST_LOG",
            std::env::var("GRIDLET_SIM_LOG")
                .unwrap_or_else(|_| "info,rumqttd=off,arc_malachitebft_core_consensus=warn".into()),
        )
        // A pipe nobody writes to: it closes when this process dies, however it dies, and
        // the gateway stops with it.
        .stdin(Stdio::piped())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start a gateway")
}

/// Carries out what the fault suite asks of a gateway process.
fn apply_fault(
    op: faults::ProcessOp,
    exe: &Path,
    gateways: &mut Gateways,
    setups: &mut [HomeSetup],
    targets: &mut [faults::Target],
    down: &mut [bool],
) -> Result<()> {
    use rustix::process::{kill_process, Pid, Signal};
    let signal = |g: &std::process::Child, sig: Signal| {
        if let Some(pid) = i32::try_from(g.id()).ok().and_then(Pid::from_raw) {
            let _ = kill_process(pid, sig);
        }
    };
    match op {
        faults::ProcessOp::Stop(i) => signal(&gateways.0[i], Signal::STOP),
        faults::ProcessOp::Continue(i) => signal(&gateways.0[i], Signal::CONT),
        faults::ProcessOp::Kill(i) => {
            gateways.0[i].kill()?;
            gateways.0[i].wait()?;
            // Its API port is gone with it; the restarted gateway writes a new one.
            let _ = std::fs::remove_file(setups[i].dir.join("api.addr"));
            down[i] = true;
        }
        faults::ProcessOp::Restart(i) => {
            let _ = std::fs::remove_file(setups[i].dir.join("api.addr"));
            gateways.0[i] = spawn_gateway(exe, &setups[i])?;
            down[i] = true;
            targets[i].api_port = 0;
        }
    }
    Ok(())
}

/// The sim's progress bar over `minutes` of simulated time (indicatif: ETA from the rate so far).
fn progress_bar(minutes: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(minutes);
    let style = indicatif::ProgressStyle::with_template(
        "[{bar:30}] {percent:>3}% {msg} (elapsed {elapsed}, ETA {eta})",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("#>-");
    bar.set_style(style);
    bar
}

/// This run among others on the machine: the process id and the wall clock.
fn run_tag() -> String {
    format!("{:x}{:x}", std::process::id(), wall_ms())
}
