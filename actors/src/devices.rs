//! Device actors for the PV inverter (SunSpec over Modbus) and the grid meter (DSMR P1 on a
//! serial port or over TCP, or an MQTT meter). One actor per link; each polls or reads, keeps
//! the last valid value with its time, and never reports a value it did not receive: readers
//! (the market strategy, the battery's safe state, the API) ask for a value no older than they
//! accept.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use gridlet_drivers::backoff::BackoffPolicy;
use gridlet_drivers::device::SunSpecDevice;
use gridlet_drivers::dsmr::reader::{DsmrVersion, ReadEvent, TelegramReader};
use gridlet_drivers::dsmr::{CrcKind, Telegram};
use gridlet_drivers::modbus::ModbusLink;
use gridlet_drivers::mqtt_meter::{self, MqttMeterConfig};

/// A value and when it was received.
pub type Stamped = Option<(f64, Instant)>;

/// A grid meter's latest values, as the meter actor sends them to the actors that act on them
/// (battery safe state, market strategy, interval readings).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MeterReadings {
    /// Grid power, W (positive = import).
    pub power_w: Stamped,
    /// Imported energy, Wh.
    pub import_wh: Stamped,
    /// Exported energy, Wh.
    pub export_wh: Stamped,
}

/// The meter's feed: a single-slot channel holding its latest readings.
pub type MeterFeed = tokio::sync::watch::Receiver<MeterReadings>;

/// Where a meter's task writes: the status (for the API) and the feed (for the actors).
#[derive(Clone)]
pub(crate) struct MeterSink {
    status: Arc<Mutex<MeterStatus>>,
    feed: Arc<tokio::sync::watch::Sender<MeterReadings>>,
}

/// The value if it is no older than `max_age`.
pub fn fresh(v: Stamped, max_age: Duration) -> Option<f64> {
    v.filter(|(_, at)| at.elapsed() <= max_age).map(|(x, _)| x)
}

/// What the PV actor last saw.
#[derive(Debug, Clone, Default)]
pub struct PvStatus {
    /// AC power, W.
    pub power_w: Stamped,
    /// Lifetime energy, Wh.
    pub energy_wh: Stamped,
    /// Polls done.
    pub polls: u64,
    /// Polls that produced no valid power.
    pub failed_polls: u64,
    /// The last problem.
    pub last_error: Option<String>,
}

/// Where a SunSpec device is expected, for an actor that finds it itself (a gateway often
/// boots before its inverter; it must run, and say the device is down, meanwhile).
#[derive(Debug, Clone)]
pub struct DeviceTarget {
    /// What it is, for errors ("PV inverter").
    pub what: String,
    /// The Modbus link's name in metrics (`pv`, `battery`).
    pub link: String,
    /// Host name or address.
    pub host: String,
    /// Modbus TCP port.
    pub port: u16,
    /// Device settings (unit id, word order, limits).
    pub settings: gridlet_drivers::device::DeviceSettings,
}

impl DeviceTarget {
    /// One attempt to reach and scan the device; why it failed, naming device and address.
    pub async fn connect(&self) -> Result<(ModbusLink, SunSpecDevice), String> {
        let place = format!("{} at {}:{}", self.what, self.host, self.port);
        let addr = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("{place}: cannot resolve: {e}"))?
            .next()
            .ok_or_else(|| format!("{place}: no address"))?;
        let mut link = ModbusLink::new(
            gridlet_drivers::modbus::LinkConfig::new(gridlet_drivers::modbus::Endpoint::Tcp(addr))
                .named(&self.link),
        );
        match SunSpecDevice::discover(&mut link, self.settings.clone()).await {
            Ok(Some(device)) => {
                tracing::info!(what = %self.what, models = ?device.models().iter().map(|m| m.id).collect::<Vec<_>>(), "device found");
                Ok((link, device))
            }
            Ok(None) => Err(format!(
                "{place}: no SunSpec marker at unit {}",
                self.settings.unit
            )),
            Err(e) => Err(format!("{place}: {e}")),
        }
    }
}

/// A device found, or still being looked for.
enum DeviceLink {
    Found(Box<(ModbusLink, SunSpecDevice)>),
    Searching {
        target: DeviceTarget,
        reconnect: Box<gridlet_drivers::backoff::Reconnect>,
        next_try: Instant,
    },
}

impl DeviceLink {
    /// One discovery attempt when it is due: `Err(Some(reason))` names device and address,
    /// `Err(None)` means the next attempt is not due yet.
    async fn try_discover(&mut self) -> Result<(), Option<String>> {
        let DeviceLink::Searching {
            target,
            reconnect,
            next_try,
        } = self
        else {
            return Ok(());
        };
        if Instant::now() < *next_try {
            return Err(None);
        }
        let found = target.connect().await;
        match found {
            Ok(found) => {
                *self = DeviceLink::Found(Box::new(found));
                Ok(())
            }
            Err(reason) => {
                let delay = reconnect.failed();
                *next_try = Instant::now() + delay;
                Err(Some(format!(
                    "{reason} (next try in {} ms)",
                    delay.as_millis()
                )))
            }
        }
    }
}

