//! A SunSpec grid meter (models 201–204 or 211–214) over Modbus TCP: found by a scan, polled,
//! its power and energy counters fed to the same status and feed as a DSMR or MQTT meter's.
//! A meter that stops answering is looked for again with backoff; while it is away its values
//! age and go stale, as any meter's do.

use std::time::Duration;

use gridlet_drivers::backoff::BackoffPolicy;
use gridlet_drivers::quality::Reading;

use crate::devices::{link_down, link_up, record_meter, update, DeviceTarget, MeterSink};

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
    let place = format!("{} at {}:{}", target.what, target.host, target.port);
    loop {
        let reason = match target.connect().await {
            Ok((mut link, mut device)) => {
                link_up(&sink, &mut reconnect);
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
                            s.last_error =
                                Some(format!("{place}: no valid power: {:?}", r.power_w));
                        }
                    });
                    if p.is_some() {
                        failed = 0;
                    } else {
                        failed += 1;
                        if failed >= FAILED_POLLS_BEFORE_RECONNECT {
                            break format!(
                                "{place}: {failed} polls without a valid power reading ({:?})",
                                r.power_w
                            );
                        }
                    }
                    tokio::time::sleep(poll).await;
                }
            }
            Err(reason) => reason,
        };
        link_down(&sink, &mut reconnect, reason).await;
    }
}
