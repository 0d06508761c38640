//! A SunSpec grid meter (models 201–204 or 211–214) over Modbus TCP: found by a scan, polled,
//! its power and energy counters fed to the same status and feed as a DSMR or MQTT meter's.
//! A meter that stops answering is looked for again with backoff; while it is away its values
//! age and go stale, as any meter's do.

use std::time::Duration;

use gridlet_drivers::backoff::BackoffPolicy;
use gridlet_drivers::quality::Reading;

use crate::devices::{record_meter, update, DeviceTarget, MeterSink};

/// Polls in a row without a valid power reading before the link is dropped and the meter
/// looked for again.
const FAILED_POLLS_BEFORE_RECONNECT: u32 = 3;

pub(crate) async fn run(
    target: DeviceTarget,
    poll: Duration,
    backoff: BackoffPolicy,
    sink: MeterSink,
) {
    let mut reconnect = backoff.schedule();
    loop {
        let reason = match target.connect().await {
            Ok((mut link, mut device)) => {
                reconnect.connected();
                metrics::counter!(crate::metrics::DEVICE_RECONNECTS, "device" => "meter")
                    .increment(1);
                update(&sink, |s| {
                    s.connects += 1;
                    s.connected = true;
                });
                let mut failed = 0;
                loop {
                    let r = device.read_meter(&mut link).await;
                    let now = std::time::Instant::now();
                    let value = |v: &Reading<f64>| v.valid().copied();
                    let (p, imp, exp) =
                        (value(&r.power_w), value(&r.import_wh), value(&r.export_wh));
                    let result = if p.is_some() { "accepted" } else { "rejected" };
                    metrics::counter!(crate::metrics::METER_MESSAGES, "result" => result)
                        .increment(1);
                    record_meter(p, imp, exp);
                    update(&sink, |s| match p {
                        Some(p) => {
                            s.accepted += 1;
                            s.power_w = Some((p, now));
                            if let Some(v) = imp {
                                s.import_wh = Some((v, now));
                            }
                            if let Some(v) = exp {
                                s.export_wh = Some((v, now));
                            }
                        }
                        None => {
                            s.rejected += 1;
                            s.last_error = Some(format!(
                                "{} at {}:{}: no valid power: {:?}",
                                target.what, target.host, target.port, r.power_w
                            ));
                        }
                    });
                    if p.is_some() {
                        failed = 0;
                    } else {
                        failed += 1;
                        if failed >= FAILED_POLLS_BEFORE_RECONNECT {
                            break format!(
                                "{} at {}:{}: {failed} polls without a valid power reading ({:?})",
                                target.what, target.host, target.port, r.power_w
                            );
                        }
                    }
                    tokio::time::sleep(poll).await;
                }
            }
            Err(reason) => reason,
        };
        let delay = reconnect.failed();
        tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "meter link down");
        update(&sink, |s| {
            s.connected = false;
            s.last_error = Some(reason);
        });
        tokio::time::sleep(delay).await;
    }
}
