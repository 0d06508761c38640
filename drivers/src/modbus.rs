//! The Modbus link: one owner per physical link (a TCP endpoint or a serial line), unit ids
//! multiplexed over it, requests strictly one at a time with a configurable gap.
//!
//! tokio-modbus has no reconnect logic, and after a timeout a late reply can be matched to the
//! next request (its issue #324). So after **any** timeout, I/O or protocol error the
//! connection is dropped and reopened: a late reply then arrives on a closed socket and can
//! never be taken as the answer to another request. A device's refusal (an exception code)
//! is kept apart from a transport failure: `Result<Result<T, ExceptionCode>, ModbusError>`.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

use crate::backoff::BackoffPolicy;

/// Most registers per read request.
pub const MAX_READ: u16 = 125;
/// Most registers per write request.
pub const MAX_WRITE: u16 = 123;

/// Where the link goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Modbus TCP.
    Tcp(SocketAddr),
    /// Modbus RTU over a serial port.
    Rtu {
        /// Device path, e.g. `/dev/ttyUSB0`.
        path: String,
        /// Baud rate.
        baud: u32,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::Rtu { path, baud } => write!(f, "rtu://{path}@{baud}"),
        }
    }
}

/// Link settings.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Per-request timeout (and connect timeout).
    pub timeout: Duration,
    /// Pause between the end of one request and the start of the next.
    pub gap: Duration,
    /// Reconnect backoff.
    pub backoff: BackoffPolicy,
    /// A cheap read `(unit, address)` sent once before normal traffic after a failure.
    pub probe: Option<(u8, u16)>,
    /// The link's name in metrics (e.g. `battery`); the endpoint if empty.
    pub name: String,
}

impl LinkConfig {
    /// Defaults: 1 s timeout, no gap, 1 s → 60 s backoff, no probe.
    pub fn new(endpoint: Endpoint) -> LinkConfig {
        LinkConfig {
            endpoint,
            timeout: Duration::from_secs(1),
            gap: Duration::ZERO,
            backoff: BackoffPolicy::default(),
            probe: None,
            name: String::new(),
        }
    }

    /// Names the link in metrics.
    pub fn named(mut self, name: &str) -> LinkConfig {
        self.name = name.to_owned();
        self
    }
}

/// Metric handles of one link, resolved once (no label formatting on the request path).
struct LinkMetrics {
    ok: metrics::Counter,
    exception: metrics::Counter,
    timeout: metrics::Counter,
    transport: metrics::Counter,
    connects: metrics::Counter,
    connect_failures: metrics::Counter,
    duration: metrics::Histogram,
    up: metrics::Gauge,
    backoff: metrics::Gauge,
}

impl LinkMetrics {
    fn new(cfg: &LinkConfig) -> LinkMetrics {
        let link = if cfg.name.is_empty() {
            cfg.endpoint.to_string()
        } else {
            cfg.name.clone()
        };
        let requests = |result: &'static str| metrics::counter!(crate::metrics::MODBUS_REQUESTS, "link" => link.clone(), "result" => result);
        LinkMetrics {
            ok: requests("ok"),
            exception: requests("exception"),
            timeout: requests("timeout"),
            transport: requests("transport_error"),
            connects: metrics::counter!(crate::metrics::MODBUS_CONNECTS, "link" => link.clone()),
            connect_failures: metrics::counter!(crate::metrics::MODBUS_CONNECT_FAILURES, "link" => link.clone()),
            duration: metrics::histogram!(crate::metrics::MODBUS_REQUEST_SECONDS, "link" => link.clone()),
            up: metrics::gauge!(crate::metrics::MODBUS_UP, "link" => link.clone()),
            backoff: metrics::gauge!(crate::metrics::MODBUS_BACKOFF_SECONDS, "link" => link),
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// No TCP connection within the timeout.
    #[error("connect timed out after {after_ms} ms")]
    TimedOut {
        /// The timeout.
        after_ms: u64,
    },
    /// The TCP connect failed (refused, unreachable, …).
    #[error("{0}")]
    Tcp(String),
    /// The serial port could not be opened.
    #[error("serial port: {0}")]
    Serial(String),
}

/// A transport failure (the device did not answer properly). Device refusals are
/// [`ExceptionCode`]s, one level in.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ModbusError {
    /// Connecting failed.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: ConnectFailure,
    },
    /// No answer within the timeout; the connection was dropped.
    #[error("no answer from {endpoint} within {timeout_ms} ms")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The connection failed or the frame was garbled; the connection was dropped.
    #[error("transport error on {endpoint}: {reason}")]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The link is backing off after repeated failures.
    #[error("{endpoint} is backing off, next attempt in {retry_in_ms} ms")]
    BackingOff {
        /// The endpoint.
        endpoint: String,
        /// Time until the next attempt.
        retry_in_ms: u64,
    },
    /// The answer had the wrong number of registers.
    #[error("{endpoint} answered {got} registers, {asked} asked")]
    WrongLength {
        /// The endpoint.
        endpoint: String,
        /// Registers asked.
        asked: u16,
        /// Registers received.
        got: usize,
    },
}

