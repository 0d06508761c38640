//! The HTTP API (actix-web), bound to loopback by default. Reads are open; trading (POST) needs
//! the configured bearer token, and without a token trading through the API is off.

use std::sync::{Arc, Mutex};

use actix::Addr;
use actix_web::{get, post, web, HttpRequest, HttpResponse, Responder};
use gridlet_actors::ledger_actor::{GetState, GetTx, LedgerActor, LedgerStatus, SubmitError};
use gridlet_actors::market_actor::{Buy, GetBids, MarketActor, Offer, PlaceBid};
use gridlet_ledger::market::book::ContractStatus;
use gridlet_ledger::market::clearing::payment;
use gridlet_ledger::{Hash32, MemberKey};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::api_types::{
    ApiError, BatteryView, Devices, MeterView, OfferView, Provenance, PvView, Quality, Reading,
    Status, Submitted, TokenRefusal, TradeBuyer, TradeStage, TradeView, TxAnswer,
};

/// Shared with every handler.
pub struct ApiState {
    /// The ledger actor.
    pub ledger: Addr<LedgerActor>,
    /// The market actor.
    pub market: Addr<MarketActor>,
    /// Ledger counters.
    pub status: Arc<Mutex<LedgerStatus>>,
    /// Device and market status.
    pub devices: crate::status::Statuses,
    /// The Prometheus exporter, if installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The bearer token for trading, if any.
    pub token: Option<String>,
    /// This home.
    pub member: MemberKey,
    /// The community's quorum rule (for the approvals a member proposal needs).
    pub quorum: gridlet_ledger::genesis::FinalityParams,
    /// The day-ahead actor's status, if scheduling is on.
    pub day_ahead: Option<Arc<Mutex<gridlet_actors::day_ahead::DayAheadStatus>>>,
}

pub(crate) fn authorized(req: &HttpRequest, state: &ApiState) -> Result<(), Box<HttpResponse>> {
    let error = |e: &str| ApiError { error: e.into() };
    let refusal = match &state.token {
        None => {
            TokenRefusal::Forbidden(error("trading through the API is off: no token configured"))
        }
        Some(token) => {
            let given = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given == Some(token.as_str()) {
                return Ok(());
            }
            TokenRefusal::Unauthorized(error("missing or wrong bearer token"))
        }
    };
    Err(Box::new(match refusal {
        TokenRefusal::Unauthorized(e) => HttpResponse::Unauthorized().json(e),
        TokenRefusal::Forbidden(e) => HttpResponse::Forbidden().json(e),
    }))
}

/// An outage of the node or market actor: 503 with its name.
pub(crate) fn unavailable(what: &str) -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(ApiError {
        error: format!("{what} unavailable"),
    })
}

/// This home's node: height, final height, head, counters.
#[utoipa::path(tag = "chain", responses((status = 200, body = Status)))]
#[get("/api/status")]
pub(crate) async fn status(state: web::Data<ApiState>) -> impl Responder {
    let s = state.status.lock().map(|s| s.clone()).unwrap_or_default();
    HttpResponse::Ok().json(Status {
        member: state.member.to_hex(),
        height: s.height,
        final_height: s.finalized,
        head: s.head.map(|h| h.to_hex()),
        blocks_produced: s.produced,
        blocks_committed: s.committed,
        rejected: s.rejected,
        duplicates: s.duplicates,
        malformed_bus_messages: s.malformed,
    })
}

/// A reading older than this is `stale`.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// A stamped value: the value, its age in ms and its quality (`good`, or `stale` after 30 s);
/// `None` (null) if no valid value is known (never read, or the device answered garbage).
fn stamped(v: gridlet_actors::devices::Stamped) -> Option<Reading> {
    v.map(|(value, at)| Reading {
        value,
        age_ms: at.elapsed().as_millis() as u64,
        quality: if at.elapsed() > STALE_AFTER {
            Quality::Stale
        } else {
            Quality::Good
        },
    })
}

/// A copy of a device's status, if the device is configured.
fn snapshot<T: Clone>(shared: &Option<std::sync::Arc<std::sync::Mutex<T>>>) -> Option<T> {
    shared
        .as_ref()
        .and_then(|s| s.lock().ok().map(|s| s.clone()))
}

