//! `gridlet`: the home-energy gateway binary.
//!
//! Today it carries the ledger's command-line tools (`keygen`, `genesis`, `chain`), the
//! community simulation (`sim`) and the benchmarks (`bench`). Errors are `anyhow` here and only
//! here; the libraries return typed errors.

mod api;
mod api_doc;
mod api_members;
mod api_types;
mod bench;
mod bench_consensus;
mod chain_cmd;
mod chart;
mod check_cmd;
mod cli;
mod config;
mod device_cmd;
mod discovery;
mod http_client;
mod keys;
mod member_cmd;
mod notify;
mod page;
mod release_cmd;
mod run;
mod schedule_cmd;
mod sim;
mod sim_chain;
mod status;

use std::io::Write;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;

use crate::cli::*;

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
            let mut cfg = config::GatewayConfig::load(&config)?;
            cfg.stop_on_stdin_eof = stop_on_stdin_eof;
            run::run(cfg)?
        }
        Command::Check { config, offline } => {
            anyhow::ensure!(check_cmd::run(&config, offline), "a check failed");
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
            battery_wh,
            pv_w,
            signer,
            balance,
            rule,
            genesis_time_ms,
            slot_ms,
            max_unfinal_blocks,
            tx_fee,
            fallback_ranks,
            delivery_blocks,
            delivery_power_w,
            auction_round_blocks,
            retention_blocks,
            grid_tariff,
            floor_price,
            out,
            data,
        } => {
            let defaults = gridlet_ledger::genesis::Equipment {
                signer: signer.into(),
                battery_wh,
                pv_w,
            };
            let members = members
                .iter()
                .map(|m| {
                    chain_cmd::parse_member(m, gridlet_ledger::MicroCredits::new(balance), defaults)
                })
                .collect::<Result<Vec<_>>>()?;
            let genesis = chain_cmd::build_genesis(chain_cmd::GenesisOptions {
                chain_id,
                members,
                rule: rule.into(),
                genesis_time_ms: genesis_time_ms.unwrap_or_else(now_ms),
                slot_ms,
                max_unfinal_blocks,
                tx_fee,
                fallback_ranks,
                delivery_blocks,
                delivery_power_w,
                auction_round_blocks,
                retention_blocks,
                grid_tariff,
                floor_price,
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
        Command::Member { config, command } => {
            use member_cmd::MemberAction;
            let action = match command {
                MemberCommand::List => MemberAction::List,
                MemberCommand::Propose { add: Some(a), .. } => MemberAction::Add(a),
                MemberCommand::Propose {
                    remove: Some(r), ..
                } => MemberAction::Remove(r),
                MemberCommand::Propose { .. } => anyhow::bail!("give --add or --remove"),
                MemberCommand::Approve { id } => MemberAction::Approve(id),
            };
            member_cmd::run(&config, action)?;
        }
        Command::Chain { command } => match command {
            ChainCommand::Verify { data } => {
                println!("{}", chain_cmd::verify(&data)?);
            }
            ChainCommand::Trades { data } => {
                let mut out = std::io::stdout().lock();
                for t in chain_cmd::trades(&data)? {
                    if let Err(e) = writeln!(out, "{t}") {
                        return stop_quietly_on_closed_pipe(e.into());
                    }
                }
            }
            ChainCommand::Export { data } => {
                let mut out = std::io::stdout().lock();
                if let Err(e) = chain_cmd::export(&data, &mut out) {
                    return stop_quietly_on_closed_pipe(e);
                }
            }
            ChainCommand::Produce {
                data,
                key,
                blocks,
                txs_per_block,
            } => chain_cmd::produce(&data, &key, blocks, txs_per_block)?,
            ChainCommand::SignVotes {
                data,
                key,
                count,
                salt,
            } => chain_cmd::sign_votes(&data, &key, count, salt)?,
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
            compare,
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
            let options = sim::SimOptions {
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
                faults: None,
            };
            if compare {
                let (value, table) = sim::compare::run(&options)?;
                println!("{table}");
                println!("{}", serde_json::to_string(&value["goals"])?);
            } else {
                let summary = sim::run(&options)?;
                println!("{}", serde_json::to_string_pretty(&summary)?);
            }
        }
        Command::DeviceFaults {
            scale,
            outages_s,
            stale_after_ms,
        } => device_cmd::runtime()?.block_on(device_faults(scale, &outages_s, stale_after_ms))?,
        Command::Faults {
            homes,
            cycles,
            partition_s,
            disconnect_s,
            stop_s,
            settle_s,
            seed,
            report,
        } => {
            let plan = sim::faults::FaultOptions {
                cycles,
                partition_s,
                disconnect_s,
                stop_s,
                settle_s,
            };
            // Slots of 1 s of wall time, around noon (PV surplus), with the devices' day at 30×
            // so that market intervals close and trades flow while the faults play out; the day
            // lasts as long as the plan, plus the gateways' start.
            const SPEEDUP: f64 = 30.0;
            let hours = (plan.duration_ms() + 10_000) as f64 * SPEEDUP / 3_600_000.0;
            let summary = sim::run(&sim::SimOptions {
                homes,
                hours,
                speedup: SPEEDUP,
                seed,
                report,
                broker: None,
                slot_ms: 30_000,
                start_hour: 11.0,
                auctions: false,
                schedule: false,
                progress: false,
                faults: Some(plan),
            })?;
            anyhow::ensure!(
                summary["faults"]["conflicting_final_blocks"] == 0
                    && summary["faults"]["releases_not_final_on_every_home"] == 0,
                "the fault suite found a safety violation: {}",
                summary["faults"]
            );
        }
        Command::Schedule(args) => schedule_cmd::run(args)?,
        Command::ReleaseOrders {
            data,
            host,
            port,
            speedup,
            orders,
        } => {
            let orders = orders
                .iter()
                .map(|o| release_cmd::parse_order(o))
                .collect::<Result<Vec<_>>>()?;
            release_cmd::run(&data, &host, port, speedup, &orders)?
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
            retention_blocks,
            memory_store,
            day_blocks,
            state_commitment,
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
                retention_blocks,
                memory_store,
                day_blocks,
                state_commitment: state_commitment.into(),
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
            BenchName::Consensus => println!("{}", bench_consensus::consensus(seconds)?),
            BenchName::Modbus => println!(
                "{}",
                device_cmd::runtime()?.block_on(bench::modbus(seconds))?
            ),
        },
    }
    Ok(())
}

/// `gridlet chain export | head -1`: a reader that stops early is not an error of ours.
fn stop_quietly_on_closed_pipe(e: anyhow::Error) -> Result<()> {
    let closed = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if closed {
        Ok(())
    } else {
        Err(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logs(cli.log_level.as_deref()) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr: `--log-level`, else RUST_LOG, else INFO with the chatty libraries quieter.
fn init_logs(level: Option<&str>) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let mut filter = match level {
        Some(l) => {
            // A bare word is a level (as a filter, "loud" would silently name a target).
            let levels = ["off", "error", "warn", "info", "debug", "trace"];
            if !l.contains(['=', ',']) && !levels.contains(&l.to_ascii_lowercase().as_str()) {
                anyhow::bail!("--log-level {l:?}: use one of {levels:?} or a filter like info,gridlet_actors=debug");
            }
            EnvFilter::try_new(l).with_context(|| format!("--log-level {l:?}"))?
        }
        // Malachite logs every checkpoint ("Starting new height") at INFO: one line per slot.
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            EnvFilter::new("info,rumqttd=warn,arc_malachitebft_core_consensus=warn")
        }),
    };
    // rumqttd logs ordinary client disconnects at ERROR: its router and server stay quiet
    // whatever the level says.
    for quiet in ["rumqttd::router=off", "rumqttd::server=off"] {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    // Colours only on a terminal: not into pipes, files or the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    Ok(())
}

/// `gridlet device-faults`: the rows of `gridlet_hil::device_rows`, one JSON line each.
async fn device_faults(scale: f64, outages_s: &[f64], stale_after_ms: u64) -> Result<()> {
    use gridlet_hil::device_rows as rows;
    anyhow::ensure!(
        scale.is_finite() && scale > 0.0,
        "--scale must be a positive number, not {scale}"
    );
    let n = |full: f64| (full * scale).ceil().max(1.0) as u64;
    let print = |v: serde_json::Value| println!("{v}");
    print(rows::d1_exceptions(n(1_000.0)).await?);
    print(rows::d2_late_replies(n(10_000.0)).await?);
    print(rows::d3_corrupted_frames(n(10_000.0)).await?);
    for s in outages_s {
        anyhow::ensure!(
            s.is_finite() && *s >= 0.0,
            "--outages-s takes seconds, not {s}"
        );
        print(
            rows::d4_device_restart(
                std::time::Duration::from_secs_f64(*s),
                std::time::Duration::from_millis(stale_after_ms),
            )
            .await?,
        );
    }
    print(rows::v1_implausible(n(1_000.0)).await?);
    Ok(())
}