/// Outcome of one request: transport failure outside, device exception inside.
pub type ModbusResult<T> = Result<Result<T, ExceptionCode>, ModbusError>;

/// Counters an actor turns into metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Requests answered normally.
    pub ok: u64,
    /// Requests answered with an exception.
    pub exceptions: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Requests failed by the transport (I/O, garbled frames, wrong length).
    pub transport_errors: u64,
    /// Connections opened (the first one included).
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
}

/// One Modbus link and its connection state.
pub struct ModbusLink {
    cfg: LinkConfig,
    ctx: Option<Context>,
    reconnect: crate::backoff::Reconnect,
    retry_at: Option<Instant>,
    next_request_at: Instant,
    stats: LinkStats,
    metrics: LinkMetrics,
}

impl std::fmt::Debug for ModbusLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusLink")
            .field("endpoint", &self.cfg.endpoint)
            .field("connected", &self.ctx.is_some())
            .field("failures", &self.reconnect.failures())
            .finish()
    }
}

enum Op<'a> {
    Read(u16, u16),
    Write(u16, &'a [u16]),
}

impl ModbusLink {
    /// A link that connects on first use.
    pub fn new(cfg: LinkConfig) -> ModbusLink {
        ModbusLink {
            ctx: None,
            reconnect: cfg.backoff.schedule(),
            retry_at: None,
            next_request_at: Instant::now(),
            stats: LinkStats::default(),
            metrics: LinkMetrics::new(&cfg),
            cfg,
        }
    }

    /// The settings.
    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    /// Counters so far.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Consecutive failures (0 when healthy).
    pub fn failures(&self) -> u32 {
        self.reconnect.failures()
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        self.ctx.is_some()
    }

