//! The command line: clap's types for every `gridlet` command (what each one does is in
//! `main.rs` and the command modules).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use gridlet_ledger::selection::SelectionRule;

use crate::device_cmd;

#[derive(Parser)]
#[command(
    name = "gridlet",
    version,
    about = "Home-energy gateway for a neighbourhood microgrid"
)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace) or a filter such as
    /// `info,gridlet_actors=debug`; overrides RUST_LOG.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Rule {
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

/// Who holds a home's attestor key.
#[derive(Clone, Copy, ValueEnum)]
pub enum Signer {
    /// The battery signs its own attestations and receipts.
    Device,
    /// The gateway holds the key (lower trust, flagged on chain).
    Gateway,
}

impl From<Signer> for gridlet_ledger::genesis::AttestorSigner {
    fn from(s: Signer) -> Self {
        match s {
            Signer::Device => gridlet_ledger::genesis::AttestorSigner::Device,
            Signer::Gateway => gridlet_ledger::genesis::AttestorSigner::Gateway,
        }
    }
}

/// How a simulated community trades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MarketMode {
    /// Sale contracts, bought live.
    Live,
    /// Sealed-bid auction rounds.
    Auctions,
    /// A day-ahead schedule, billed on meter readings.
    Schedule,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Check everything `run` needs: config fields, key files and modes, genesis and
    /// membership, and whether the broker and devices answer; one line each, exit 1 on a FAIL.
    Check {
        /// Config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Skip the network checks (broker, devices).
        #[arg(long)]
        offline: bool,
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
        /// `NAME,KEY_FILE,ATTESTOR_KEY_FILE[,BATTERY_WH,PV_W[,device|gateway]]` per home (key
        /// files or their `.pub`); repeat the flag or list several after one `--member`. What a
        /// home leaves out comes from --battery-wh, --pv-w and --signer.
        #[arg(long = "member", required = true, num_args = 1..)]
        members: Vec<String>,
        /// A member's usable battery capacity, Wh: with --pv-w it bounds what the home can
        /// have attested and not delivered on chain (battery + one hour of PV).
        #[arg(long, default_value_t = 10_000)]
        battery_wh: u64,
        /// A member's PV nameplate power, W.
        #[arg(long, default_value_t = 5_000)]
        pv_w: u64,
        /// Who holds a member's attestor key: `device` (its battery signs) or `gateway` (lower
        /// trust, flagged on chain).
        #[arg(long, value_enum, default_value = "gateway")]
        signer: Signer,
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
        #[arg(long, default_value_t = 1_000)]
        slot_ms: u64,
        /// Most blocks above the last quorum-final one a member builds on.
        #[arg(long, default_value_t = 120)]
        max_unfinal_blocks: u64,
        /// Flat transaction fee, micro-credits.
        #[arg(long, default_value_t = 100)]
        tx_fee: u64,
        /// Ranks allowed to produce (1 = only the elected producer).
        #[arg(long, default_value_t = 3)]
        fallback_ranks: u32,
        /// Blocks a released trade has to report its delivery, on top of the slots its energy
        /// takes at --delivery-power-w.
        #[arg(long, default_value_t = 60)]
        delivery_blocks: u64,
        /// The power deliveries are planned with, W (1 000 Wh at 2 000 W: 30 minutes added to
        /// the window).
        #[arg(long, default_value_t = 2_000)]
        delivery_power_w: u64,
        /// Length of an auction round, blocks (0: no auctions).
        #[arg(long, default_value_t = 20)]
        auction_round_blocks: u64,
        /// Blocks what is over (settled trades, expired contracts, billed days) stays in the
        /// consensus state before it is retired (0: keep everything; docs/protocol.md §12.9).
        #[arg(long, default_value_t = gridlet_ledger::genesis::DEFAULT_RETENTION_BLOCKS)]
        retention_blocks: u64,
        /// Main-grid tariff, micro-credits per kWh (the highest price an offer may ask).
        #[arg(long, default_value_t = 300_000)]
        grid_tariff: u64,
        /// Lowest bid price, micro-credits per kWh.
        #[arg(long, default_value_t = 50_000)]
        floor_price: u64,
        /// Where to write it (stdout if absent).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also install it as DIR/genesis.json of a data directory.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// The community's members: list them, propose adding or removing one, approve a
    /// proposal — signed by this home's running gateway (through its API). A change takes
    /// effect once a quorum of the members approved it on chain.
    Member {
        /// Config file of this home's gateway (for the API address and token).
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        command: MemberCommand,
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
        /// Simulate the day under every market (live, auctions, schedule) into REPORT/<market>
        /// and print them side by side with no trading and the perfect-foresight reference day
        /// (REPORT/compare.json); one whole day from midnight.
        #[arg(long, conflicts_with_all = ["auctions", "market"])]
        compare: bool,
    },
    /// The device and input rows of the fault matrix against the Modbus simulators, one JSON
    /// line each: D1 exceptions, D2 late replies, D3 corrupted frames, D4 device restarts,
    /// V1 implausible readings (what passed as valid from a broken or implausible answer).
    DeviceFaults {
        /// Scale of the counts: 1 runs D1 1 000 exceptions, D2 10 000 requests, D3 10 000
        /// corrupted frames, V1 1 000 implausible readings.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// D4: seconds the device is away, one run each.
        #[arg(long, value_delimiter = ',', default_value = "1,60,600")]
        outages_s: Vec<f64>,
        /// D4: how long a value stays usable without a fresh reading (the gateway's default
        /// is five polls).
        #[arg(long, default_value_t = 5_000)]
        stale_after_ms: u64,
    },
    /// The battery path alone, for crash tests (row D6): discover the Modbus battery, run the
    /// release orders through the journal in `--data`, print `reported TRADE WH` per delivery
    /// report, exit when all are reported.
    ReleaseOrders {
        /// Data directory (the release journal).
        #[arg(long)]
        data: PathBuf,
        /// Battery host.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Battery Modbus TCP port.
        #[arg(long)]
        port: u16,
        /// Scenario clock speed-up (the battery's energy counters run on it).
        #[arg(long, default_value_t = 1.0)]
        speedup: f64,
        /// Orders, `TRADE_HEX:WH`, comma-separated.
        #[arg(long, value_delimiter = ',')]
        orders: Vec<String>,
    },
    /// The consensus fault suite: a simulated community of real gateways, each behind its own
    /// TCP relay, with partitions (2 | 3, 1 | 4), disconnects, SIGSTOP and SIGKILL while trades
    /// flow; prints one JSON line (conflicting final blocks, splits after heals, releases of
    /// trades not final everywhere, rejoin times).
    Faults {
        /// Number of homes.
        #[arg(long, default_value_t = 5)]
        homes: usize,
        /// Cycles (each: two partitions and three process or link faults).
        #[arg(long, default_value_t = 1)]
        cycles: u32,
        /// Seconds a partition lasts.
        #[arg(long, default_value_t = 30)]
        partition_s: u64,
        /// Seconds a home stays disconnected.
        #[arg(long, default_value_t = 15)]
        disconnect_s: u64,
        /// Seconds a home stays stopped (SIGSTOP).
        #[arg(long, default_value_t = 10)]
        stop_s: u64,
        /// Seconds to watch the homes rejoin after each heal.
        #[arg(long, default_value_t = 15)]
        settle_s: u64,
        /// Seed for keys and homes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Report directory.
        #[arg(long, default_value = "faults-report")]
        report: PathBuf,
    },
    /// Day-ahead schedule of a generated community: ADMM (local QPs + aggregator) beside the
    /// centralized optimum; one JSON line.
    Schedule(crate::schedule_cmd::ScheduleArgs),
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
        /// Blocks what is over stays in the consensus state (genesis `market.retention_blocks`;
        /// 0 keeps everything).
        #[arg(long, default_value_t = gridlet_ledger::genesis::DEFAULT_RETENTION_BLOCKS)]
        retention_blocks: u64,
        /// Keep the homes' blocks in memory, not in redb: no disk and no fsync, for long
        /// measurement runs of the ledger alone (the data dirs then hold no chain).
        #[arg(long)]
        memory_store: bool,
        /// How the state hash commits to the state (genesis `state_commitment`;
        /// docs/protocol.md §7.2): `trie` (what `gridlet genesis` writes) or `flat` (a
        /// community made before it).
        #[arg(long, value_enum, default_value = "trie")]
        state_commitment: CommitmentArg,
        /// Blocks in a simulated day (86 400: one-second slots; 1 440: one-minute slots): the
        /// scenario's sun and hourly attestations repeat each day, and the report gives the
        /// median per-block commit time of each whole day. Without it the run is one day.
        #[arg(long)]
        day_blocks: Option<u64>,
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
pub enum CommitmentArg {
    Flat,
    Trie,
}

impl From<CommitmentArg> for gridlet_ledger::genesis::StateCommitment {
    fn from(c: CommitmentArg) -> Self {
        match c {
            CommitmentArg::Flat => gridlet_ledger::genesis::StateCommitment::Flat,
            CommitmentArg::Trie => gridlet_ledger::genesis::StateCommitment::Trie,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChainMarket {
    Live,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum BenchName {
    Ledger,
    Modbus,
    Market,
    Trades,
    Consensus,
}

#[derive(Subcommand)]
pub enum MarketCommand {
    /// Clear one sealed-bid auction round from a JSON file (the code the ledger executes).
    Clear {
        /// `{"grid_tariff", "floor_price", "pricing", "sellers": [{"id", "energy_wh"}], "bids": [{"id", "energy_wh", "price", "seq"}]}`
        #[arg(long)]
        input: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum DsmrCommand {
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
pub enum SunspecCommand {
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
pub enum MemberCommand {
    /// Print the members and the open proposals (with the approvals each still needs).
    List,
    /// Propose a change of the member set (exactly one of --add and --remove).
    Propose {
        /// `NAME,KEY,ATTESTOR[,BATTERY_WH,PV_W[,device|gateway]]`: the new home's name, member
        /// key and battery key (hex, or key files / their `.pub`), and its equipment (default
        /// 10 000 Wh, 5 000 W, gateway-signed).
        #[arg(long, conflicts_with = "remove", required_unless_present = "remove")]
        add: Option<String>,
        /// The member key (hex or key file) of a home that leaves.
        #[arg(long)]
        remove: Option<String>,
    },
    /// Approve an open proposal (its id, as `member list` prints it).
    Approve {
        /// The proposal id.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum ChainCommand {
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
    /// Sign checkpoint votes through the vote guard, each for a value drawn from `--salt`, and
    /// print `signed CHECKPOINT ROUND STEP SIGNATURE` once it is released (crash tests: a
    /// restarted run with another salt must re-issue the votes signed before).
    SignVotes {
        /// Data directory (with genesis.json).
        #[arg(long)]
        data: PathBuf,
        /// The member's key file.
        #[arg(long)]
        key: PathBuf,
        /// Checkpoints to vote in, from the guard's current one.
        #[arg(long, default_value_t = 10)]
        count: u64,
        /// Makes this run's values differ from another run's.
        #[arg(long)]
        salt: u64,
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
