//! The API's answers as types: what the handlers serialize is what `/api/openapi.json`
//! describes (utoipa derives both from these), so the document cannot drift from the answers.

use serde::Serialize;
use utoipa::ToSchema;

/// A refusal or an outage: what went wrong, in words.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// What was wrong (the rule a transaction broke, the field a body got wrong, …).
    pub error: String,
}

/// The answer to a transaction this gateway signed (201 once it is in the node's mempool and
/// on the bus; 400 with the rule it breaks; 503 when the node is away).
#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    /// Whether the node took the transaction.
    pub submitted: bool,
    /// Its id, for `GET /api/tx/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub tx: Option<String>,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every answer a signed-transaction POST gives (offers, purchases, member proposals and
/// approvals): the handlers build it and the OpenAPI document lists it, from this one type.
#[derive(Debug, utoipa::IntoResponses)]
pub enum TxAnswer {
    /// In the node's mempool and on the bus; `Location` is its `/api/tx/{id}`.
    #[response(status = 201)]
    Created(Submitted),
    /// Refused: the rule it breaks, or what is wrong in the body.
    #[response(status = 400)]
    Refused(Submitted),
    /// The node or the market actor is away.
    #[response(status = 503)]
    Unavailable(Submitted),
}

/// What a trading request without the right token gets.
#[derive(Debug, utoipa::IntoResponses)]
pub enum TokenRefusal {
    /// Missing or wrong bearer token.
    #[response(status = 401)]
    Unauthorized(ApiError),
    /// No token configured: trading through the API is off.
    #[response(status = 403)]
    Forbidden(ApiError),
}

/// `GET /api/status`: this home's node.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// This home's member key (hex).
    pub member: String,
    /// Height of the head block.
    pub height: u64,
    /// Height of the last quorum-final block.
    pub final_height: u64,
    /// Hash of the head block (hex).
    pub head: Option<String>,
    /// Blocks this home produced.
    pub blocks_produced: u64,
    /// Blocks this home added to its chain.
    pub blocks_committed: u64,
    /// Blocks and transactions refused.
    pub rejected: u64,
    /// Bus messages seen twice.
    pub duplicates: u64,
    /// Bus messages that did not decode.
    pub malformed_bus_messages: u64,
}

/// How far a reading can be trusted.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Read within the last 30 s.
    Good,
    /// Older than 30 s: the device stopped answering.
    Stale,
}

/// A device value with its age and quality; `null` when no valid value is known.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reading {
    /// The value, in the unit its field names.
    pub value: f64,
    /// Milliseconds since it was read.
    pub age_ms: u64,
    /// `good`, or `stale` after 30 s.
    pub quality: Quality,
}

/// The battery as the gateway reads it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatteryView {
    /// Energy stored, Wh.
    pub available_wh: Option<Reading>,
    /// State of charge, %.
    pub soc_pct: Option<Reading>,
    /// Power, W (positive = discharge).
    pub power_w: Option<Reading>,
    /// Usable capacity, Wh (from stored energy and state of charge).
    pub capacity_wh: Option<f64>,
    /// Energy into the battery since the gateway started, Wh (from its power).
    pub charged_wh: f64,
    /// Energy out of the battery since the gateway started, Wh (from its power).
    pub discharged_wh: f64,
    /// Polls that failed.
    pub failed_polls: u64,
    /// Releases finished.
    pub releases: u64,
    /// Whether the battery is held in its safe state (meter data too old).
    pub safe_state: bool,
}

/// The PV inverter.
#[derive(Debug, Serialize, ToSchema)]
pub struct PvView {
    /// AC power, W.
    pub power_w: Option<Reading>,
    /// Lifetime energy, Wh.
    pub energy_wh: Option<Reading>,
    /// Polls made.
    pub polls: u64,
    /// Polls that failed.
    pub failed_polls: u64,
    /// The last failure, naming the device and its address.
    pub last_error: Option<String>,
}

/// The grid meter.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeterView {
    /// Net power, W (positive = import).
    pub power_w: Option<Reading>,
    /// Import counter, Wh.
    pub import_wh: Option<Reading>,
    /// Export counter, Wh.
    pub export_wh: Option<Reading>,
    /// Telegrams or messages accepted.
    pub accepted: u64,
    /// Telegrams or messages refused (bad CRC, malformed, …).
    pub rejected: u64,
    /// Connections made.
    pub connects: u64,
    /// Whether the meter's line is up now.
    pub connected: bool,
    /// The last failure.
    pub last_error: Option<String>,
}

