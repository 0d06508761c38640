//! Fault injection for simulators: exception responses, replies later than the client's
//! timeout, dropped connections, garbage frames and frozen values, drawn deterministically from
//! a seed and a request counter so a failing run can be replayed.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What can go wrong, in percent of requests (or written frames).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultPlan {
    /// Answer with exception 0x04 (server device failure).
    pub exception_percent: u32,
    /// Answer only after `late_by_ms`.
    pub late_percent: u32,
    /// How late a late answer is.
    pub late_by_ms: u64,
    /// Close the connection instead of answering.
    pub drop_percent: u32,
    /// Corrupt one byte of the answer frame's MBAP header (Modbus TCP carries no checksum, so
    /// a flipped data byte could not be detected by any client: plausibility limits exist for
    /// that; header garbage is what a client must catch).
    pub garbage_percent: u32,
    /// Values stop changing (the device keeps answering with its last image).
    pub frozen: bool,
    /// Seed of the draws.
    pub seed: u64,
}

/// Deterministic draws: splitmix64 of (seed, counter).
#[derive(Debug, Default)]
pub struct Dice {
    seed: u64,
    counter: AtomicU64,
}

impl Dice {
    /// Dice with a seed.
    pub fn new(seed: u64) -> Dice {
        Dice {
            seed,
            counter: AtomicU64::new(0),
        }
    }

    /// A number in 0..100.
    pub fn percent(&self) -> u32 {
        (self.next() % 100) as u32
    }

    /// A raw 64-bit draw.
    pub fn next(&self) -> u64 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut z = self.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A stream that corrupts or drops what the simulator writes, per the plan.
#[derive(Debug)]
pub struct FaultyStream<S> {
    inner: S,
    plan: FaultPlan,
    dice: Arc<Dice>,
    broken: bool,
}

impl<S> FaultyStream<S> {
    /// Wraps a stream.
    pub fn new(inner: S, plan: FaultPlan, dice: Arc<Dice>) -> Self {
        FaultyStream {
            inner,
            plan,
            dice,
            broken: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FaultyStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.broken {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FaultyStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.broken {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        if self.plan.drop_percent > 0 && self.dice.percent() < self.plan.drop_percent {
            self.broken = true;
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionAborted.into()));
        }
        if self.plan.garbage_percent > 0
            && self.dice.percent() < self.plan.garbage_percent
            && !buf.is_empty()
        {
            let mut garbled = buf.to_vec();
            let i = (self.dice.next() as usize) % garbled.len().min(7);
            garbled[i] ^= 0x5A;
            // Write the garbled copy; report the original length so the codec moves on.
            return match Pin::new(&mut self.inner).poll_write(cx, &garbled) {
                Poll::Ready(Ok(_)) => Poll::Ready(Ok(buf.len())),
                other => other,
            };
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
