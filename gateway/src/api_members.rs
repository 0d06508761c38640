//! The membership API: who is a member, the open proposals, and signing a proposal or an
//! approval as this home (`gridlet member …` uses it). A change takes effect once a quorum of
//! the current members approved it on chain (docs/protocol.md §7.1).

use actix_web::{get, post, web, HttpRequest, HttpResponse, Responder};
use gridlet_actors::ledger_actor::{GetState, SignAndSubmit};
use gridlet_ledger::genesis::{AttestorSigner, Equipment};
use gridlet_ledger::membership::MemberChange;
use gridlet_ledger::{Hash32, MemberKey, TxPayload};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::api::{authorized, submitted, unavailable, ApiState};
use crate::api_types::{ApiError, TokenRefusal, TxAnswer};

/// `GET /api/members`: the members of the head's state, and the open proposals with the
/// approvals each still needs.
#[utoipa::path(tag = "members", responses((status = 200, description = "`height`, `quorum`, `member` (whether this home is one), `members` (key, name, attestor, since, me) and `proposals` (id, change, proposer, approvals, needed)", body = Object), (status = 503, body = ApiError)))]
#[get("/api/members")]
pub(crate) async fn members(state: web::Data<ApiState>) -> impl Responder {
    let Ok(Some(s)) = state.ledger.send(GetState).await else {
        return unavailable("ledger");
    };
    let m = s.membership();
    let quorum = state.quorum.quorum(m.len());
    let members: Vec<_> = m
        .members()
        .iter()
        .map(|(key, info)| {
            json!({
                "key": key.to_hex(),
                "name": info.name,
                "attestor": info.attestor.to_hex(),
                // Who signs its claims (`device`: its battery; `gateway`: lower trust) and
                // what its equipment bounds them by.
                "signer": info.equipment.signer,
                "battery_wh": info.equipment.battery_wh,
                "pv_w": info.equipment.pv_w,
                "since": info.since,
                "me": *key == state.member,
            })
        })
        .collect();
    let proposals: Vec<_> = m
        .proposals()
        .iter()
        .map(|(id, p)| {
            let approvals = p.approvals.iter().filter(|k| m.contains(k)).count();
            json!({
                "id": id.to_hex(),
                "change": p.change,
                "proposer": p.proposer.to_hex(),
                "proposed_at": p.proposed_at,
                "approvals": p.approvals.iter().map(|k| k.to_hex()).collect::<Vec<_>>(),
                "approved_by_me": p.approvals.contains(&state.member),
                "needed": quorum.saturating_sub(approvals),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "height": s.height,
        "quorum": quorum,
        "member": m.contains(&state.member),
        "members": members,
        "proposals": proposals,
    }))
}

/// A new member's name and keys.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewMember {
    /// Its name (unique in the community).
    name: String,
    /// Its member key (compressed secp256k1, hex).
    #[schema(value_type = String, pattern = "^[0-9a-f]{66}$")]
    key: MemberKey,
    /// Its battery's attestor key (hex).
    #[schema(value_type = String, pattern = "^[0-9a-f]{66}$")]
    attestor: MemberKey,
    /// Who holds the attestor key: `device` (the battery signs) or `gateway` (lower trust).
    #[schema(value_type = String, pattern = "^(device|gateway)$")]
    signer: AttestorSigner,
    /// Usable battery capacity, Wh (bounds what the home can attest on chain).
    battery_wh: u64,
    /// PV nameplate power, W (bounds what the home can attest on chain).
    pv_w: u64,
}

/// `POST /api/members/proposals`: exactly one of `add` and `remove`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProposalBody {
    /// A home to admit.
    add: Option<NewMember>,
    /// A member key to remove (hex).
    #[schema(value_type = Option<String>)]
    remove: Option<MemberKey>,
}

/// Propose a home joining or a member leaving, signed by this home.
#[utoipa::path(
    tag = "members",
    request_body = ProposalBody,
    security(("token" = [])),
    responses(TxAnswer, TokenRefusal)
)]
#[post("/api/members/proposals")]
pub(crate) async fn propose(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<ProposalBody>,
) -> impl Responder {
    if let Err(r) = authorized(&req, &state) {
        return *r;
    }
    let change = match body.into_inner() {
        ProposalBody {
            add: Some(n),
            remove: None,
        } => MemberChange::Add {
            name: n.name,
            key: n.key,
            attestor: n.attestor,
            equipment: Equipment {
                signer: n.signer,
                battery_wh: n.battery_wh,
                pv_w: n.pv_w,
            },
        },
        ProposalBody {
            add: None,
            remove: Some(key),
        } => MemberChange::Remove { key },
        _ => {
            return crate::api::answered(TxAnswer::Refused(crate::api_types::Submitted {
                submitted: false,
                tx: None,
                error: Some("give exactly one of `add` and `remove`".into()),
            }))
        }
    };
    let sent = state
        .ledger
        .send(SignAndSubmit(TxPayload::MemberPropose(change)))
        .await;
    submitted(sent)
}

/// `POST /api/members/approvals`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApprovalBody {
    /// The proposal's id (hex), from `GET /api/members`.
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    proposal: Hash32,
}

/// Approve an open proposal as this home.
#[utoipa::path(
    tag = "members",
    request_body = ApprovalBody,
    security(("token" = [])),
    responses(TxAnswer, TokenRefusal)
)]
#[post("/api/members/approvals")]
pub(crate) async fn approve(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<ApprovalBody>,
) -> impl Responder {
    if let Err(r) = authorized(&req, &state) {
        return *r;
    }
    let proposal = body.into_inner().proposal;
    let sent = state
        .ledger
        .send(SignAndSubmit(TxPayload::MemberApprove { proposal }))
        .await;
    submitted(sent)
}

/// Registers the membership routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(members).service(propose).service(approve);
}
