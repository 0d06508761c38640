//! The community bus against a real Mosquitto and against the embedded rumqttd broker:
//! messages arrive decoded on the right topics, sync answers reach only their node, and a
//! malformed payload is reported, not passed on.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gridlet_actors::bus::{spawn, start_embedded_broker, BusConfig, BusEvent};
use gridlet_core::node::BusMessage;
use gridlet_drivers::backoff::BackoffPolicy;
use rumqttc::{AsyncClient, MqttOptions, QoS};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Mosquitto(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto(port: u16) -> Mosquitto {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("m.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_packet_size 4194304\n"),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .args(["-c", conf.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto is installed (scripts/test installs it)");
    wait_listening(port);
    Mosquitto(child, dir)
}

fn config(port: u16, node: &str, persistent: bool) -> BusConfig {
    BusConfig {
        host: "127.0.0.1".into(),
        port,
        node: node.into(),
        prefix: "gridlet-test".into(),
        chain_id: "ab".repeat(32),
        persistent_session: persistent,
        backoff: BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        },
        max_packet_bytes: 4 * 1024 * 1024,
    }
}

async fn next_message(rx: &mut tokio::sync::mpsc::Receiver<BusEvent>) -> BusEvent {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("bus event in time")
            .expect("bus open");
        if !matches!(ev, BusEvent::Connected | BusEvent::Disconnected { .. }) {
            return ev;
        }
    }
}

async fn exchange(port: u16, persistent: bool) {
    let (a, mut a_rx, _ta) = spawn(config(port, "a", persistent));
    let (b, mut b_rx, _tb) = spawn(config(port, "b", persistent));
    for rx in [&mut a_rx, &mut b_rx] {
        loop {
            if let BusEvent::Connected = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap()
            {
                break;
            }
        }
    }
    // Subscriptions are sent right after the connection is acknowledged; give them a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let big = "ab".repeat(200_000); // a 200 kB block passes
    assert!(a.publish(BusMessage::Block { hex: big.clone() }).await);
    assert!(
        a.publish(BusMessage::SyncResponse {
            node: "b".into(),
            blocks: vec!["00".into()],
            certificates: vec![],
        })
        .await
    );
    assert!(
        a.publish(BusMessage::SyncResponse {
            node: "c".into(),
            blocks: vec!["11".into()],
            certificates: vec![],
        })
        .await
    );
    let mut got = Vec::new();
    for _ in 0..2 {
        match next_message(&mut b_rx).await {
            BusEvent::Message(d) => {
                got.push(d.message.clone());
                assert!(b.ack(*d).await);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got[0], BusMessage::Block { hex: big });
    assert_eq!(
        got[1],
        BusMessage::SyncResponse {
            node: "b".into(),
            blocks: vec!["00".into()],
            certificates: vec![],
        }
    );
    // Garbage on a bus topic from some other client.
    let mut opts = MqttOptions::new("intruder", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(opts, 10);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    client
        .publish(
            format!("gridlet-test/{}/block", "ab".repeat(8)),
            QoS::AtLeastOnce,
            false,
            b"{\"kind\":\"nonsense\"".to_vec(),
        )
        .await
        .unwrap();
    match next_message(&mut b_rx).await {
        BusEvent::Malformed { topic, .. } => assert!(topic.ends_with("/block")),
        other => panic!("expected a malformed payload, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_over_mosquitto() {
    let port = free_port();
    let _broker = mosquitto(port);
    exchange(port, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_over_the_embedded_broker() {
    let port = free_port();
    let _broker = start_embedded_broker(port, 4 * 1024 * 1024).unwrap();
    wait_listening(port);
    exchange(port, false).await;
}
