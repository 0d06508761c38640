//! The device and input rows of the fault matrix, run small (`gridlet device-faults` runs them
//! at full size): nothing from a broken or implausible answer passes as valid.

use std::time::Duration;

use gridlet_hil::device_rows::{
    d1_exceptions, d2_late_replies, d3_corrupted_frames, d4_device_restart, v1_implausible,
};

#[tokio::test]
async fn d1_an_exception_is_never_a_valid_reading() {
    let r = d1_exceptions(100).await.unwrap();
    assert!(r["exceptions"].as_u64().unwrap() >= 100, "{r}");
    assert_eq!(r["wrong_or_admitted_from_exception"], 0, "{r}");
    assert!(r["valid_and_true"].as_u64().unwrap() > 100, "{r}");
    assert_eq!(r["connects"], 1, "exceptions keep the connection: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d2_a_late_reply_is_never_taken_for_the_next_request() {
    let r = d2_late_replies(1_000).await.unwrap();
    assert_eq!(r["misattributed"], 0, "{r}");
    assert!(r["late_or_timed_out"].as_u64().unwrap() > 50, "{r}");
}

#[tokio::test]
async fn d3_a_corrupted_frame_is_rejected_and_the_next_poll_recovers() {
    let r = d3_corrupted_frames(200).await.unwrap();
    assert_eq!(r["accepted_with_wrong_words"], 0, "{r}");
    assert_eq!(r["worst_recovery_polls"], 1, "{r}");
}

#[tokio::test]
async fn d4_a_restarted_meter_goes_stale_then_invalid_and_comes_back() {
    let r = d4_device_restart(Duration::from_secs(2), Duration::from_millis(500))
        .await
        .unwrap();
    assert!(r["not_valid_after_ms"].as_u64().unwrap() < 300, "{r}");
    let no_value = r["no_value_after_ms"].as_u64().unwrap();
    assert!((500..1_200).contains(&no_value), "{r}");
    // Back within one backoff period (1 s doubling, at most 4 s after a 2 s outage).
    assert!(
        r["recovered_after_return_ms"].as_u64().unwrap() <= 4_500,
        "{r}"
    );
}

#[tokio::test]
async fn v1_no_implausible_reading_is_admitted() {
    let r = v1_implausible(200).await.unwrap();
    assert_eq!(r["admitted"], 0, "{r}");
    assert_eq!(r["by_kind"].as_object().unwrap().len(), 4, "{r}");
}