/// Each configured device's readings (value, age, quality) and counters.
#[utoipa::path(tag = "devices", responses((status = 200, body = Devices)))]
#[get("/api/devices")]
pub(crate) async fn devices(state: web::Data<ApiState>) -> impl Responder {
    let d = &state.devices;
    let battery = snapshot(&d.battery).map(|b| {
        let at = |v: Option<f64>| stamped(v.zip(b.read_at));
        BatteryView {
            available_wh: at(b.available_wh),
            soc_pct: at(b.soc_pct),
            power_w: at(b.power_w),
            capacity_wh: b.capacity_wh,
            charged_wh: (b.energy.charged_wh() * 10.0).round() / 10.0,
            discharged_wh: (b.energy.discharged_wh() * 10.0).round() / 10.0,
            failed_polls: b.failed_polls,
            releases: b.releases,
            safe_state: b.safe_state,
        }
    });
    let pv = snapshot(&d.pv).map(|p| PvView {
        power_w: stamped(p.power_w),
        energy_wh: stamped(p.energy_wh),
        polls: p.polls,
        failed_polls: p.failed_polls,
        last_error: p.last_error,
    });
    let meter = snapshot(&d.meter).map(|m| MeterView {
        power_w: stamped(m.power_w),
        import_wh: stamped(m.import_wh),
        export_wh: stamped(m.export_wh),
        accepted: m.accepted,
        rejected: m.rejected,
        connects: m.connects,
        connected: m.connected,
        last_error: m.last_error,
    });
    HttpResponse::Ok().json(Devices { battery, pv, meter })
}

/// `GET /api/health`: whether the gateway runs and which of its devices answer. Always 200
/// while the process serves (a device down is "degraded", not an outage of the gateway).
#[utoipa::path(tag = "devices", responses((status = 200, description = "`status` (`ok` or `degraded`), `height`, and per device `up` with its last error", body = Object)))]
#[get("/api/health")]
pub(crate) async fn health(state: web::Data<ApiState>) -> impl Responder {
    let d = &state.devices;
    let fresh = |v: gridlet_actors::devices::Stamped| {
        v.is_some_and(|(_, at)| at.elapsed() < std::time::Duration::from_secs(30))
    };
    let mut parts = serde_json::Map::new();
    if let Some(p) = snapshot(&d.pv) {
        parts.insert(
            "pv".into(),
            json!({"up": fresh(p.power_w), "last_error": p.last_error}),
        );
    }
    if let Some(m) = snapshot(&d.meter) {
        parts.insert(
            "meter".into(),
            json!({"up": fresh(m.power_w), "last_error": m.last_error}),
        );
    }
    if let Some(b) = snapshot(&d.battery) {
        parts.insert(
            "battery".into(),
            json!({"up": b.available_wh.is_some(), "safe_state": b.safe_state}),
        );
    }
    let all_up = parts.values().all(|v| v["up"] == true);
    let height = state.status.lock().map(|s| s.height).unwrap_or_default();
    HttpResponse::Ok().json(json!({
        "status": if all_up { "ok" } else { "degraded" },
        "height": height,
        "devices": parts,
    }))
}

/// The head block: height, slot, state hash.
#[utoipa::path(tag = "chain", responses((status = 200, description = "`height`, `slot`, `state_hash`, `head`", body = Object), (status = 503, body = ApiError)))]
#[get("/api/chain/head")]
pub(crate) async fn head(state: web::Data<ApiState>) -> impl Responder {
    match state.ledger.send(GetState).await {
        Ok(Some(s)) => HttpResponse::Ok().json(json!({
            "height": s.height,
            "slot": s.slot,
            "state_hash": s.hash().to_hex(),
            "head": state.status.lock().ok().and_then(|st| st.head).map(|h| h.to_hex()),
        })),
        _ => unavailable("ledger"),
    }
}

