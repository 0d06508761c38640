//! SunSpec discovery as a sans-IO state machine: it says which registers to read next and is
//! fed the answers, so the same walk runs over any transport and in tests without one.
//!
//! Rule: look for `SunS` at base 40000, then 0, then 50000; walk models by the length the
//! device sends (65 and 66 both occur for the common model); stop at ID 0xFFFF or at the
//! first model that cannot be read; read at most 125 registers per request.

use super::decode::{decode_model, DecodedModel, WordOrder};

/// The base addresses tried, in order (0-based protocol addresses).
pub const BASES: [u16; 3] = [40000, 0, 50000];
/// `SunS` as two registers.
pub const MARKER: [u16; 2] = [0x5375, 0x6E53];
/// The end-of-models id.
pub const END_ID: u16 = 0xFFFF;
/// Most registers in one read request (Modbus limit; pysunspec2 `REQ_COUNT_MAX`).
pub const MAX_READ: u16 = 125;
/// Models walked at most, so a device looping its model chain cannot keep us forever.
pub const MAX_MODELS: usize = 64;

fn chunk_len(have: usize, total: usize) -> usize {
    total.saturating_sub(have).min(usize::from(MAX_READ))
}

/// The next thing the caller must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Read `count` holding registers at `addr` and [`Scanner::feed`] the result.
    Read {
        /// First register (0-based).
        addr: u16,
        /// Number of registers (≤ 125).
        count: u16,
    },
    /// The walk is over.
    Done,
}

/// What a finished walk found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScanResult {
    /// The base where `SunS` was found.
    pub base: u16,
    /// The models, in device order.
    pub models: Vec<DecodedModel>,
    /// Why the walk stopped: `end` (0xFFFF), `unreadable`, `address_space` or `model_limit`.
    #[serde(skip)]
    pub stopped: &'static str,
}

#[derive(Debug, Clone)]
enum State {
    Marker {
        base_index: usize,
    },
    Header {
        addr: u16,
    },
    Body {
        addr: u16,
        regs: Vec<u16>,
        total: usize,
    },
    Done,
}

/// The discovery state machine.
#[derive(Debug, Clone)]
pub struct Scanner {
    state: State,
    base: Option<u16>,
    models: Vec<DecodedModel>,
    order: WordOrder,
    stopped: &'static str,
}

impl Scanner {
    /// A walk that decodes with `order`.
    pub fn new(order: WordOrder) -> Scanner {
        Scanner {
            state: State::Marker { base_index: 0 },
            base: None,
            models: Vec::new(),
            order,
            stopped: "",
        }
    }

    /// What to read next.
    pub fn step(&self) -> Step {
        match &self.state {
            State::Marker { base_index } => match BASES.get(*base_index) {
                Some(addr) => Step::Read {
                    addr: *addr,
                    count: 2,
                },
                None => Step::Done,
            },
            State::Header { addr } => Step::Read {
                addr: *addr,
                count: 2,
            },
            State::Body { addr, regs, total } => {
                let offset = u16::try_from(regs.len()).unwrap_or(u16::MAX);
                Step::Read {
                    addr: addr.saturating_add(offset),
                    count: u16::try_from(chunk_len(regs.len(), *total)).unwrap_or(MAX_READ),
                }
            }
            State::Done => Step::Done,
        }
    }

    fn stop(&mut self, why: &'static str) {
        self.stopped = why;
        self.state = State::Done;
    }

    /// Feeds the answer to the last [`Step::Read`]: the registers, or `None` if the read failed
    /// (exception or transport error).
    pub fn feed(&mut self, answer: Option<&[u16]>) {
        let state = std::mem::replace(&mut self.state, State::Done);
        match state {
            State::Marker { base_index } => match answer {
                Some(regs) if regs == MARKER => {
                    let base = BASES.get(base_index).copied().unwrap_or(0);
                    self.base = Some(base);
                    self.state = State::Header {
                        addr: base.saturating_add(2),
                    };
                }
                _ => {
                    self.state = State::Marker {
                        base_index: base_index + 1,
                    };
                    if base_index + 1 >= BASES.len() {
                        self.stop("not_found");
                    }
                }
            },
            State::Header { addr } => match answer {
                Some(&[id, len]) if id != END_ID && id != 0 => {
                    if u32::from(addr) + 2 + u32::from(len) > u32::from(u16::MAX) {
                        self.stop("address_space");
                    } else {
                        self.state = State::Body {
                            addr,
                            regs: Vec::with_capacity(usize::from(len) + 2),
                            total: usize::from(len) + 2,
                        };
                    }
                }
                Some(&[_, _]) => self.stop("end"),
                _ => self.stop("unreadable"),
            },
            State::Body {
                addr,
                mut regs,
                total,
            } => {
                let Some(chunk) = answer else {
                    return self.stop("unreadable");
                };
                let expected = chunk_len(regs.len(), total);
                if chunk.len() != expected {
                    return self.stop("unreadable");
                }
                regs.extend_from_slice(chunk);
                if regs.len() < total {
                    self.state = State::Body { addr, regs, total };
                    return;
                }
                if let Some(m) = decode_model(addr, &regs, self.order) {
                    self.models.push(m);
                }
                if self.models.len() >= MAX_MODELS {
                    return self.stop("model_limit");
                }
                let next = u32::from(addr) + u32::try_from(total).unwrap_or(u32::MAX);
                match u16::try_from(next) {
                    Ok(next) if next < u16::MAX => self.state = State::Header { addr: next },
                    _ => self.stop("address_space"),
                }
            }
            State::Done => self.state = State::Done,
        }
    }

    /// The result once [`Step::Done`]: `None` if no base held `SunS`.
    pub fn finish(self) -> Option<ScanResult> {
        Some(ScanResult {
            base: self.base?,
            models: self.models,
            stopped: self.stopped,
        })
    }
}
