//! Reading telegrams from a byte stream (serial port via tokio-serial, or TCP as ser2net
//! serves it): a bounded buffer, framing by [`super::check`], and a staleness clock.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::{check, parse, CrcKind, DsmrError, Telegram, MAX_TELEGRAM};

/// Serial settings of a DSMR version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DsmrVersion {
    /// DSMR 2.2: 9600 baud 7E1.
    V2_2,
    /// DSMR 4: 115200 baud 7E1.
    V4,
    /// DSMR 5 (and Fluvius): 115200 baud 8N1.
    V5,
}

impl DsmrVersion {
    /// Baud rate.
    pub fn baud(self) -> u32 {
        match self {
            DsmrVersion::V2_2 => 9600,
            DsmrVersion::V4 | DsmrVersion::V5 => 115_200,
        }
    }

    /// Opens a serial port with this version's settings.
    pub fn open_serial(
        self,
        path: &str,
    ) -> Result<tokio_serial::SerialStream, tokio_serial::Error> {
        use tokio_serial::{DataBits, Parity, StopBits};
        let (bits, parity) = match self {
            DsmrVersion::V2_2 | DsmrVersion::V4 => (DataBits::Seven, Parity::Even),
            DsmrVersion::V5 => (DataBits::Eight, Parity::None),
        };
        let builder = tokio_serial::new(path, self.baud())
            .data_bits(bits)
            .parity(parity)
            .stop_bits(StopBits::One);
        tokio_serial::SerialStream::open(&builder)
    }
}

/// What one read produced.
#[derive(Debug)]
pub enum ReadEvent {
    /// A telegram that passed its CRC.
    Telegram(Telegram),
    /// A telegram that was rejected (bad CRC, malformed); reading goes on.
    Rejected(DsmrError),
    /// No valid telegram within the stale timeout.
    Stale {
        /// Time since the last valid telegram.
        since: Duration,
    },
    /// The stream ended or failed; reopen it.
    Closed(String),
}

/// Turns a byte stream into telegrams.
#[derive(Debug)]
pub struct TelegramReader<R> {
    inner: R,
    buf: Vec<u8>,
    crc: CrcKind,
    stale_after: Duration,
    last_good: Instant,
    /// Bytes thrown away while resynchronising.
    pub discarded_bytes: u64,
}

impl<R: AsyncRead + Unpin> TelegramReader<R> {
    /// A reader; values go stale `stale_after` after the last good telegram.
    pub fn new(inner: R, crc: CrcKind, stale_after: Duration) -> Self {
        TelegramReader {
            inner,
            buf: Vec::with_capacity(4096),
            crc,
            stale_after,
            last_good: Instant::now(),
            discarded_bytes: 0,
        }
    }

    /// The next event.
    pub async fn next(&mut self) -> ReadEvent {
        loop {
            match check(&self.buf) {
                Ok(Some((start, end))) => {
                    self.discarded_bytes += start as u64;
                    let frame: Vec<u8> = self.buf.drain(..end).skip(start).collect();
                    return match parse(&frame, self.crc) {
                        Ok(t) => {
                            self.last_good = Instant::now();
                            ReadEvent::Telegram(t)
                        }
                        Err(e) => ReadEvent::Rejected(e),
                    };
                }
                Ok(None) => {
                    // Keep the buffer bounded: without a '/', nothing before the end matters.
                    if !self.buf.contains(&b'/') {
                        self.discarded_bytes += self.buf.len() as u64;
                        self.buf.clear();
                    }
                }
                Err(e) => {
                    // Drop through the offending '/', resynchronise on the next one.
                    let cut = self
                        .buf
                        .iter()
                        .position(|b| *b == b'/')
                        .map_or(self.buf.len(), |p| p + 1);
                    self.discarded_bytes += cut as u64;
                    self.buf.drain(..cut);
                    return ReadEvent::Rejected(e);
                }
            }
            let deadline = self.last_good + self.stale_after;
            let mut chunk = [0u8; 1024];
            let read = tokio::time::timeout_at(deadline, self.inner.read(&mut chunk)).await;
            match read {
                Err(_) => {
                    let since = self.last_good.elapsed();
                    self.last_good = Instant::now();
                    return ReadEvent::Stale { since };
                }
                Ok(Ok(0)) => return ReadEvent::Closed("end of stream".into()),
                Ok(Ok(n)) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if self.buf.len() > 2 * MAX_TELEGRAM {
                        let cut = self.buf.len() - MAX_TELEGRAM;
                        self.discarded_bytes += cut as u64;
                        self.buf.drain(..cut);
                    }
                }
                Ok(Err(e)) => return ReadEvent::Closed(e.to_string()),
            }
        }
    }
}
