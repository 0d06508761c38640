//! `gridlet`: the home-energy gateway binary.
//!
//! Today it carries the ledger's command-line tools (`keygen`, `genesis`, `chain`), the
//! community simulation (`sim`) and the benchmarks (`bench`). Errors are `anyhow` here and only
//! here; the libraries return typed errors.

mod api;
mod bench;
mod chain_cmd;
mod chart;
mod device_cmd;
mod keys;
mod notify;
mod run;
mod sim;
mod sim_chain;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use gridlet_ledger::selection::SelectionRule;

#[derive(Parser)]
#[command(
    name = "gridlet",
    version,
    about = "Home-energy gateway for a neighbourhood microgrid"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Rule {
    Paper,
    Proportional,
}

impl From<Rule> for SelectionRule {
    fn from(r: Rule) -> Self {
        match r {
            Rule::Paper => SelectionRule::Paper,
            Rule::Proportional => SelectionRule::Proportional,
        }
    }
}

/// How a simulated community trades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MarketMode {
    /// Sale contracts, bought live.
    Live,
    /// Sealed-bid auction rounds.
    Auctions,
    /// A day-ahead schedule, billed on meter readings.
    Schedule,
}

#[derive(Subcommand)]
enum Command {
    /// Run one home's gateway (today: the ledger on the community bus).
    Run {
        /// Config file (TOML), e.g. gateway/examples/home.toml.
        #[arg(long)]
        config: PathBuf,
        /// Stop when standard input closes (a supervising process, such as `gridlet sim`,
        /// died).
        #[arg(long, hide = true)]
        stop_on_stdin_eof: bool,
    },
    /// Write a new secp256k1 key file (mode 0600, never overwritten) and its `.pub`.
    Keygen {
        /// The key file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Build a community genesis file from member key files.
    Genesis {
        /// Chain name.
        #[arg(long, default_value = "gridlet-community")]
        chain_id: String,
        /// `NAME,KEY_FILE,ATTESTOR_KEY_FILE` per home (key files or their `.pub`).
        #[arg(long = "member", required = true)]
        members: Vec<String>,
        /// Initial balance of every member, micro-credits.
        #[arg(long, default_value_t = 100_000_000)]
        balance: u64,
        /// Producer selection rule.
        #[arg(long, value_enum, default_value = "paper")]
        rule: Rule,
        /// Unix time (ms) of slot 0; default now.
        #[arg(long)]
        genesis_time_ms: Option<u64>,
        /// Slot length, ms.
        #[arg(long)]
        slot_ms: Option<u64>,
        /// Finality depth F.
        #[arg(long)]
        finality_depth: Option<u64>,
        /// Flat transaction fee, micro-credits.
        #[arg(long)]
        tx_fee: Option<u64>,
        /// Ranks allowed to produce (1 = only the elected producer).
        #[arg(long)]
        fallback_ranks: Option<u32>,
        /// Where to write it (stdout if absent).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also install it as DIR/genesis.json of a data directory.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Inspect or drive a stored chain.
    Chain {
        #[command(subcommand)]
        command: ChainCommand,
    },
    /// Play a community through a day on this machine: per home, simulated devices over real
    /// Modbus TCP, DSMR on a pseudo-terminal (one home: an MQTT meter) and a real gateway
    /// process, all joined by an MQTT broker; then verify every home and write a report.
    Sim {
        /// Number of homes.
        #[arg(long, default_value_t = 5)]
        homes: usize,
        /// Simulated hours.
        #[arg(long, default_value_t = 24.0)]
        hours: f64,
        /// Scenario time per wall time (480: a day in three minutes).
        #[arg(long, default_value_t = 480.0)]
        speedup: f64,
        /// Seed for keys and homes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Report directory (homes/<n>/ data dirs, report.json, chart.png).
        #[arg(long, default_value = "sim-report")]
        report: PathBuf,
        /// External MQTT broker host:port (default: an embedded one).
        #[arg(long)]
        broker: Option<String>,
        /// Slot length in scenario ms.
        #[arg(long, default_value_t = 60_000)]
        slot_ms: u64,
        /// Hour of the day the scenario starts at.
        #[arg(long, default_value_t = 0.0)]
        start_hour: f64,
        /// Trade in sealed-bid auction rounds instead of sale contracts (= `--market auctions`).
        #[arg(long)]
        auctions: bool,
        /// How the homes trade: `live` (sale contracts), `auctions` (sealed-bid rounds) or
        /// `schedule` (a day-ahead schedule agreed by ADMM over the bus, billed on signed meter
        /// readings; runs half an hour into the next day to bill).
        #[arg(long, value_enum, default_value_t = MarketMode::Live)]
        market: MarketMode,
    },
    /// Day-ahead schedule of a generated community: ADMM (local QPs + aggregator) beside the
    /// centralized optimum; one JSON line.
    Schedule {
        /// Homes.
        #[arg(long, default_value_t = 10)]
        homes: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Intervals of the day.
        #[arg(long, default_value_t = 96)]
        intervals: usize,
        /// ADMM penalty ρ.
        #[arg(long, default_value_t = 0.05)]
        rho: f64,
        /// Stop when both residuals are below this, kW.
        #[arg(long, default_value_t = 0.01)]
        tolerance: f64,
        /// Iteration limit.
        #[arg(long, default_value_t = 2000)]
        max_iter: usize,
        /// Skip the centralized solve (for very large communities).
        #[arg(long)]
        no_central: bool,
    },
    /// The ledger and market of a community in lock-step in one process, without devices or
    /// bus (fast: for chain experiments and the scale figures).
    SimChain {
        /// Number of homes.
        #[arg(long, default_value_t = 5)]
        homes: usize,
        /// Slots to play.
        #[arg(long, default_value_t = 240)]
        slots: u64,
        /// Scenario seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Report directory.
        #[arg(long, default_value = "report")]
        report: PathBuf,
        /// Producer selection rule.
        #[arg(long, value_enum, default_value = "paper")]
        rule: Rule,
        /// Credit transfers submitted per slot (besides the market's transactions).
        #[arg(long, default_value_t = 2)]
        txs_per_slot: usize,
        /// Percent of slots whose elected producer stays silent (a fallback produces).
        #[arg(long, default_value_t = 10)]
        silent_percent: u64,
        /// Market mode: `live` (attest, sell, buy, release, deliver) or `none` (transfers only).
        #[arg(long, value_enum, default_value = "live")]
        market: ChainMarket,
    },
    /// SunSpec tools.
    Sunspec {
        #[command(subcommand)]
        command: SunspecCommand,
    },
    /// Start device simulators from a scenario file and run them until stopped.
    Hil {
        /// Scenario file (TOML), e.g. hil/scenarios/home.toml.
        #[arg(long)]
        scenario: PathBuf,
    },
    /// DSMR P1 tools.
    Dsmr {
        #[command(subcommand)]
        command: DsmrCommand,
    },
    /// Market tools.
    Market {
        #[command(subcommand)]
        command: MarketCommand,
    },
    /// Run a benchmark and print one JSON line.
    Bench {
        /// Which benchmark.
        #[arg(value_enum)]
        name: BenchName,
        /// Minimum seconds per measured figure.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ChainMarket {
    Live,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchName {
    Ledger,
    Modbus,
    Market,
    Trades,
}

#[derive(Subcommand)]
enum MarketCommand {
    /// Clear one sealed-bid auction round from a JSON file (the code the ledger executes).
    Clear {
        /// `{"grid_tariff", "floor_price", "pricing", "sellers": [{"id", "energy_wh"}], "bids": [{"id", "energy_wh", "price", "seq"}]}`
        #[arg(long)]
        input: PathBuf,
    },
}

#[derive(Subcommand)]
enum DsmrCommand {
    /// Parse one telegram file; print JSON (exit 1 if it is rejected, e.g. a wrong CRC).
    Parse {
        /// The telegram file.
        file: PathBuf,
        /// Use CRC-16/X25 (Holley DTSD545) instead of CRC-16/ARC.
        #[arg(long)]
        x25: bool,
    },
    /// Write a simulated telegram (for tests and experiments).
    Generate {
        /// Dialect: v2_2, v4, v5 or fluvius.
        #[arg(long, default_value = "v5")]
        dialect: String,
        /// Seed of the readings.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// CRC: padded, unpadded, wrong or none.
        #[arg(long, default_value = "padded")]
        crc: String,
        /// Output file (stdout if absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Read telegrams from a serial port (or a ser2net TCP port); print one JSON line each.
    Read {
        /// Serial device (e.g. /dev/ttyUSB0).
        #[arg(long, conflicts_with = "tcp")]
        serial: Option<String>,
        /// ser2net-style TCP endpoint HOST:PORT.
        #[arg(long)]
        tcp: Option<String>,
        /// DSMR version (serial settings): v2_2, v4 or v5.
        #[arg(long, default_value = "v5")]
        version: String,
        /// Stop after this many valid telegrams (0 = run forever).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// Report stale values after this many seconds without a valid telegram.
        #[arg(long, default_value_t = 20)]
        stale_s: u64,
    },
}

#[derive(Subcommand)]
enum SunspecCommand {
    /// Discover and decode every SunSpec model of a Modbus TCP device; print JSON.
    Scan {
        /// Device address.
        #[arg(long)]
        host: String,
        /// Modbus TCP port.
        #[arg(long, default_value_t = 502)]
        port: u16,
        /// Unit id.
        #[arg(long, default_value_t = 1)]
        unit: u8,
        /// Per-request timeout, ms.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// Word order of multi-register values.
        #[arg(long, value_enum, default_value = "big-endian")]
        word_order: device_cmd::WordOrderArg,
    },
}

#[derive(Subcommand)]
enum ChainCommand {
    /// Re-verify a stored chain from genesis; print height, tip hash and state hash.
    Verify {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
    },
    /// Print the market's trades after the stored chain (JSON lines), with provenance.
    Trades {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
    },
    /// Print the stored chain as JSON lines, one block a line.
    Export {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
    },
    /// Produce blocks as this member whenever it is ranked (development and crash tests).
    Produce {
        /// Data directory (with genesis.json).
        #[arg(long)]
        data: PathBuf,
        /// The member's key file.
        #[arg(long)]
        key: PathBuf,
        /// Blocks to produce.
        #[arg(long, default_value_t = 10)]
        blocks: u64,
        /// Transfers per block, from this member's account.
        #[arg(long, default_value_t = 5)]
        txs_per_block: u64,
    },
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            config,
            stop_on_stdin_eof,
        } => {
            let mut cfg = run::GatewayConfig::load(&config)?;
            cfg.stop_on_stdin_eof = stop_on_stdin_eof;
            run::run(cfg)?
        }
        Command::Keygen { out } => {
            let sk = secp256k1::SecretKey::new(&mut secp256k1::rand::rng());
            let key = keys::write_new(&out, &sk)?;
            println!(
                "{}",
                serde_json::json!({"public_key": key.to_hex(), "file": out, "public_file": keys::public_path(&out)})
            );
        }
        Command::Genesis {
            chain_id,
            members,
            balance,
            rule,
            genesis_time_ms,
            slot_ms,
            finality_depth,
            tx_fee,
            fallback_ranks,
            out,
            data,
        } => {
            let members = members
                .iter()
                .map(|m| chain_cmd::parse_member(m, balance))
                .collect::<Result<Vec<_>>>()?;
            let genesis = chain_cmd::build_genesis(chain_cmd::GenesisOptions {
                chain_id,
                members,
                rule: rule.into(),
                genesis_time_ms: genesis_time_ms.unwrap_or_else(now_ms),
                slot_ms,
                finality_depth,
                tx_fee,
                fallback_ranks,
            })?;
            match &out {
                Some(path) => std::fs::write(path, genesis.to_json() + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => println!("{}", genesis.to_json()),
            }
            if let Some(dir) = &data {
                chain_cmd::install_genesis(dir, &genesis)?;
            }
            eprintln!("genesis hash {}", genesis.hash());
        }
        Command::Chain { command } => match command {
            ChainCommand::Verify { data } => {
                println!("{}", chain_cmd::verify(&data)?);
            }
            ChainCommand::Trades { data } => {
                for t in chain_cmd::trades(&data)? {
                    println!("{t}");
                }
            }
            ChainCommand::Export { data } => {
                let stdout = std::io::stdout();
                let mut lock = stdout.lock();
                chain_cmd::export(&data, &mut lock)?;
            }
            ChainCommand::Produce {
                data,
                key,
                blocks,
                txs_per_block,
            } => chain_cmd::produce(&data, &key, blocks, txs_per_block)?,
        },
        Command::Sim {
            homes,
            hours,
            speedup,
            seed,
            report,
            broker,
            slot_ms,
            start_hour,
            auctions,
            market,
        } => {
            use std::io::IsTerminal;
            let auctions = auctions || market == MarketMode::Auctions;
            let schedule = market == MarketMode::Schedule;
            anyhow::ensure!(
                !(auctions && schedule),
                "--auctions and --market schedule exclude each other"
            );
            anyhow::ensure!(
                !schedule || start_hour == 0.0,
                "--market schedule plans whole days: start at hour 0"
            );
            let summary = sim::run(&sim::SimOptions {
                homes,
                hours,
                speedup,
                seed,
                report,
                broker,
                slot_ms,
                start_hour,
                auctions,
                schedule,
                progress: std::io::stderr().is_terminal(),
            })?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Command::Schedule {
            homes,
            seed,
            intervals,
            rho,
            tolerance,
            max_iter,
            no_central,
        } => {
            use gridlet_core::schedule as sch;
            anyhow::ensure!(
                homes >= 1 && intervals >= 1,
                "--homes and --intervals must be positive"
            );
            let (data, community) = sch::generate(homes, intervals, seed);
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let started = std::time::Instant::now();
            let r = sch::admm(&data, &community, rho, tolerance, max_iter, threads, true)?;
            let wall_s = started.elapsed().as_secs_f64();
            // What every node does with the proposals it saw: replay the contract and compare.
            let keys: Vec<gridlet_ledger::MemberKey> = (0..homes as u64)
                .map(|i| {
                    gridlet_ledger::MemberKey::from_secret(
                        &gridlet_ledger::crypto::deterministic_key(seed, i),
                    )
                })
                .collect();
            let rounds: Vec<Vec<(gridlet_ledger::MemberKey, Vec<i32>)>> = r
                .rounds
                .iter()
                .map(|round| keys.iter().copied().zip(round.iter().cloned()).collect())
                .collect();
            let committed =
                gridlet_ledger::market::dispatch::replay(&community.dispatch_params(rho), &rounds);
            let wh_per_kw = community.dt_h * 1000.0;
            let replay_matches = committed.iterations as usize == r.iterations
                && committed
                    .schedule_wh
                    .iter()
                    .zip(r.rounds.last().into_iter().flatten())
                    .all(|((_, wh), proposal)| {
                        wh.iter().zip(proposal).all(|(w, p)| {
                            *w == (gridlet_ledger::market::dispatch::kw(*p) * wh_per_kw).round()
                                as i64
                        })
                    })
                && committed
                    .prices
                    .iter()
                    .zip(&r.prices)
                    .all(|(p, c)| *p == (c * 1_000_000.0).round() as i64);
            let admm_cost = sch::community_cost(&community, &r.plans);
            let (central_cost, central_wall_s) = if no_central {
                (None, None)
            } else {
                let started = std::time::Instant::now();
                let plans = sch::central(&data, &community)?;
                (
                    Some(sch::community_cost(&community, &plans)),
                    Some(started.elapsed().as_secs_f64()),
                )
            };
            let gap = central_cost.map(|c| (admm_cost - c) / c.abs());
            println!(
                "{}",
                serde_json::json!({
                    "homes": homes,
                    "intervals": intervals,
                    "iterations": r.iterations,
                    "primal_residual": r.report.primal,
                    "dual_residual": r.report.dual,
                    "admm_cost": admm_cost,
                    "central_cost": central_cost,
                    "gap": gap,
                    "feeder_violation": sch::feeder_violation(&community, &r.plans),
                    "feeder_kw": community.feeder_kw,
                    "wall_s": wall_s,
                    "central_wall_s": central_wall_s,
                    "threads": threads,
                    "inputs_hash": committed.inputs_hash.to_hex(),
                    "replay_matches": replay_matches,
                    "prices_microcredits_per_kwh": committed.prices,
                })
            );
        }
        Command::SimChain {
            homes,
            slots,
            seed,
            report,
            rule,
            txs_per_slot,
            silent_percent,
            market,
        } => {
            let summary = sim_chain::run(&sim_chain::SimOptions {
                homes,
                slots,
                seed,
                report,
                rule: rule.into(),
                txs_per_slot,
                silent_percent,
                market: market == ChainMarket::Live,
            })?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Command::Sunspec { command } => match command {
            SunspecCommand::Scan {
                host,
                port,
                unit,
                timeout_ms,
                word_order,
            } => {
                let out = device_cmd::runtime()?.block_on(device_cmd::sunspec_scan(
                    &host,
                    port,
                    unit,
                    timeout_ms,
                    word_order.into(),
                ))?;
                println!("{out}");
            }
        },
        Command::Dsmr { command } => match command {
            DsmrCommand::Parse { file, x25 } => device_cmd::dsmr_parse(&file, x25)?,
            DsmrCommand::Generate {
                dialect,
                seed,
                crc,
                out,
            } => device_cmd::dsmr_generate(&dialect, seed, &crc, out.as_deref())?,
            DsmrCommand::Read {
                serial,
                tcp,
                version,
                count,
                stale_s,
            } => device_cmd::runtime()?
                .block_on(device_cmd::dsmr_read(serial, tcp, &version, count, stale_s))?,
        },
        Command::Market { command } => match command {
            MarketCommand::Clear { input } => {
                let text = std::fs::read_to_string(&input)
                    .with_context(|| format!("cannot read {}", input.display()))?;
                let parsed: gridlet_ledger::market::ClearingInput = serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a clearing input", input.display()))?;
                let out = gridlet_ledger::market::clear(&parsed)
                    .with_context(|| format!("{}: cannot clear", input.display()))?;
                println!("{}", serde_json::to_string(&out)?);
            }
        },
        Command::Hil { scenario } => device_cmd::runtime()?.block_on(device_cmd::hil(&scenario))?,
        Command::Bench { name, seconds } => match name {
            BenchName::Ledger => println!("{}", bench::ledger(seconds)?),
            BenchName::Market => println!("{}", bench::market(seconds)?),
            BenchName::Trades => println!("{}", bench::trades(1_000)?),
            BenchName::Modbus => println!(
                "{}",
                device_cmd::runtime()?.block_on(bench::modbus(seconds))?
            ),
        },
    }
    Ok(())
}

fn main() -> ExitCode {
    // rumqttd logs ordinary client disconnects at ERROR: its router and server stay quiet
    // whatever RUST_LOG says.
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
    for quiet in ["rumqttd::router=off", "rumqttd::server=off"] {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