    /// The current backoff wait (zero when not backing off).
    pub fn backoff_remaining(&self) -> Duration {
        self.retry_at.map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(Instant::now())
        })
    }

    /// The endpoint as text, for errors only (not built on the request path).
    fn endpoint(&self) -> String {
        self.cfg.endpoint.to_string()
    }

    fn fail(&mut self) {
        self.ctx = None;
        let delay = self.reconnect.failed();
        self.retry_at = (!delay.is_zero()).then(|| Instant::now() + delay);
        self.metrics.up.set(0.0);
        self.metrics.backoff.set(delay.as_secs_f64());
    }

    fn healthy(&mut self) {
        self.reconnect.connected();
        self.retry_at = None;
        self.metrics.up.set(1.0);
        self.metrics.backoff.set(0.0);
    }

    async fn open(endpoint: &Endpoint, limit: Duration) -> Result<Context, ConnectFailure> {
        match endpoint {
            Endpoint::Tcp(addr) => {
                let stream = timeout(limit, tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| ConnectFailure::TimedOut {
                        after_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                    })?
                    .map_err(|e| ConnectFailure::Tcp(e.to_string()))?;
                let _ = stream.set_nodelay(true);
                Ok(tokio_modbus::client::tcp::attach(stream))
            }
            Endpoint::Rtu { path, baud } => {
                let builder = tokio_serial::new(path, *baud);
                let port = tokio_serial::SerialStream::open(&builder)
                    .map_err(|e| ConnectFailure::Serial(e.to_string()))?;
                Ok(tokio_modbus::client::rtu::attach(port))
            }
        }
    }

    async fn ensure_connected(&mut self) -> Result<(), ModbusError> {
        if self.ctx.is_some() {
            return Ok(());
        }
        if let Some(at) = self.retry_at {
            let now = Instant::now();
            if at > now {
                return Err(ModbusError::BackingOff {
                    endpoint: self.endpoint(),
                    retry_in_ms: u64::try_from((at - now).as_millis()).unwrap_or(u64::MAX),
                });
            }
        }
        match Self::open(&self.cfg.endpoint, self.cfg.timeout).await {
            Ok(ctx) => {
                self.stats.connects += 1;
                self.metrics.connects.increment(1);
                self.ctx = Some(ctx);
                if self.failures() > 0 {
                    if let Some((unit, addr)) = self.cfg.probe {
                        // One cheap request decides whether the device is back.
                        match self.exchange(unit, Op::Read(addr, 1)).await {
                            Ok(_) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Ok(())
            }
            Err(reason) => {
                self.stats.connect_failures += 1;
                self.metrics.connect_failures.increment(1);
                self.fail();
                Err(ModbusError::Connect {
                    endpoint: self.endpoint(),
                    reason,
                })
            }
        }
    }

    async fn exchange(&mut self, unit: u8, op: Op<'_>) -> ModbusResult<Vec<u16>> {
        // An elapsed tokio timer still waits for the next timer tick (~1 ms): only sleep when
        // a gap is actually due.
        if self.next_request_at > Instant::now() {
            sleep_until(self.next_request_at).await;
        }
        let limit = self.cfg.timeout;
        let Some(ctx) = self.ctx.as_mut() else {
            return Err(ModbusError::Transport {
                endpoint: self.endpoint(),
                reason: "not connected".into(),
            });
        };
        ctx.set_slave(Slave(unit));
        let started = Instant::now();
        let outcome = match op {
            Op::Read(addr, count) => timeout(limit, ctx.read_holding_registers(addr, count))
                .await
                .map(|r| r.map(|inner| inner.map(|words| (words, Some(count))))),
            Op::Write(addr, words) => timeout(limit, ctx.write_multiple_registers(addr, words))
                .await
                .map(|r| r.map(|inner| inner.map(|()| (Vec::new(), None)))),
        };
        self.next_request_at = Instant::now() + self.cfg.gap;
        self.metrics
            .duration
            .record(started.elapsed().as_secs_f64());
        match outcome {
            Err(_elapsed) => {
                self.stats.timeouts += 1;
                self.metrics.timeout.increment(1);
                self.fail();
                Err(ModbusError::Timeout {
                    endpoint: self.endpoint(),
                    timeout_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                })
            }
            Ok(Err(e)) => {
                self.stats.transport_errors += 1;
                self.metrics.transport.increment(1);
                self.fail();
                Err(ModbusError::Transport {
                    endpoint: self.endpoint(),
                    reason: e.to_string(),
                })
            }
            Ok(Ok(Err(code))) => {
                self.stats.exceptions += 1;
                self.metrics.exception.increment(1);
                self.healthy();
                Ok(Err(code))
            }
            Ok(Ok(Ok((words, asked)))) => {
                if let Some(asked) = asked {
                    if words.len() != usize::from(asked) {
                        self.stats.transport_errors += 1;
                        self.metrics.transport.increment(1);
                        self.fail();
                        return Err(ModbusError::WrongLength {
                            endpoint: self.endpoint(),
                            asked,
                            got: words.len(),
                        });
                    }
                }
                self.stats.ok += 1;
                self.metrics.ok.increment(1);
                self.healthy();
                Ok(Ok(words))
            }
        }
    }

    /// Reads holding registers, in requests of at most 125.
    pub async fn read_holding(
        &mut self,
        unit: u8,
        addr: u16,
        count: u16,
    ) -> ModbusResult<Vec<u16>> {
        let mut out = Vec::with_capacity(usize::from(count));
        let mut done = 0u16;
        while done < count {
            let n = (count - done).min(MAX_READ);
            self.ensure_connected().await?;
            match self
                .exchange(unit, Op::Read(addr.wrapping_add(done), n))
                .await?
            {
                Ok(words) => out.extend(words),
                Err(code) => return Ok(Err(code)),
            }
            done += n;
        }
        Ok(Ok(out))
    }

    /// Writes holding registers, in requests of at most 123.
    pub async fn write_registers(
        &mut self,
        unit: u8,
        addr: u16,
        words: &[u16],
    ) -> ModbusResult<()> {
        for (i, chunk) in words.chunks(usize::from(MAX_WRITE)).enumerate() {
            let offset = u16::try_from(i * usize::from(MAX_WRITE)).unwrap_or(u16::MAX);
            self.ensure_connected().await?;
            if let Err(code) = self
                .exchange(unit, Op::Write(addr.wrapping_add(offset), chunk))
                .await?
            {
                return Ok(Err(code));
            }
        }
        Ok(Ok(()))
    }

    /// Closes the connection (the next request reconnects).
    pub async fn disconnect(&mut self) {
        if let Some(mut ctx) = self.ctx.take() {
            use tokio_modbus::client::Client;
            let _ = ctx.disconnect().await;
        }
    }
}

/// Runs the SunSpec discovery walk over a link.
pub async fn sunspec_scan(
    link: &mut ModbusLink,
    unit: u8,
    order: crate::sunspec::WordOrder,
) -> Result<Option<crate::sunspec::ScanResult>, ModbusError> {
    use crate::sunspec::{Scanner, Step};
    let mut scanner = Scanner::new(order);
    let mut answered = false;
    let mut last_error = None;
    loop {
        match scanner.step() {
            Step::Done => break,
            Step::Read { addr, count } => match link.read_holding(unit, addr, count).await {
                Ok(Ok(words)) => {
                    answered = true;
                    scanner.feed(Some(&words));
                }
                Ok(Err(_exception)) => {
                    answered = true;
                    scanner.feed(None);
                }
                Err(e) => {
                    last_error = Some(e);
                    scanner.feed(None);
                }
            },
        }
    }
    match (scanner.finish(), last_error) {
        (Some(found), _) => Ok(Some(found)),
        (None, Some(e)) if !answered => Err(e),
        (None, _) => Ok(None),
    }
}
