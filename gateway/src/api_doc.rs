//! The OpenAPI 3.1 document of the HTTP API, served at `GET /api/openapi.json`. utoipa derives
//! it from the handlers' annotations and the answer types in [`crate::api_types`] (chosen over
//! a hand-written document: the routes, bodies and answers are the ones the code has).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "gridlet gateway API",
        description = "One home's gateway: its devices, its copy of the community chain, and trading. Reads are open; POSTs need the configured bearer token. Bound to loopback by default."
    ),
    paths(
        crate::api::status,
        crate::api::health,
        crate::api::devices,
        crate::api::head,
        crate::api::chain_final,
        crate::api::tx_status,
        crate::api::trades,
        crate::api::offers,
        crate::api::post_offer,
        crate::api::post_purchase,
        crate::api::post_bid,
        crate::api::bids,
        crate::api::schedule,
        crate::api_members::members,
        crate::api_members::propose,
        crate::api_members::approve,
        crate::page::home,
        crate::page::energy_today,
    ),
    // The answer types the IntoResponses enums refer to (paths register only their own bodies).
    components(schemas(crate::api_types::Submitted, crate::api_types::ApiError)),
    modifiers(&BearerToken),
    tags(
        (name = "home", description = "This home at a glance and today's energy, for its page"),
        (name = "chain", description = "This home's copy of the community chain"),
        (name = "devices", description = "PV inverter, battery and grid meter"),
        (name = "trading", description = "Offers, purchases, sealed bids, trades and what became of a transaction"),
        (name = "schedule", description = "The day-ahead schedule"),
        (name = "members", description = "Who is a member; proposals to admit or remove one"),
    )
)]
struct ApiDoc;

/// The `token` security scheme the POSTs name: `Authorization: Bearer <api.token>`.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_documented_with_its_method() {
        let doc = serde_json::to_value(super::document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/api/status", "get"),
            ("/api/health", "get"),
            ("/api/devices", "get"),
            ("/api/chain/head", "get"),
            ("/api/chain/final", "get"),
            ("/api/tx/{id}", "get"),
            ("/api/trades", "get"),
            ("/api/offers", "get"),
            ("/api/offers", "post"),
            ("/api/purchases", "post"),
            ("/api/bids", "post"),
            ("/api/bids", "get"),
            ("/api/schedule", "get"),
            ("/api/home", "get"),
            ("/api/energy/today", "get"),
            ("/api/members", "get"),
            ("/api/members/proposals", "post"),
            ("/api/members/approvals", "post"),
        ] {
            assert!(paths[path][method].is_object(), "{method} {path}: {doc:#}");
        }
        let post = &paths["/api/offers"]["post"];
        assert_eq!(post["security"][0]["token"], serde_json::json!([]));
        assert_eq!(
            post["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/OfferBody"
        );
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["TradeStage"]["enum"],
            serde_json::json!([
                "pending",
                "delivering",
                "partly_delivered",
                "delivered",
                "refunded"
            ])
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["token"]["scheme"],
            "bearer"
        );
    }
}