/// What became of a transaction: `pending`, `included` (height), `final` (height), `refused`
/// (reason) or `unknown` — for the id a `POST` answered with.
#[utoipa::path(
    tag = "trading",
    params(("id" = String, Path, description = "the transaction id a POST answered with (64 hex digits)")),
    responses(
        (status = 200, description = "`id` and `status` (`pending`, `included`, `final`, `refused`, `unknown`), with `height` or `reason`", body = Object),
        (status = 400, description = "not a transaction id", body = ApiError),
        (status = 503, body = ApiError),
    )
)]
#[get("/api/tx/{id}")]
pub(crate) async fn tx_status(
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> impl Responder {
    let Some(id) = Hash32::from_hex(&path) else {
        return HttpResponse::BadRequest()
            .json(json!({"error": format!("{:?} is not a transaction id (64 hex digits)", path.as_str())}));
    };
    match state.ledger.send(GetTx(id)).await {
        Ok(Some(found)) => {
            let mut v = serde_json::to_value(found).unwrap_or_default();
            v["id"] = json!(id.to_hex());
            HttpResponse::Ok().json(v)
        }
        _ => unavailable("ledger"),
    }
}

/// The last quorum-final block and the ones before it (height, hash), newest last.
#[utoipa::path(tag = "chain", responses((status = 200, description = "`height`, `hash` and `recent` ([height, hash] pairs, newest last)", body = Object)))]
#[get("/api/chain/final")]
pub(crate) async fn chain_final(state: web::Data<ApiState>) -> impl Responder {
    let Ok(st) = state.status.lock() else {
        return unavailable("ledger");
    };
    let recent: Vec<_> = st
        .recent_final
        .iter()
        .map(|(h, hash)| json!([h, hash.to_hex()]))
        .collect();
    HttpResponse::Ok().json(json!({
        "height": st.finalized,
        "hash": st.recent_final.back().map(|(_, h)| h.to_hex()),
        "recent": recent,
    }))
}

/// Every trade on this home's chain, with its buyers and one word for its stage.
#[utoipa::path(tag = "trading", responses((status = 200, body = [TradeView]), (status = 503, body = ApiError)))]
#[get("/api/trades")]
pub(crate) async fn trades(state: web::Data<ApiState>) -> impl Responder {
    let Ok(Some(s)) = state.ledger.send(GetState).await else {
        return unavailable("ledger");
    };
    let list: Vec<TradeView> = s
        .market()
        .trades
        .iter()
        .map(|(id, t)| {
            // One word for where the trade is: a settled trade with nothing delivered was
            // refunded, not "settled" as if it had happened.
            let stage = match (t.settled, t.delivered_wh, t.released) {
                (true, Some(wh), _) if wh == t.energy_wh => TradeStage::Delivered,
                (true, Some(_), _) => TradeStage::PartlyDelivered,
                (true, None, _) => TradeStage::Refunded,
                (false, Some(_), _) => TradeStage::PartlyDelivered,
                (false, None, true) => TradeStage::Delivering,
                (false, None, false) => TradeStage::Pending,
            };
            TradeView {
                trade: id.to_hex(),
                seller: t.seller.to_hex(),
                buyers: t
                    .payers
                    .iter()
                    .map(|(k, paid)| TradeBuyer {
                        buyer: k.to_hex(),
                        paid: paid.get(),
                    })
                    .collect(),
                energy_wh: t.energy_wh.get(),
                payment: t.payment.get(),
                traded_height: t.traded_height,
                deadline_height: t.deadline_height,
                stage,
                released: t.released,
                delivered_wh: t.delivered_wh.map(|w| w.get()),
                settled: t.settled,
                provenance: t
                    .allocation
                    .iter()
                    .map(|a| Provenance {
                        interval: a.interval,
                        wh: a.wh.get(),
                    })
                    .collect(),
            }
        })
        .collect();
    HttpResponse::Ok().json(list)
}

/// The open offers: what can be bought now, with the exact payment a purchase carries.
#[utoipa::path(tag = "trading", responses((status = 200, body = [OfferView]), (status = 503, body = ApiError)))]
#[get("/api/offers")]
pub(crate) async fn offers(state: web::Data<ApiState>) -> impl Responder {
    let Ok(Some(s)) = state.ledger.send(GetState).await else {
        return unavailable("ledger");
    };
    let list: Vec<OfferView> = s
        .market()
        .contracts
        .iter()
        .filter(|(_, c)| c.status == ContractStatus::Open)
        .map(|(id, c)| OfferView {
            contract: id.to_hex(),
            seller: c.seller.to_hex(),
            energy_wh: c.energy_wh.get(),
            price: c.price.get(),
            expiry_height: c.expiry_height,
            payment: payment(c.energy_wh, c.price).ok().map(|p| p.get()),
        })
        .collect();
    HttpResponse::Ok().json(list)
}

/// How an offer's energy reaches the buyer.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OfferMode {
    /// From this home's battery (at most what it holds above its reserve).
    #[default]
    Discharge,
    /// This home's PV surplus into the buyer's battery (at most an hour of its present export).
    Charge,
}