/// The PV inverter actor.
pub struct PvInverter {
    io: Arc<tokio::sync::Mutex<DeviceLink>>,
    poll: Duration,
    status: Arc<Mutex<PvStatus>>,
    polling: bool,
}

impl PvInverter {
    /// An inverter actor over a discovered device.
    pub fn new(
        link: ModbusLink,
        device: SunSpecDevice,
        poll: Duration,
        status: Arc<Mutex<PvStatus>>,
    ) -> Self {
        PvInverter {
            io: Arc::new(tokio::sync::Mutex::new(DeviceLink::Found(Box::new((
                link, device,
            ))))),
            poll,
            status,
            polling: false,
        }
    }

    /// An inverter actor that finds its device itself, retrying with backoff; until then it
    /// reports the inverter down (and why) while the rest of the gateway runs.
    pub fn discovering(target: DeviceTarget, poll: Duration, status: Arc<Mutex<PvStatus>>) -> Self {
        PvInverter {
            io: Arc::new(tokio::sync::Mutex::new(DeviceLink::Searching {
                target,
                reconnect: Box::new(
                    BackoffPolicy {
                        initial: Duration::from_millis(500),
                        max: Duration::from_secs(30),
                    }
                    .schedule(),
                ),
                next_try: Instant::now(),
            })),
            poll,
            status,
            polling: false,
        }
    }

    fn poll_once(&mut self, ctx: &mut Context<Self>) {
        if self.polling {
            return;
        }
        self.polling = true;
        let io = self.io.clone();
        let fut = async move {
            let mut io = io.lock().await;
            io.try_discover().await?;
            match &mut *io {
                DeviceLink::Found(found) => {
                    let (link, device) = &mut **found;
                    Ok(device.read_pv(link).await)
                }
                DeviceLink::Searching { .. } => Err(None),
            }
        };
        ctx.spawn(fut.into_actor(self).map(|r, act, _| {
            act.polling = false;
            let now = Instant::now();
            use crate::metrics as m;
            let r = match r {
                Ok(r) => r,
                Err(failed) => {
                    metrics::gauge!(m::DEVICE_UP, "device" => "pv").set(0.0);
                    if let Some(reason) = failed {
                        tracing::warn!(%reason, "PV inverter not available");
                        if let Ok(mut s) = act.status.lock() {
                            s.last_error = Some(reason);
                        }
                    }
                    return;
                }
            };
            let ok = r.power_w.is_valid();
            metrics::counter!(m::DEVICE_POLLS, "device" => "pv", "result" => if ok { "ok" } else { "error" })
                .increment(1);
            metrics::gauge!(m::DEVICE_UP, "device" => "pv").set(if ok { 1.0 } else { 0.0 });
            if let Some(p) = r.power_w.valid() {
                metrics::gauge!(m::PV_POWER).set(*p);
                metrics::gauge!(m::DEVICE_LAST_VALUE, "device" => "pv").set(m::unix_now());
            }
            if let Some(e) = r.energy_wh.valid() {
                metrics::gauge!(m::PV_ENERGY).set(*e);
            }
            if let Ok(mut s) = act.status.lock() {
                s.polls += 1;
                match r.power_w.valid() {
                    Some(p) => s.power_w = Some((*p, now)),
                    None => {
                        s.failed_polls += 1;
                        s.last_error = Some(format!("{:?}", r.power_w));
                    }
                }
                if let Some(e) = r.energy_wh.valid() {
                    s.energy_wh = Some((*e, now));
                }
            }
        }));
    }
}

impl Actor for PvInverter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.poll, |act, ctx| act.poll_once(ctx));
    }
}

impl Supervised for PvInverter {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.polling = false;
        tracing::warn!("PV inverter actor restarting");
    }
}

/// Where the grid meter's data comes from.
#[derive(Debug, Clone)]
pub enum MeterSource {
    /// DSMR P1 on a serial port.
    DsmrSerial {
        /// Device path.
        path: String,
        /// Protocol version (baud, framing, CRC).
        version: DsmrVersion,
    },
    /// DSMR P1 over TCP (ser2net).
    DsmrTcp {
        /// `host:port`.
        addr: String,
    },
    /// An MQTT meter (Tasmota, Shelly).
    Mqtt(MqttMeterConfig),
    /// A SunSpec meter (models 201–204, or 211–214) over Modbus TCP, polled.
    Sunspec {
        /// Where it is.
        target: DeviceTarget,
        /// Poll period.
        poll: Duration,
    },
}