/// `GET /api/devices`: each configured device, `null` if not configured.
#[derive(Debug, Serialize, ToSchema)]
pub struct Devices {
    /// The battery.
    pub battery: Option<BatteryView>,
    /// The PV inverter.
    pub pv: Option<PvView>,
    /// The grid meter.
    pub meter: Option<MeterView>,
}

/// Where a trade is.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TradeStage {
    /// Not final yet, or final and waiting for its release height.
    Pending,
    /// The seller's battery is delivering.
    Delivering,
    /// Some but not all of the energy was delivered (the rest is refunded at settlement).
    PartlyDelivered,
    /// All of it was delivered and paid out.
    Delivered,
    /// Nothing was delivered by the deadline: the buyers got their payment back.
    Refunded,
}

/// One buyer's share of a trade.
#[derive(Debug, Serialize, ToSchema)]
pub struct TradeBuyer {
    /// The buyer's member key (hex).
    pub buyer: String,
    /// What it paid, micro-credits.
    pub paid: u64,
}

/// `GET /api/trades`: a trade on this home's chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct TradeView {
    /// The trade's id (hex).
    pub trade: String,
    /// The seller's member key (hex).
    pub seller: String,
    /// Who bought and what each paid.
    pub buyers: Vec<TradeBuyer>,
    /// Energy sold, Wh.
    pub energy_wh: u64,
    /// Total payment, micro-credits.
    pub payment: u64,
    /// Height of the block that made the trade.
    pub traded_height: u64,
    /// Height by which the delivery must be reported.
    pub deadline_height: u64,
    /// One word for where the trade is.
    pub stage: TradeStage,
    /// Whether the release has begun.
    pub released: bool,
    /// Energy the seller's receipt reported delivered, Wh.
    pub delivered_wh: Option<u64>,
    /// Whether it is paid out or refunded.
    pub settled: bool,
    /// The attested generation the energy came from.
    pub provenance: Vec<Provenance>,
}

/// Energy a trade takes from one attested interval of the seller's.
#[derive(Debug, Serialize, ToSchema)]
pub struct Provenance {
    /// The attested interval.
    pub interval: u64,
    /// Energy taken from it, Wh.
    pub wh: u64,
}

/// `GET /api/offers`: an open offer.
#[derive(Debug, Serialize, ToSchema)]
pub struct OfferView {
    /// The sale contract's id (hex), to buy it with `POST /api/purchases`.
    pub contract: String,
    /// The seller's member key (hex).
    pub seller: String,
    /// Energy offered, Wh.
    pub energy_wh: u64,
    /// Price, micro-credits per kWh.
    pub price: u64,
    /// Last height at which it can be bought.
    pub expiry_height: u64,
    /// The exact payment a purchase must carry, micro-credits.
    pub payment: Option<u64>,
}

/// `GET /api/home`: this home at a glance, for its page.
#[derive(Debug, Serialize, ToSchema)]
pub struct HomeView {
    /// The node's name.
    pub name: String,
    /// This home's member key (hex).
    pub member: String,
    /// Credit balance, micro-credits (once the chain was read).
    pub balance: Option<u64>,
    /// Energy this home sold or bought on the chain since the gateway started, Wh.
    pub traded_wh: u64,
    /// The battery's reserve the strategy and the API never sell, % of capacity.
    pub reserve_soc_pct: u8,
    /// Head height.
    pub height: u64,
    /// Height of the last quorum-final block.
    pub final_height: u64,
    /// Slot of the head block.
    pub head_slot: u64,
    /// Members of the community.
    pub members: usize,
    /// Other members that produced one of the recent blocks (the peers this home hears).
    pub peers_seen: usize,
    /// Whether trading through the API (and the page) is on: a token is configured.
    pub trading_enabled: bool,
    /// The market interval now (the one an offer made now attests), on the community clock.
    pub interval: u64,
    /// How many blocks an offer made now stays open by default.
    pub offer_blocks: u64,
}