/// `POST /api/offers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OfferBody {
    /// `discharge` (the default) or `charge`.
    #[serde(default)]
    mode: OfferMode,
    /// The delivery interval the attestation covers.
    interval: u64,
    /// Energy offered, Wh (at most what the battery can sell now).
    #[schema(value_type = u64, minimum = 1)]
    energy_wh: gridlet_ledger::WattHours,
    /// Price, micro-credits per kWh.
    #[schema(value_type = u64)]
    price: gridlet_ledger::Price,
    /// Last height at which it can be bought.
    expiry_height: u64,
}

/// Offer energy from this home's battery: attested only up to what it holds above its reserve.
#[utoipa::path(
    tag = "trading",
    request_body = OfferBody,
    security(("token" = [])),
    responses(TxAnswer, TokenRefusal)
)]
#[post("/api/offers")]
pub(crate) async fn post_offer(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<OfferBody>,
) -> impl Responder {
    if let Err(r) = authorized(&req, &state) {
        return *r;
    }
    let b = body.into_inner();
    if b.energy_wh.is_zero() {
        return answered(TxAnswer::Refused(Submitted {
            submitted: false,
            tx: None,
            error: Some("energy_wh must be positive".into()),
        }));
    }
    let sent = state
        .market
        .send(Offer {
            mode: match b.mode {
                OfferMode::Discharge => gridlet_ledger::DeliveryMode::Discharge,
                OfferMode::Charge => gridlet_ledger::DeliveryMode::Charge,
            },
            interval: b.interval,
            energy_wh: b.energy_wh,
            price: b.price,
            expiry_height: b.expiry_height,
        })
        .await;
    submitted(sent)
}

/// The answer to a transaction this gateway signed: 201 with its id (and its status resource
/// as `Location`) once it is in the mempool and on the bus, 400 with the rule it breaks, 503
/// if the node is not there.
pub(crate) fn submitted(
    sent: Result<Result<Hash32, SubmitError>, actix::MailboxError>,
) -> HttpResponse {
    let refused = |error: String| Submitted {
        submitted: false,
        tx: None,
        error: Some(error),
    };
    let answer = match sent {
        Ok(Ok(id)) => TxAnswer::Created(Submitted {
            submitted: true,
            tx: Some(id.to_hex()),
            error: None,
        }),
        Ok(Err(SubmitError::Refused(reason))) => TxAnswer::Refused(refused(reason)),
        Ok(Err(e)) => TxAnswer::Unavailable(refused(e.to_string())),
        Err(_) => TxAnswer::Unavailable(refused("market unavailable".into())),
    };
    answered(answer)
}

/// The HTTP response of a signed-transaction answer.
pub(crate) fn answered(answer: TxAnswer) -> HttpResponse {
    match answer {
        TxAnswer::Created(s) => {
            let location = format!("/api/tx/{}", s.tx.as_deref().unwrap_or_default());
            HttpResponse::Created()
                .insert_header(("Location", location))
                .json(s)
        }
        TxAnswer::Refused(s) => HttpResponse::BadRequest().json(s),
        TxAnswer::Unavailable(s) => HttpResponse::ServiceUnavailable().json(s),
    }
}

/// `POST /api/purchases`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurchaseBody {
    /// The offer's contract id (hex), from `GET /api/offers`.
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    contract: Hash32,
    /// The exact payment the offer names, micro-credits.
    #[schema(value_type = u64)]
    payment: gridlet_ledger::MicroCredits,
}

/// Buy an open offer (the payment goes into escrow until the energy is delivered).
#[utoipa::path(
    tag = "trading",
    request_body = PurchaseBody,
    security(("token" = [])),
    responses(TxAnswer, TokenRefusal)
)]
#[post("/api/purchases")]
pub(crate) async fn post_purchase(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<PurchaseBody>,
) -> impl Responder {
    if let Err(r) = authorized(&req, &state) {
        return *r;
    }
    let b = body.into_inner();
    let sent = state
        .market
        .send(Buy {
            contract: b.contract,
            payment: b.payment,
        })
        .await;
    submitted(sent)
}

/// `POST /api/bids`: a sealed bid for the next auction round. The gateway keeps the salt (on
/// disk, fsync'd) and reveals the bid in the round's reveal phase.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BidBody {
    /// Energy wanted, Wh.
    #[schema(value_type = u64)]
    energy_wh: gridlet_ledger::WattHours,
    /// Highest price, micro-credits per kWh.
    #[schema(value_type = u64)]
    price: gridlet_ledger::Price,
}

