//! `gridlet check --config FILE`: everything `gridlet run` needs, checked before it runs —
//! the config (every error names its field), the key files and their modes, the genesis and
//! this home's membership, and (unless `--offline`) whether the broker and the devices answer.
//! One line per check; exit code 1 if any failed, for scripts and installers.

use std::net::ToSocketAddrs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use gridlet_actors::devices::MeterSource;
use gridlet_ledger::MemberKey;

use crate::config::GatewayConfig;
use crate::{chain_cmd, keys};

/// One check's outcome.
struct Line {
    name: String,
    outcome: Result<String>,
}

/// Runs every check, prints one line each, and says whether all passed.
pub fn run(config: &Path, offline: bool) -> bool {
    let lines = checks(config, offline);
    for l in &lines {
        match &l.outcome {
            Ok(detail) => println!("ok    {}: {detail}", l.name),
            Err(e) => println!("FAIL  {}: {e:#}", l.name),
        }
    }
    lines.iter().all(|l| l.outcome.is_ok())
}

fn line(name: &str, outcome: Result<String>) -> Line {
    Line {
        name: name.to_owned(),
        outcome,
    }
}

fn checks(config: &Path, offline: bool) -> Vec<Line> {
    let cfg = match GatewayConfig::load(config) {
        Ok(cfg) => cfg,
        Err(e) => return vec![line("config", Err(e))],
    };
    let mut out = vec![line("config", Ok(config.display().to_string()))];
    let member = keys::load_secret(&cfg.key_file)
        .map(|sk| MemberKey::from_secret(&sk))
        .with_context(|| "config field `key_file`");
    out.push(line(
        "key_file",
        member
            .as_ref()
            .map(|k| format!("{} (member key {})", cfg.key_file.display(), k.short()))
            .map_err(|e| anyhow::anyhow!("{e:#}")),
    ));
    let attestor = cfg.attestor_key_file.as_ref().map(|p| {
        keys::load_secret(p)
            .map(|sk| MemberKey::from_secret(&sk))
            .with_context(|| "config field `attestor_key_file`")
    });
    if let Some(a) = &attestor {
        out.push(line(
            "attestor_key_file",
            a.as_ref()
                .map(|k| format!("battery key {}", k.short()))
                .map_err(|e| anyhow::anyhow!("{e:#}")),
        ));
    }
    out.push(line(
        "genesis",
        membership(&cfg, member.ok(), attestor.and_then(Result::ok)),
    ));
    if offline {
        return out;
    }
    if !cfg.embedded {
        out.push(line("bus.broker", reachable(&cfg.broker.0, cfg.broker.1)));
    }
    if let Some(p) = &cfg.pv {
        out.push(line("pv", reachable(&p.host, p.port)));
    }
    if let Some(b) = &cfg.battery {
        out.push(line("battery", reachable(&b.host, b.port)));
    }
    match &cfg.meter {
        Some(MeterSource::DsmrSerial { path, .. }) => out.push(line(
            "meter",
            std::fs::metadata(path)
                .map(|_| format!("{path} exists"))
                .with_context(|| format!("serial port {path}")),
        )),
        Some(MeterSource::DsmrTcp { addr }) => {
            let outcome = addr
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .context("not host:port")
                .and_then(|(h, p)| reachable(h, p));
            out.push(line("meter", outcome));
        }
        Some(MeterSource::Mqtt(m)) => out.push(line("meter", reachable(&m.host, m.port))),
        Some(MeterSource::Sunspec { target, .. }) => {
            out.push(line("meter", reachable(&target.host, target.port)))
        }
        None => {}
    }
    out
}

/// The genesis loads, this key is a member, and the battery key is the member's attestor.
fn membership(
    cfg: &GatewayConfig,
    member: Option<MemberKey>,
    attestor: Option<MemberKey>,
) -> Result<String> {
    let genesis = chain_cmd::load_genesis(&cfg.genesis).context("config field `genesis`")?;
    let Some(me) = member else {
        return Ok(format!(
            "community {} ({} members); membership not checked without a key",
            genesis.chain_id,
            genesis.members.len()
        ));
    };
    let Some(m) = genesis.members.iter().find(|m| m.key == me) else {
        // Members who joined later are in the chain's state, not in the genesis.
        return Ok(format!(
            "community {}: key {} is not a genesis member; it takes part once the members \
             admit it (`gridlet member propose --add NAME,{},ATTESTOR` on a member's gateway)",
            genesis.chain_id,
            me.short(),
            me
        ));
    };
    if let Some(a) = attestor {
        anyhow::ensure!(
            m.attestor == a,
            "the attestor key is not {}'s battery key in the genesis",
            m.name
        );
    }
    let signs = signer_fits(
        m.equipment.signer,
        attestor.is_some(),
        cfg.battery.is_some(),
    )?;
    Ok(format!(
        "community {}, member {} of {}; {signs}, at most {} Wh attested and not delivered",
        genesis.chain_id,
        m.name,
        genesis.members.len(),
        m.equipment.attest_bound_wh()
    ))
}

/// Whether the config fits who signs as the member entry declares it (`gridlet run` holds
/// itself to the same rule): a device-signed home keeps no attestor key on the gateway, a
/// gateway-signed home with a battery needs one. Says which mode the home runs in.
pub(crate) fn signer_fits(
    signer: gridlet_ledger::genesis::AttestorSigner,
    key_given: bool,
    battery: bool,
) -> Result<&'static str> {
    use gridlet_ledger::genesis::AttestorSigner;
    match (signer, key_given, battery) {
        (AttestorSigner::Device, true, _) => anyhow::bail!(
            "this home's member entry declares that its battery signs its claims (signer = \
             device), but `attestor_key_file` gives the gateway the key: remove it, the key \
             belongs in the battery"
        ),
        (AttestorSigner::Gateway, false, true) => anyhow::bail!(
            "this home's member entry declares it gateway-signed (signer = gateway): \
             `attestor_key_file` must name the attestor key to sign with"
        ),
        (AttestorSigner::Device, false, _) => Ok("its battery signs its claims"),
        (AttestorSigner::Gateway, _, _) => Ok("gateway-signed claims (lower trust)"),
    }
}

/// Whether something accepts TCP connections at `host:port` within 2 s.
fn reachable(host: &str, port: u16) -> Result<String> {
    let addr = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}:{port}"))?
        .next()
        .with_context(|| format!("{host}:{port} has no address"))?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("{host}:{port} ({addr}) does not answer"))?;
    Ok(format!("{host}:{port} answers"))
}
