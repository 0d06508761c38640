//! `gridlet member …`: list the members, propose adding or removing one, approve a proposal —
//! through the running gateway's API (it signs as its home), with the config's address and
//! token.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use gridlet_ledger::MemberKey;
use serde_json::{json, Value};

use crate::config::GatewayConfig;

/// What `gridlet member` does.
pub enum MemberAction {
    /// Print the members and the open proposals.
    List,
    /// Propose a new member: `NAME,KEY,ATTESTOR` (keys as hex or key files).
    Add(String),
    /// Propose removing a member (key as hex or key file).
    Remove(String),
    /// Approve an open proposal by id.
    Approve(String),
}

/// A key given as hex or as a key file (secret or `.pub`).
fn key_arg(s: &str) -> Result<MemberKey> {
    match MemberKey::from_hex(s) {
        Ok(k) => Ok(k),
        Err(_) if Path::new(s).exists() => crate::keys::load_public(Path::new(s)),
        Err(e) => bail!("{s:?} is neither a key (66 hex characters: {e}) nor a key file"),
    }
}

fn add_body(spec: &str) -> Result<Value> {
    let parts: Vec<&str> = spec.split(',').collect();
    let [name, key, attestor, tail @ ..] = parts.as_slice() else {
        bail!("--add wants NAME,KEY,ATTESTOR[,BATTERY_WH,PV_W[,SIGNER]], got {spec:?}");
    };
    let equipment =
        crate::chain_cmd::parse_equipment(spec, tail, crate::chain_cmd::DEFAULT_EQUIPMENT)?;
    Ok(json!({"add": {
        "name": name,
        "key": key_arg(key).context("the member key")?.to_hex(),
        "attestor": key_arg(attestor).context("the attestor key")?.to_hex(),
        "signer": equipment.signer,
        "battery_wh": equipment.battery_wh,
        "pv_w": equipment.pv_w,
    }}))
}

/// Runs `action` against the gateway of `config`; prints the API's JSON answer.
pub fn run(config: &Path, action: MemberAction) -> Result<()> {
    let cfg = GatewayConfig::load(config)?;
    let addr: SocketAddr = cfg
        .api_listen
        .context("config field `api.listen`: the API is off, and `gridlet member` uses it")?;
    // A gateway listening on all interfaces is reached on loopback.
    let addr = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let (method, path, body) = match &action {
        MemberAction::List => (hyper::Method::GET, "/api/members", None),
        MemberAction::Add(spec) => (
            hyper::Method::POST,
            "/api/members/proposals",
            Some(add_body(spec)?),
        ),
        MemberAction::Remove(key) => (
            hyper::Method::POST,
            "/api/members/proposals",
            Some(json!({"remove": key_arg(key)?.to_hex()})),
        ),
        MemberAction::Approve(id) => (
            hyper::Method::POST,
            "/api/members/approvals",
            Some(json!({"proposal": id})),
        ),
    };
    let token = cfg.api_token.as_deref();
    if body.is_some() && token.is_none() {
        bail!("config field `api.token`: signing through the API needs the token");
    }
    let answer = crate::device_cmd::runtime()?.block_on(crate::http_client::send(
        addr,
        method,
        path,
        token,
        body.as_ref(),
        Duration::from_secs(10),
    ));
    let Some((status, value)) = answer else {
        bail!("the gateway's API at {addr} does not answer (is `gridlet run` up?)");
    };
    println!("{value}");
    if !(200..300).contains(&status) {
        bail!(
            "the gateway answered {status}: {}",
            value["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(())
}