/// A sealed bid for the next auction round (committed, then revealed by the gateway).
#[utoipa::path(
    tag = "trading",
    request_body = BidBody,
    security(("token" = [])),
    responses(
        (status = 202, description = "`{\"accepted\": true}`", body = Object),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError),
        (status = 503, body = ApiError),
    )
)]
#[post("/api/bids")]
pub(crate) async fn post_bid(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<BidBody>,
) -> impl Responder {
    if let Err(r) = authorized(&req, &state) {
        return *r;
    }
    let b = body.into_inner();
    match state
        .market
        .send(PlaceBid {
            energy_wh: b.energy_wh,
            price: b.price,
        })
        .await
    {
        Ok(Ok(())) => HttpResponse::Accepted().json(json!({"accepted": true})),
        Ok(Err(e)) => HttpResponse::BadRequest().json(ApiError {
            error: e.to_string(),
        }),
        Err(_) => unavailable("market"),
    }
}

/// This home's sealed bids and how far each got (the salts stay private).
#[utoipa::path(tag = "trading", responses((status = 200, description = "`energy_wh`, `price`, `round`, `progress` per bid", body = [Object]), (status = 503, body = ApiError)))]
#[get("/api/bids")]
pub(crate) async fn bids(state: web::Data<ApiState>) -> impl Responder {
    match state.market.send(GetBids).await {
        Ok(list) => HttpResponse::Ok().json(
            list.into_iter()
                .map(|(b, p)| {
                    // The salt stays private until the reveal puts it on chain.
                    json!({"energy_wh": b.energy_wh, "price": b.price, "round": b.round, "progress": p})
                })
                .collect::<Vec<_>>(),
        ),
        Err(_) => unavailable("market"),
    }
}

#[get("/metrics")]
async fn metrics_text(state: web::Data<ApiState>) -> impl Responder {
    match &state.metrics {
        Some(h) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(h.render()),
        None => HttpResponse::NotFound().finish(),
    }
}

/// `GET /api/schedule`: this gateway's day-ahead planning, and the scheduled days on chain with
/// this home's part (scheduled and metered Wh, its bill once the day is billed).
#[utoipa::path(tag = "schedule", responses((status = 200, description = "`enabled`, `gateway` (the day-ahead actor's state) and `days` (per day: iterations, residuals, clearing prices, this home's scheduled and metered Wh, its bill)", body = Object), (status = 503, body = ApiError)))]
#[get("/api/schedule")]
pub(crate) async fn schedule(state: web::Data<ApiState>) -> impl Responder {
    let local = state
        .day_ahead
        .as_ref()
        .and_then(|s| s.lock().ok().map(|s| json!(*s)));
    match state.ledger.send(GetState).await {
        Ok(Some(s)) => {
            let me = state.member;
            let days: Vec<_> = s
                .market()
                .days
                .iter()
                .map(|(day, d)| {
                    json!({
                        "day": day,
                        "iterations": d.iterations,
                        "primal_residual_w": d.primal_w,
                        "dual_residual_w": d.dual_w,
                        "clearing_prices": d.prices,
                        "scheduled_wh": d.schedule_wh.get(&me),
                        "metered_wh": d.metered_wh.get(&me),
                        "billed": d.bills.is_some(),
                        "bill": d.bills.as_ref().and_then(|b| b.get(&me)),
                    })
                })
                .collect();
            HttpResponse::Ok()
                .json(json!({"enabled": local.is_some(), "gateway": local, "days": days}))
        }
        _ => unavailable("ledger"),
    }
}

/// A body that does not parse is answered like every other refusal: JSON naming what is wrong.
fn json_error(err: actix_web::error::JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let body = json!({"submitted": false, "error": format!("bad request body: {err}")});
    actix_web::error::InternalError::from_response(err, HttpResponse::BadRequest().json(body))
        .into()
}

/// The OpenAPI document of these routes and the membership ones.
#[get("/api/openapi.json")]
async fn openapi() -> impl Responder {
    HttpResponse::Ok().json(crate::api_doc::document())
}

/// Registers the routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().error_handler(json_error));
    cfg.service(status)
        .service(openapi)
        .service(health)
        .service(schedule)
        .service(devices)
        .service(head)
        .service(chain_final)
        .service(tx_status)
        .service(trades)
        .service(offers)
        .service(post_offer)
        .service(post_purchase)
        .service(post_bid)
        .service(bids)
        .service(metrics_text);
}
