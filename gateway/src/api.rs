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
    let Some(token) = &state.token else {
        return Err(Box::new(HttpResponse::Forbidden().json(
            json!({"error": "trading through the API is off: no token configured"}),
        )));
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if g == token => Ok(()),
        _ => Err(Box::new(
            HttpResponse::Unauthorized().json(json!({"error": "missing or wrong bearer token"})),
        )),
    }
}

#[get("/api/status")]
async fn status(state: web::Data<ApiState>) -> impl Responder {
    let s = state.status.lock().map(|s| s.clone()).unwrap_or_default();
    HttpResponse::Ok().json(json!({
        "member": state.member.to_hex(),
        "height": s.height,
        "final_height": s.finalized,
        "head": s.head.map(|h| h.to_hex()),
        "blocks_produced": s.produced,
        "blocks_committed": s.committed,
        "rejected": s.rejected,
        "duplicates": s.duplicates,
        "malformed_bus_messages": s.malformed,
    }))
}

/// A reading older than this is `stale`.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// A stamped value as JSON: the value, its age in ms and its quality (`good`, or `stale` after
/// 30 s); null if no valid value is known (never read, or the device answered garbage).
fn stamped(v: gridlet_actors::devices::Stamped) -> serde_json::Value {
    match v {
        Some((x, at)) => json!({
            "value": x,
            "age_ms": at.elapsed().as_millis() as u64,
            "quality": if at.elapsed() > STALE_AFTER { "stale" } else { "good" },
        }),
        None => serde_json::Value::Null,
    }
}

/// A copy of a device's status, if the device is configured.
fn snapshot<T: Clone>(shared: &Option<std::sync::Arc<std::sync::Mutex<T>>>) -> Option<T> {
    shared
        .as_ref()
        .and_then(|s| s.lock().ok().map(|s| s.clone()))
}

#[get("/api/devices")]
async fn devices(state: web::Data<ApiState>) -> impl Responder {
    let d = &state.devices;
    let battery = snapshot(&d.battery).map(|b| {
        let at = |v: Option<f64>| stamped(v.zip(b.read_at));
        json!({
            "available_wh": at(b.available_wh),
            "soc_pct": at(b.soc_pct),
            "power_w": at(b.power_w),
            "capacity_wh": b.capacity_wh,
            // Since the gateway started, integrated from the battery's power.
            "charged_wh": (b.energy.charged_wh() * 10.0).round() / 10.0,
            "discharged_wh": (b.energy.discharged_wh() * 10.0).round() / 10.0,
            "failed_polls": b.failed_polls,
            "releases": b.releases,
            "safe_state": b.safe_state,
        })
    });
    let pv = snapshot(&d.pv).map(|p| {
        json!({
            "power_w": stamped(p.power_w),
            "energy_wh": stamped(p.energy_wh),
            "polls": p.polls,
            "failed_polls": p.failed_polls,
            "last_error": p.last_error,
        })
    });
    let meter = snapshot(&d.meter).map(|m| {
        json!({
            "power_w": stamped(m.power_w),
            "import_wh": stamped(m.import_wh),
            "export_wh": stamped(m.export_wh),
            "accepted": m.accepted,
            "rejected": m.rejected,
            "connects": m.connects,
            "connected": m.connected,
            "last_error": m.last_error,
        })
    });
    HttpResponse::Ok().json(json!({ "battery": battery, "pv": pv, "meter": meter }))
}

/// `GET /api/health`: whether the gateway runs and which of its devices answer. Always 200
/// while the process serves (a device down is "degraded", not an outage of the gateway).
#[get("/api/health")]
async fn health(state: web::Data<ApiState>) -> impl Responder {
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

#[get("/api/chain/head")]
async fn head(state: web::Data<ApiState>) -> impl Responder {
    match state.ledger.send(GetState).await {
        Ok(Some(s)) => HttpResponse::Ok().json(json!({
            "height": s.height,
            "slot": s.slot,
            "state_hash": s.hash().to_hex(),
            "head": state.status.lock().ok().and_then(|st| st.head).map(|h| h.to_hex()),
        })),
        _ => HttpResponse::ServiceUnavailable().json(json!({"error": "ledger unavailable"})),
    }
}

/// What became of a transaction: `pending`, `included` (height), `final` (height), `refused`
/// (reason) or `unknown` — for the id a `POST` answered with.
#[get("/api/tx/{id}")]
async fn tx_status(state: web::Data<ApiState>, path: web::Path<String>) -> impl Responder {
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
        _ => HttpResponse::ServiceUnavailable().json(json!({"error": "ledger unavailable"})),
    }
}

