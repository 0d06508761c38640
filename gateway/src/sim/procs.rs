//! The simulation's gateway processes: starting, watching and stopping them, their API ports
//! and a small API client.

use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::home_config::HomeSetup;

/// Gateway processes, stopped (SIGTERM, then SIGKILL) when dropped.
pub(super) struct Gateways(pub(super) Vec<Child>);

impl Gateways {
    pub(super) fn terminate(&mut self, grace: Duration) {
        let mut children = std::mem::take(&mut self.0);
        for c in &children {
            // SIGTERM (a clean stop), sent directly: no `kill` binary needed.
            if let Some(pid) = i32::try_from(c.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let deadline = Instant::now() + grace;
        for c in &mut children {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for Gateways {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(5));
    }
}

/// A free loopback port, chosen by the OS (bound to port 0, then let go): for the embedded
/// broker, which binds it moments later in this process, before any gateway starts.
pub(super) fn os_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("no free port")?;
    Ok(listener.local_addr()?.port())
}

/// Waits for each gateway to bind its API on a port of the OS's choosing and write it to
/// `api.addr` in its data dir; a gateway that exits meanwhile fails the simulation.
pub(super) fn await_api_ports(setups: &mut [HomeSetup], gateways: &mut Gateways) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, s) in setups.iter_mut().enumerate() {
        loop {
            let text = std::fs::read_to_string(s.dir.join("api.addr")).unwrap_or_default();
            if let Ok(addr) = text.trim().parse::<std::net::SocketAddr>() {
                s.api_port = addr.port();
                break;
            }
            if let Some(status) = gateways
                .0
                .get_mut(i)
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "gateway {i} exited ({status}) before its API was up; see {}",
                    s.dir.join("gateway.log").display()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "gateway {i} did not start its API within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

pub(super) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The bearer token of the simulated homes' APIs (trading through the API is on in the sim).
pub(super) const SIM_API_TOKEN: &str = "gridlet-sim-api-token";

/// `POST path` with a JSON body and the sim's bearer token; the status and JSON answer, none on
/// a connection failure or after 2 s.
pub(super) async fn api_post(
    port: u16,
    path: &str,
    body: &serde_json::Value,
) -> Option<(u16, serde_json::Value)> {
    crate::http_client::send(
        local(port),
        hyper::Method::POST,
        path,
        Some(SIM_API_TOKEN),
        Some(body),
        Duration::from_secs(2),
    )
    .await
}

/// `GET path` on a gateway's API; the JSON body of a 2xx answer, none on any failure or after
/// 2 s.
pub(super) async fn api_get(port: u16, path: &str) -> Option<serde_json::Value> {
    api_get_within(port, path, Duration::from_secs(2)).await
}

/// [`api_get`] giving up after `within`.
pub(super) async fn api_get_within(
    port: u16,
    path: &str,
    within: Duration,
) -> Option<serde_json::Value> {
    let answer =
        crate::http_client::send(local(port), hyper::Method::GET, path, None, None, within).await;
    match answer? {
        (200..=299, v) if !v.is_null() => Some(v),
        _ => None,
    }
}

fn local(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}