/// What the meter actor last saw. Power positive = import.
#[derive(Debug, Clone, Default)]
pub struct MeterStatus {
    /// Grid power, W.
    pub power_w: Stamped,
    /// Imported energy, Wh.
    pub import_wh: Stamped,
    /// Exported energy, Wh.
    pub export_wh: Stamped,
    /// Telegrams or messages accepted.
    pub accepted: u64,
    /// Telegrams or messages rejected (bad CRC, malformed).
    pub rejected: u64,
    /// Times the link was (re)opened.
    pub connects: u64,
    /// Whether the link is up.
    pub connected: bool,
    /// The last problem.
    pub last_error: Option<String>,
}

/// Grid power (W, + = import) and energy counters (Wh) of a DSMR telegram.
pub fn dsmr_values(t: &Telegram) -> (Option<f64>, Option<f64>, Option<f64>) {
    let sum = |a: &str, b: &str| match (t.number(a), t.number(b)) {
        (Some(x), Some(y)) => Some((x + y) * 1000.0),
        _ => None,
    };
    let power = match (t.number("1-0:1.7.0"), t.number("1-0:2.7.0")) {
        (Some(imp), Some(exp)) => Some((imp - exp) * 1000.0),
        (Some(imp), None) => Some(imp * 1000.0),
        _ => None,
    };
    (
        power,
        sum("1-0:1.8.1", "1-0:1.8.2"),
        sum("1-0:2.8.1", "1-0:2.8.2"),
    )
}

/// The grid meter actor.
pub struct GridMeter {
    source: MeterSource,
    stale_after: Duration,
    backoff: BackoffPolicy,
    sink: MeterSink,
}

impl GridMeter {
    /// A meter actor reading `source`.
    pub fn new(
        source: MeterSource,
        stale_after: Duration,
        backoff: BackoffPolicy,
        status: Arc<Mutex<MeterStatus>>,
    ) -> Self {
        GridMeter {
            source,
            stale_after,
            backoff,
            sink: MeterSink {
                status,
                feed: Arc::new(tokio::sync::watch::channel(MeterReadings::default()).0),
            },
        }
    }

    /// A receiver of this meter's readings.
    pub fn feed(&self) -> MeterFeed {
        self.sink.feed.subscribe()
    }
}

pub(crate) fn update(sink: &MeterSink, f: impl FnOnce(&mut MeterStatus)) {
    if let Ok(mut s) = sink.status.lock() {
        f(&mut s);
        let readings = MeterReadings {
            power_w: s.power_w,
            import_wh: s.import_wh,
            export_wh: s.export_wh,
        };
        sink.feed.send_if_modified(|old| {
            let changed = *old != readings;
            *old = readings;
            changed
        });
    }
}

async fn read_dsmr<R: tokio::io::AsyncRead + Unpin>(
    stream: R,
    stale_after: Duration,
    status: &MeterSink,
) -> String {
    let mut reader = TelegramReader::new(stream, CrcKind::Arc, stale_after);
    loop {
        match reader.next().await {
            ReadEvent::Telegram(t) => {
                let now = Instant::now();
                let (p, imp, exp) = dsmr_values(&t);
                record_meter(p, imp, exp);
                metrics::counter!(crate::metrics::METER_MESSAGES, "result" => "accepted")
                    .increment(1);
                update(status, |s| {
                    s.accepted += 1;
                    if let Some(p) = p {
                        s.power_w = Some((p, now));
                    }
                    if let Some(v) = imp {
                        s.import_wh = Some((v, now));
                    }
                    if let Some(v) = exp {
                        s.export_wh = Some((v, now));
                    }
                });
            }
            ReadEvent::Rejected(e) => {
                tracing::debug!(%e, "DSMR telegram rejected");
                metrics::counter!(crate::metrics::METER_MESSAGES, "result" => "rejected")
                    .increment(1);
                update(status, |s| {
                    s.rejected += 1;
                    s.last_error = Some(e.to_string());
                });
            }
            ReadEvent::Stale { since } => {
                tracing::warn!(?since, "no valid DSMR telegram");
            }
            ReadEvent::Closed(reason) => return reason,
        }
    }
}