/// The last quorum-final block and the ones before it (height, hash), newest last.
#[get("/api/chain/final")]
async fn chain_final(state: web::Data<ApiState>) -> impl Responder {
    let Ok(st) = state.status.lock() else {
        return HttpResponse::ServiceUnavailable().json(json!({"error": "ledger unavailable"}));
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

#[get("/api/trades")]
async fn trades(state: web::Data<ApiState>) -> impl Responder {
    match state.ledger.send(GetState).await {
        Ok(Some(s)) => {
            let list: Vec<_> = s
                .market()
                .trades
                .iter()
                .map(|(id, t)| {
                    // One word for where the trade is: a settled trade with nothing delivered
                    // was refunded, not "settled" as if it had happened.
                    let stage = match (t.settled, t.delivered_wh, t.released) {
                        (true, Some(wh), _) if wh == t.energy_wh => "delivered",
                        (true, Some(_), _) => "partly_delivered",
                        (true, None, _) => "refunded",
                        (false, Some(_), _) => "partly_delivered",
                        (false, None, true) => "delivering",
                        (false, None, false) => "pending",
                    };
                    json!({
                        "trade": id.to_hex(),
                        "seller": t.seller.to_hex(),
                        "buyers": t.payers.iter().map(|(k, paid)| json!({"buyer": k.to_hex(), "paid": paid})).collect::<Vec<_>>(),
                        "energy_wh": t.energy_wh,
                        "payment": t.payment,
                        "traded_height": t.traded_height,
                        "deadline_height": t.deadline_height,
                        "stage": stage,
                        "released": t.released,
                        "delivered_wh": t.delivered_wh,
                        "settled": t.settled,
                        "provenance": t.allocation,
                    })
                })
                .collect();
            HttpResponse::Ok().json(list)
        }
        _ => HttpResponse::ServiceUnavailable().json(json!({"error": "ledger unavailable"})),
    }
}

#[get("/api/offers")]
async fn offers(state: web::Data<ApiState>) -> impl Responder {
    match state.ledger.send(GetState).await {
        Ok(Some(s)) => {
            let list: Vec<_> = s
                .market()
                .contracts
                .iter()
                .filter(|(_, c)| c.status == ContractStatus::Open)
                .map(|(id, c)| {
                    json!({
                        "contract": id.to_hex(),
                        "seller": c.seller.to_hex(),
                        "energy_wh": c.energy_wh,
                        "price": c.price,
                        "expiry_height": c.expiry_height,
                        "payment": payment(c.energy_wh, c.price).ok(),
                    })
                })
                .collect();
            HttpResponse::Ok().json(list)
        }
        _ => HttpResponse::ServiceUnavailable().json(json!({"error": "ledger unavailable"})),
    }
}

/// `POST /api/offers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OfferBody {
    interval: u64,
    energy_wh: gridlet_ledger::WattHours,
    price: gridlet_ledger::Price,
    expiry_height: u64,
}

#[post("/api/offers")]
async fn post_offer(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<OfferBody>,
) -> impl Responder {
    if let Err(r) = authorized(&req, &state) {
        return *r;
    }
    let b = body.into_inner();
    if b.energy_wh.is_zero() {
        return HttpResponse::BadRequest().json(json!({"error": "energy_wh must be positive"}));
    }
    let sent = state
        .market
        .send(Offer {
            interval: b.interval,
            energy_wh: b.energy_wh,
            price: b.price,
            expiry_height: b.expiry_height,
        })
        .await;
    submitted(sent)
}

/// The answer to a transaction this gateway signed: 202 with its id once it is in the mempool
/// and on the bus, 400 with the rule it breaks, 503 if the node is not there.
pub(crate) fn submitted(
    sent: Result<Result<Hash32, SubmitError>, actix::MailboxError>,
) -> HttpResponse {
    match sent {
        Ok(Ok(id)) => HttpResponse::Accepted().json(json!({"submitted": true, "tx": id.to_hex()})),
        Ok(Err(SubmitError::Refused(reason))) => {
            HttpResponse::BadRequest().json(json!({"submitted": false, "error": reason}))
        }
        Ok(Err(e)) => HttpResponse::ServiceUnavailable()
            .json(json!({"submitted": false, "error": e.to_string()})),
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(json!({"submitted": false, "error": "market unavailable"})),
    }
}

/// `POST /api/purchases`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurchaseBody {
    contract: Hash32,
    payment: gridlet_ledger::MicroCredits,
}

#[post("/api/purchases")]
async fn post_purchase(
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BidBody {
    energy_wh: gridlet_ledger::WattHours,
    price: gridlet_ledger::Price,
}

#[post("/api/bids")]
async fn post_bid(
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
        Ok(Err(e)) => HttpResponse::BadRequest().json(json!({"error": e.to_string()})),
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({"error": "market unavailable"})),
    }
}

#[get("/api/bids")]
async fn bids(state: web::Data<ApiState>) -> impl Responder {
    match state.market.send(GetBids).await {
        Ok(list) => HttpResponse::Ok().json(
            list.into_iter()
                .map(|(b, p)| {
                    // The salt stays private until the reveal puts it on chain.
                    json!({"energy_wh": b.energy_wh, "price": b.price, "round": b.round, "progress": p})
                })
                .collect::<Vec<_>>(),
        ),
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({"error": "market unavailable"})),
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

/// Registers the routes.
/// `GET /api/schedule`: this gateway's day-ahead planning, and the scheduled days on chain with
/// this home's part (scheduled and metered Wh, its bill once the day is billed).
#[get("/api/schedule")]
async fn schedule(state: web::Data<ApiState>) -> impl Responder {
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
        _ => HttpResponse::ServiceUnavailable().json(json!({"error": "ledger unavailable"})),
    }
}

/// A body that does not parse is answered like every other refusal: JSON naming what is wrong.
fn json_error(err: actix_web::error::JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let body = json!({"submitted": false, "error": format!("bad request body: {err}")});
    actix_web::error::InternalError::from_response(err, HttpResponse::BadRequest().json(body))
        .into()
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().error_handler(json_error));
    cfg.service(status)
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
