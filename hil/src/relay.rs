//! A TCP relay between one gateway and its broker, for network faults: it forwards to the
//! broker it is pointed at, and pointing it elsewhere (another broker: a partition) or nowhere
//! (a cut cable) drops every connection through it at once. The gateway reconnects by itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Where a relay forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// This broker.
    To(SocketAddr),
    /// Nowhere: connections are closed as they come.
    Cut,
}

/// A running relay (it stops when dropped).
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    upstream: watch::Sender<Upstream>,
    current: Arc<Mutex<Upstream>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listens on a loopback port of the OS's choosing, forwarding to `upstream`.
    pub async fn start(upstream: Upstream) -> std::io::Result<Relay> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(upstream);
        let current = Arc::new(Mutex::new(upstream));
        let task = tokio::spawn(accept_loop(listener, rx));
        Ok(Relay {
            addr,
            upstream: tx,
            current,
            task,
        })
    }

    /// The address gateways connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Points the relay elsewhere: every open connection is dropped. Pointing it where it
    /// already points changes nothing (no connection is dropped).
    pub fn set(&self, upstream: Upstream) {
        if let Ok(mut c) = self.current.lock() {
            if *c == upstream {
                return;
            }
            *c = upstream;
        }
        self.upstream.send_replace(upstream);
    }

    /// Where it forwards now.
    pub fn upstream(&self) -> Upstream {
        self.current.lock().map_or(Upstream::Cut, |c| *c)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, rx: watch::Receiver<Upstream>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let target = *rx.borrow();
        let Upstream::To(broker) = target else {
            drop(client);
            continue;
        };
        let mut changed = rx.clone();
        changed.mark_unchanged();
        connections.spawn(async move {
            let Ok(server) = TcpStream::connect(broker).await else {
                return;
            };
            let (mut client, mut server) = (client, server);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                // Re-pointed: both sides go down, as when a cable is pulled.
                _ = changed.changed() => {}
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn forwards_and_a_cut_drops_the_connection() {
        let server = echo_server().await;
        let relay = Relay::start(Upstream::To(server)).await.unwrap();
        let mut c = TcpStream::connect(relay.addr()).await.unwrap();
        c.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        // Pointing it where it points keeps the connection.
        relay.set(Upstream::To(server));
        c.write_all(b"yo").await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"yo");
        relay.set(Upstream::Cut);
        let mut rest = Vec::new();
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), c.read_to_end(&mut rest))
            .await
            .expect("the connection closes")
            .unwrap_or(0);
        assert_eq!(n, 0);
        // New connections are closed while cut.
        let mut again = TcpStream::connect(relay.addr()).await.unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(2), again.read(&mut buf))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(got, 0);
        relay.set(Upstream::To(server));
        let mut back = TcpStream::connect(relay.addr()).await.unwrap();
        back.write_all(b"ok").await.unwrap();
        back.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ok");
    }
}