async fn run_dsmr(
    source: MeterSource,
    stale_after: Duration,
    backoff: BackoffPolicy,
    status: MeterSink,
) {
    let mut reconnect = backoff.schedule();
    loop {
        let opened: Result<Box<dyn tokio::io::AsyncRead + Unpin + Send>, String> = match &source {
            MeterSource::DsmrSerial { path, version } => version
                .open_serial(path)
                .map(|p| Box::new(p) as _)
                .map_err(|e| format!("cannot open {path}: {e}")),
            MeterSource::DsmrTcp { addr } => tokio::net::TcpStream::connect(addr.as_str())
                .await
                .map(|s| Box::new(s) as _)
                .map_err(|e| format!("cannot connect to {addr}: {e}")),
            MeterSource::Mqtt(_) | MeterSource::Sunspec { .. } => return,
        };
        let reason = match opened {
            Ok(stream) => {
                link_up(&status, &mut reconnect);
                read_dsmr(stream, stale_after, &status).await
            }
            Err(reason) => reason,
        };
        link_down(&status, &mut reconnect, reason).await;
    }
}

/// A meter link (re)opened: counted and shown as connected.
pub(crate) fn link_up(sink: &MeterSink, reconnect: &mut gridlet_drivers::backoff::Reconnect) {
    reconnect.connected();
    metrics::counter!(crate::metrics::DEVICE_RECONNECTS, "device" => "meter").increment(1);
    update(sink, |s| {
        s.connects += 1;
        s.connected = true;
    });
}

/// A meter link lost: shown with its reason, then the backoff's wait before the next try.
pub(crate) async fn link_down(
    sink: &MeterSink,
    reconnect: &mut gridlet_drivers::backoff::Reconnect,
    reason: String,
) {
    let delay = reconnect.failed();
    tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "meter link down");
    update(sink, |s| {
        s.connected = false;
        s.last_error = Some(reason);
    });
    tokio::time::sleep(delay).await;
}

async fn run_mqtt(cfg: MqttMeterConfig, status: MeterSink) {
    let (mut rx, _task) = mqtt_meter::spawn(cfg);
    let (mut accepted, mut rejected, mut connects) = (0u64, 0u64, 0u64);
    while rx.changed().await.is_ok() {
        let m = rx.borrow_and_update().clone();
        use crate::metrics as mm;
        if m.messages > accepted {
            metrics::counter!(mm::METER_MESSAGES, "result" => "accepted")
                .increment(m.messages - accepted);
            accepted = m.messages;
            record_meter(
                m.power_w.map(|v| v.0),
                m.import_wh.map(|v| v.0),
                m.export_wh.map(|v| v.0),
            );
        }
        if m.rejected > rejected {
            metrics::counter!(mm::METER_MESSAGES, "result" => "rejected")
                .increment(m.rejected - rejected);
            rejected = m.rejected;
        }
        if m.connects > connects {
            metrics::counter!(mm::DEVICE_RECONNECTS, "device" => "meter")
                .increment(m.connects - connects);
            connects = m.connects;
        }
        update(&status, |s| {
            let stamp =
                |v: Option<(f64, tokio::time::Instant)>| v.map(|(x, at)| (x, at.into_std()));
            s.power_w = stamp(m.power_w);
            s.import_wh = stamp(m.import_wh);
            s.export_wh = stamp(m.export_wh);
            s.accepted = m.messages;
            s.rejected = m.rejected;
            s.connects = m.connects;
            s.connected = m.connected;
            s.last_error = m.last_error.clone();
        });
    }
}

/// Exports one meter reading.
pub(crate) fn record_meter(power: Option<f64>, import: Option<f64>, export: Option<f64>) {
    use crate::metrics as m;
    if let Some(p) = power {
        metrics::gauge!(m::GRID_POWER).set(p);
        metrics::gauge!(m::DEVICE_LAST_VALUE, "device" => "meter").set(m::unix_now());
    }
    if let Some(v) = import {
        metrics::gauge!(m::GRID_IMPORT).set(v);
    }
    if let Some(v) = export {
        metrics::gauge!(m::GRID_EXPORT).set(v);
    }
}

impl Actor for GridMeter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Freshness is a matter of time, not of messages: evaluated every second.
        let stale_after = self.stale_after;
        ctx.run_interval(Duration::from_secs(1), move |act, _| {
            let up = act
                .sink
                .status
                .lock()
                .map(|s| fresh(s.power_w, stale_after).is_some())
                .unwrap_or(false);
            metrics::gauge!(crate::metrics::DEVICE_UP, "device" => "meter").set(if up {
                1.0
            } else {
                0.0
            });
        });
        let status = self.sink.clone();
        match self.source.clone() {
            MeterSource::Mqtt(cfg) => {
                ctx.spawn(run_mqtt(cfg, status).into_actor(self));
            }
            MeterSource::Sunspec { target, poll } => {
                ctx.spawn(
                    crate::sunspec_meter::run(target, poll, self.backoff, status).into_actor(self),
                );
            }
            source => {
                ctx.spawn(
                    run_dsmr(source, self.stale_after, self.backoff, status).into_actor(self),
                );
            }
        }
    }
}

impl Supervised for GridMeter {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("grid meter actor restarting");
    }
}
