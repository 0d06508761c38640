//! The embedded MQTT broker (rumqttd), started in its own thread, and the proof that the port
//! it was given is really its own.
//!
//! rumqttd binds in a thread of its own and only logs when it cannot: a port already taken
//! (another broker, another run's broker, a connection's ephemeral port) would leave the gateway
//! talking to whoever listens there. So a start is confirmed end to end: a probe message
//! published over TCP to the address must come back through an in-process link to this
//! broker's router.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rumqttc::{Client, MqttOptions, QoS};

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The generated rumqttd configuration did not parse.
    #[error("broker configuration: {0}")]
    Config(String),
    /// No thread for the broker or its probe.
    #[error("cannot start the broker's thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The in-process link to the router was refused.
    #[error("cannot link to the broker's router: {0}")]
    Link(String),
    /// The probe sent to `addr` never reached this broker.
    #[error(
        "{addr} is not this gateway's embedded broker: nothing of ours answered there within \
         {waited_ms} ms (another broker or process holds the port, or the broker could not bind it)"
    )]
    NotOurs {
        /// The address the broker was to listen on.
        addr: SocketAddr,
        /// How long the probe was tried.
        waited_ms: u64,
    },
}

/// How long a start may take to prove itself.
const PROBE_WITHIN: Duration = Duration::from_secs(10);

/// Starts an embedded MQTT broker (rumqttd) on `127.0.0.1:port` in its own thread, for a
/// gateway with no broker configured. Its logs are under the tracing target `rumqttd`.
pub fn start_embedded_broker(
    port: u16,
    max_payload_bytes: usize,
) -> Result<std::thread::JoinHandle<()>, BrokerError> {
    start_embedded_broker_on(SocketAddr::from(([127, 0, 0, 1], port)), max_payload_bytes)
}

/// Starts the embedded broker on `listen` (e.g. `0.0.0.0:1883`, for neighbours to reach it),
/// returning once a message sent to that address has reached this broker. Blocks (at most
/// 10 s): call it outside async code, or inside `block_in_place`.
pub fn start_embedded_broker_on(
    listen: SocketAddr,
    max_payload_bytes: usize,
) -> Result<std::thread::JoinHandle<()>, BrokerError> {
    start_proven(listen, max_payload_bytes, PROBE_WITHIN)
}

fn start_proven(
    listen: SocketAddr,
    max_payload_bytes: usize,
    within: Duration,
) -> Result<std::thread::JoinHandle<()>, BrokerError> {
    let config = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 1000
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "gridlet-v4"
listen = "{listen}"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = {max_payload_bytes}
    max_inflight_count = 500
    dynamic_filters = true
"#
    );
    let config: rumqttd::Config =
        toml::from_str(&config).map_err(|e| BrokerError::Config(e.to_string()))?;
    let mut broker = rumqttd::Broker::new(config);
    let nonce = probe_nonce();
    let topic = format!("gridlet/broker-probe/{nonce}");
    let (mut link_tx, mut link_rx) = broker
        // Not the probe client's id: a second connection under one id takes the session over.
        .link(&format!("gridlet-probe-link-{nonce}"))
        .map_err(|e| BrokerError::Link(e.to_string()))?;
    link_tx
        .subscribe(topic.clone())
        .map_err(|e| BrokerError::Link(e.to_string()))?;
    let handle = std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(target: "rumqttd", %e, "embedded broker stopped");
            }
        })?;

    let target = probe_address(listen);
    let started = Instant::now();
    let (client, mut connection) = Client::new(
        MqttOptions::new(
            format!("gridlet-probe-{nonce}"),
            target.ip().to_string(),
            target.port(),
        ),
        10,
    );
    // The probe client's event loop: it retries the connection until the broker is up.
    std::thread::Builder::new()
        .name("broker-probe".into())
        .spawn(move || {
            for event in connection.iter() {
                if event.is_err() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if started.elapsed() > within {
                    break;
                }
            }
        })?;
    let deadline = started + within;
    while Instant::now() < deadline {
        let _ = client.try_publish(topic.clone(), QoS::AtMostOnce, false, nonce.clone());
        let wait = (Instant::now() + Duration::from_millis(200)).min(deadline);
        while let Ok(Some(n)) = link_rx.recv_deadline(wait) {
            if let rumqttd::Notification::Forward(f) = n {
                if f.publish.topic.as_ref() == topic.as_bytes() {
                    let _ = client.disconnect();
                    return Ok(handle);
                }
            }
        }
    }
    let _ = client.disconnect();
    Err(BrokerError::NotOurs {
        addr: listen,
        waited_ms: within.as_millis() as u64,
    })
}

/// Where a client reaches a listener: a wildcard bind is reached on loopback.
fn probe_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Unique to this start among the processes of the machine: the process id and the clock.
fn probe_nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        listener.local_addr().unwrap().port()
    }

    #[test]
    fn a_start_proves_it_owns_its_port() {
        let port = free_port();
        start_embedded_broker(port, 1024 * 1024).unwrap();
    }

    #[test]
    fn a_port_held_by_another_broker_is_refused_by_name() {
        let port = free_port();
        // The first broker owns the port; a second start on it must not pass for a broker.
        start_embedded_broker(port, 1024 * 1024).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let err = start_proven(addr, 1024 * 1024, Duration::from_secs(2)).unwrap_err();
        assert!(
            matches!(err, BrokerError::NotOurs { addr, .. } if addr.port() == port),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("not this gateway's embedded broker"));
    }
}
