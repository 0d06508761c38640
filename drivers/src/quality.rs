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
    /// The device could not be read (or refused the request).
    CommError {
        /// What went wrong.
        reason: String,
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

/// Plausibility limits for one device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Nameplate power, W: |power| above 1.2 × this is implausible.
    pub nameplate_w: Option<f64>,
}

impl Limits {
    /// State of charge must lie in 0–100 %.
    pub fn check_soc(&self, soc_pct: f64) -> Result<f64, String> {
        if (0.0..=100.0).contains(&soc_pct) {
            Ok(soc_pct)
        } else {
            Err(format!("state of charge {soc_pct} % outside 0–100 %"))
        }
    }

    /// |power| must stay within 1.2 × nameplate.
    pub fn check_power(&self, power_w: f64) -> Result<f64, String> {
        match self.nameplate_w {
            Some(np) if power_w.abs() > 1.2 * np => {
                Err(format!("power {power_w} W exceeds 1.2 × nameplate {np} W"))
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
    pub fn check(&mut self, value: f64) -> Result<f64, String> {
        match self.last {
            Some(last) if value < last => {
                Err(format!("energy counter went back from {last} to {value}"))
            }
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
