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

/// One HTTP/1.1 request to a gateway's API (hyper's client): the status and the body parsed
/// as JSON (null if it is not JSON); none on a connection failure or after `within`.
async fn request(
    port: u16,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
    within: Duration,
) -> Option<(u16, serde_json::Value)> {
    use http_body_util::BodyExt;
    let fut = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, serde_json::from_slice(&body).unwrap_or_default()))
    };
    tokio::time::timeout(within, fut).await.ok().flatten()
}

/// `POST path` with a JSON body and the sim's bearer token; the status and JSON answer, none on
/// a connection failure or after 2 s.
pub(super) async fn api_post(
    port: u16,
    path: &str,
    body: &serde_json::Value,
) -> Option<(u16, serde_json::Value)> {
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {SIM_API_TOKEN}"),
        )
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .ok()?;
    request(port, req, Duration::from_secs(2)).await
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
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .ok()?;
    match request(port, req, within).await? {
        (200..=299, v) if !v.is_null() => Some(v),
        _ => None,
    }
}
