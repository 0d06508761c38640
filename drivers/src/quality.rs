//! Value quality: every reading says whether it can be used, and plausibility limits turn a
//! wrong value into an invalid one instead of passing it on.

use std::time::Duration;

use serde::Serialize;

/// The quality of a reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "quality", rename_all = "snake_case")]
pub enum Reading<T> {
    /// A fresh, plausible value.
    Valid {
        /// The value.
        value: T,
    },
    /// The device does not implement this point.
    NotImplemented,
    /// The last good value is too old to act on.
    Stale {
        /// The last value.
        value: T,
        /// Its age.
        #[serde(serialize_with = "secs")]
        age: Duration,
    },
    /// The device could not be reached or did not answer (a transport failure).
    CommError {
        /// What went wrong.
        reason: String,
    },
    /// The device answered with a Modbus exception: it is there, but refused the request.
    Refused {
        /// The exception code's name (e.g. `ServerDeviceBusy`).
        exception: String,
    },
    /// The device answered, but the value breaks a plausibility limit.
    Implausible {
        /// Which limit.
        reason: String,
    },
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl<T> Reading<T> {
    /// The value, only if valid.
    pub fn valid(&self) -> Option<&T> {
        match self {
            Reading::Valid { value } => Some(value),
            _ => None,
        }
    }

    /// Whether a control decision may use it.
    pub fn is_valid(&self) -> bool {
        matches!(self, Reading::Valid { .. })
    }
}

/// Why a value breaks a plausibility limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ImplausibleError {
    /// A state of charge outside 0–100 %.
    #[error("state of charge {soc_pct} % outside 0–100 %")]
    SocOutOfRange {
        /// The value read.
        soc_pct: f64,
    },
    /// A power beyond what the device can do.
    #[error("power {power_w} W exceeds 1.2 × nameplate {nameplate_w} W")]
    PowerAboveNameplate {
        /// The value read.
        power_w: f64,
        /// The device's nameplate.
        nameplate_w: f64,
    },
    /// Not a finite number (an infinite float register, or a scale factor beyond f64).
    #[error("{value} is not a finite number")]
    NotFinite {
        /// The value read.
        value: f64,
    },
    /// An energy counter that went back.
    #[error("energy counter went back from {last} to {value}")]
    CounterWentBack {
        /// The last accepted value.
        last: f64,
        /// The value read.
        value: f64,
    },
}

/// Plausibility limits for one device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Nameplate power, W: |power| above 1.2 × this is implausible.
    pub nameplate_w: Option<f64>,
}

/// A reading must be a finite number before any other check: an infinite power would pass a
/// missing nameplate, and an infinite counter would block every later value as going back.
pub fn check_finite(value: f64) -> Result<f64, ImplausibleError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ImplausibleError::NotFinite { value })
    }
}

impl Limits {
    /// State of charge must lie in 0–100 %.
    pub fn check_soc(&self, soc_pct: f64) -> Result<f64, ImplausibleError> {
        if (0.0..=100.0).contains(&soc_pct) {
            Ok(soc_pct)
        } else {
            Err(ImplausibleError::SocOutOfRange { soc_pct })
        }
    }

    /// |power| must stay within 1.2 × nameplate.
    pub fn check_power(&self, power_w: f64) -> Result<f64, ImplausibleError> {
        match self.nameplate_w {
            Some(nameplate_w) if power_w.abs() > 1.2 * nameplate_w => {
                Err(ImplausibleError::PowerAboveNameplate {
                    power_w,
                    nameplate_w,
                })
            }
            _ => Ok(power_w),
        }
    }
}

/// An energy counter that must never decrease.
#[derive(Debug, Clone, Default)]
pub struct MonotonicCounter {
    last: Option<f64>,
}

impl MonotonicCounter {
    /// Accepts `value` if it is not below the last accepted one.
    pub fn check(&mut self, value: f64) -> Result<f64, ImplausibleError> {
        match self.last {
            Some(last) if value < last => Err(ImplausibleError::CounterWentBack { last, value }),
            _ => {
                self.last = Some(value);
                Ok(value)
            }
        }
    }
}

/// Grid power sign convention of the whole project: positive = import from the grid; battery
/// power positive = discharge. A device wired or configured the other way sets `invert`.
pub fn apply_sign(power_w: f64, invert: bool) -> f64 {
    if invert {
        -power_w
    } else {
        power_w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_reject_implausible_values() {
        let l = Limits {
            nameplate_w: Some(5000.0),
        };
        assert!(l.check_soc(101.0).is_err());
        assert!(l.check_soc(-0.1).is_err());
        assert_eq!(l.check_soc(55.0), Ok(55.0));
        assert!(l.check_power(6001.0).is_err());
        assert!(l.check_power(-6001.0).is_err());
        assert_eq!(l.check_power(5999.0), Ok(5999.0));
        let mut c = MonotonicCounter::default();
        assert!(c.check(10.0).is_ok());
        assert!(c.check(9.0).is_err());
        assert!(c.check(10.0).is_ok());
        assert_eq!(apply_sign(100.0, true), -100.0);
    }
}
