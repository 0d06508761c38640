//! The home's web page at `/`: one HTML page, its script and style embedded in the binary (no
//! Node build to run or test it), built on the same API as everything else — it polls
//! `/api/home`, `/api/devices`, `/api/energy/today`, `/api/offers`, `/api/trades` and `/api/bids`
//! and places offers and bids with the token the household enters once.

use std::sync::{Arc, Mutex};

use actix_web::{get, web, HttpResponse, Responder};
use gridlet_actors::ledger_actor::GetState;
use gridlet_core::energy_today::{Counters, EnergyToday};

use crate::api::{unavailable, ApiState};
use crate::api_types::HomeView;

const INDEX_HTML: &str = include_str!("../assets/page/index.html");
const PAGE_JS: &str = include_str!("../assets/page/page.js");
const PAGE_CSS: &str = include_str!("../assets/page/page.css");

/// What the page needs beyond the API's state.
pub struct PageState {
    /// This node's name.
    pub name: String,
    /// The strategy's battery reserve, %.
    pub reserve_soc_pct: u8,
    /// The strategy's market interval, ms.
    pub period_ms: u64,
    /// The strategy's offer lifetime, blocks.
    pub offer_blocks: u64,
    /// Today's energy by hour, sampled by [`sample`].
    pub energy: Arc<Mutex<EnergyToday>>,
    /// The community clock.
    pub clock: gridlet_actors::clock::Clock,
}

#[get("/")]
async fn index() -> impl Responder {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(INDEX_HTML)
}

#[get("/page.js")]
async fn script() -> impl Responder {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(PAGE_JS)
}

#[get("/page.css")]
async fn style() -> impl Responder {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(PAGE_CSS)
}

/// This home at a glance: name, balance, reserve, chain and peers.
#[utoipa::path(tag = "home", responses((status = 200, body = HomeView), (status = 503, body = crate::api_types::ApiError)))]
#[get("/api/home")]
pub(crate) async fn home(state: web::Data<ApiState>, page: web::Data<PageState>) -> impl Responder {
    let Ok(Some(s)) = state.ledger.send(GetState).await else {
        return unavailable("ledger");
    };
    let market = state
        .devices
        .market
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let final_height = state.status.lock().map(|st| st.finalized).unwrap_or(0);
    let peers: std::collections::BTreeSet<_> = s
        .recent_blocks()
        .map(|b| b.producer)
        .filter(|p| *p != state.member)
        .collect();
    HttpResponse::Ok().json(HomeView {
        name: page.name.clone(),
        member: state.member.to_hex(),
        balance: market.balance,
        traded_wh: market.traded_wh,
        reserve_soc_pct: page.reserve_soc_pct,
        height: s.height,
        final_height,
        head_slot: s.slot,
        members: s.members().len(),
        peers_seen: peers.len(),
        trading_enabled: state.token.is_some(),
        interval: page.clock.now_ms().checked_div(page.period_ms).unwrap_or(0),
        offer_blocks: page.offer_blocks,
    })
}

/// Today's energy by hour (PV, import, export, traded), on the community clock.
#[utoipa::path(tag = "home", responses((status = 200, description = "`hours`: for each hour of today so far, `hour`, `pv_wh`, `import_wh`, `export_wh`, `traded_wh`", body = Object)))]
#[get("/api/energy/today")]
pub(crate) async fn energy_today(page: web::Data<PageState>) -> impl Responder {
    let now = page.clock.now_ms();
    let hours = page.energy.lock().map(|e| e.hours(now)).unwrap_or_default();
    HttpResponse::Ok().json(serde_json::json!({ "hours": hours }))
}

/// One sample of the counters into today's energy (run every few seconds).
pub fn sample(
    statuses: &crate::status::Statuses,
    clock: &gridlet_actors::clock::Clock,
    energy: &Mutex<EnergyToday>,
) {
    let value = |v: gridlet_actors::devices::Stamped| {
        gridlet_actors::devices::fresh(v, std::time::Duration::from_secs(60))
    };
    let pv = statuses
        .pv
        .as_ref()
        .and_then(|p| p.lock().ok().and_then(|p| value(p.energy_wh)));
    let (import, export) = statuses
        .meter
        .as_ref()
        .and_then(|m| {
            m.lock()
                .ok()
                .map(|m| (value(m.import_wh), value(m.export_wh)))
        })
        .unwrap_or((None, None));
    let traded = statuses.market.lock().ok().map(|m| m.traded_wh as f64);
    if let Ok(mut e) = energy.lock() {
        e.observe(
            clock.now_ms(),
            Counters {
                pv_wh: pv,
                import_wh: import,
                export_wh: export,
                traded_wh: traded,
            },
        );
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(index)
        .service(script)
        .service(style)
        .service(home)
        .service(energy_today);
}
