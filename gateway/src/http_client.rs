//! One HTTP/1.1 request to a gateway's API with hyper's client (already in the tree through
//! rumqttd's axum): used by `gridlet member …` and by the sim's drivers.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;

/// Sends `method path` to `addr` with an optional bearer token and JSON body; the status and
/// the body parsed as JSON (null if it is not JSON). `None` on a connection failure or when
/// no answer came within `within`.
pub async fn send(
    addr: SocketAddr,
    method: hyper::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
    within: Duration,
) -> Option<(u16, serde_json::Value)> {
    use http_body_util::BodyExt;
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string());
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(b.to_string()))),
        None => req.body(Full::new(Bytes::new())),
    }
    .ok()?;
    let fut = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(connection);
        let response = sender.send_request(req).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, serde_json::from_slice(&body).unwrap_or_default()))
    };
    tokio::time::timeout(within, fut).await.ok().flatten()
}
