//! One simulated home's setup and the `gateway.toml` written for it.

use std::path::PathBuf;

use gridlet_hil::home::HomeProfile;
use gridlet_ledger::MemberKey;

pub(super) struct HomeSetup {
    pub(super) dir: PathBuf,
    pub(super) api_port: u16,
    pub(super) member: MemberKey,
    pub(super) name: String,
}

/// The community-wide settings of every gateway's config.
#[derive(Debug, Clone, Copy)]
pub(super) struct Knobs {
    /// Wall anchor, scenario origin, speedup, end.
    pub(super) clock: (u64, u64, f64, u64),
    /// Node tick.
    pub(super) tick_ms: u64,
    /// Trade in auctions.
    pub(super) auctions: bool,
    /// Day-ahead schedule mode.
    pub(super) schedule: bool,
}

pub(super) fn gateway_config(
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
    // The battery signs, except in schedule mode (see `equipment_of`).
    let attestor = if schedule {
        "attestor_key_file = \"battery.key\""
    } else {
        "# The battery holds the attestor key and signs (signer = device in genesis)."
    };
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
# Offers keep back what the home will need itself by its forecast; the reserve below it is
# the household's backup.
forecast = "forecast.json"
{attestor}

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
reserve_soc_pct = 0
min_offer_wh = 300
max_offer_wh = 2000
offer_price = 180000
offer_blocks = 30
max_buy_price = 250000
buy_below_soc_pct = 50
buy_above_import_w = 150
max_buy_wh = 2000
auctions = {auctions}
enabled = {trading}
{schedule_section}
[api]
listen = "127.0.0.1:0"
token = "{token}"

[clock]
anchor_unix_ms = {anchor}
origin_ms = {origin}
speedup = {speedup}
end_ms = {end}
"#,
        name = h.name,
        token = super::procs::SIM_API_TOKEN,
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
