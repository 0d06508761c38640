//! Money and energy as types: [`MicroCredits`], [`WattHours`] and [`Price`] (micro-credits per
//! kWh). A Wh cannot be added to a credit, and arithmetic is checked: an overflow is an error
//! for the caller to name, never a wrap or a silent saturation (rust-bitcoin's `Amount` is the
//! model). The canonical encodings are the bare `u64`s, unchanged; JSON is the bare number.

use serde::{Deserialize, Serialize};

macro_rules! unit {
    ($(#[$doc:meta])* $name:ident, $suffix:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Nothing.
            pub const ZERO: $name = $name(0);
            /// The largest amount.
            pub const MAX: $name = $name(u64::MAX);

            /// From the raw integer.
            pub const fn new(v: u64) -> $name {
                $name(v)
            }

            /// The raw integer (for encodings and display).
            pub const fn get(self) -> u64 {
                self.0
            }

            /// `self + other`, `None` on overflow.
            pub fn checked_add(self, other: $name) -> Option<$name> {
                self.0.checked_add(other.0).map($name)
            }

            /// `self − other`, `None` if `other` is larger.
            pub fn checked_sub(self, other: $name) -> Option<$name> {
                self.0.checked_sub(other.0).map($name)
            }

            /// `self − other`, or nothing if `other` is larger (for "what is left" amounts).
            pub fn saturating_sub(self, other: $name) -> $name {
                $name(self.0.saturating_sub(other.0))
            }

            /// `self + other`, at most `u64::MAX` (for figures and bounds, not balances).
            pub fn saturating_add(self, other: $name) -> $name {
                $name(self.0.saturating_add(other.0))
            }

            /// The sum of `items`, `None` on overflow.
            pub fn checked_sum(items: impl IntoIterator<Item = $name>) -> Option<$name> {
                items
                    .into_iter()
                    .try_fold($name::ZERO, |acc, x| acc.checked_add(x))
            }

            /// Whether this is nothing.
            pub const fn is_zero(self) -> bool {
                self.0 == 0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!("{} ", $suffix), self.0)
            }
        }

        impl From<$name> for u64 {
            fn from(v: $name) -> u64 {
                v.0
            }
        }
    };
}

unit!(
    /// Credits in millionths: balances, fees, payments, escrow.
    MicroCredits,
    "µcredits"
);
unit!(
    /// Energy, watt-hours.
    WattHours,
    "Wh"
);
unit!(
    /// A price, micro-credits per kWh.
    Price,
    "µcredits/kWh"
);

impl MicroCredits {
    /// `self × part / whole`, rounded down (a share in proportion); `None` if `whole` is zero
    /// or the share does not fit.
    pub fn prorate(self, part: u64, whole: u64) -> Option<MicroCredits> {
        u128::from(self.0)
            .checked_mul(u128::from(part))
            .and_then(|p| p.checked_div(u128::from(whole)))
            .and_then(|p| u64::try_from(p).ok())
            .map(MicroCredits)
    }
}

impl Price {
    /// What `energy` costs at this price: `energy × price / 1000`, rounded down; `None` if it
    /// does not fit.
    pub fn cost_of(self, energy: WattHours) -> Option<MicroCredits> {
        u128::from(energy.0)
            .checked_mul(u128::from(self.0))
            .and_then(|p| p.checked_div(1000))
            .and_then(|p| u64::try_from(p).ok())
            .map(MicroCredits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_checked_and_costs_round_down() {
        assert_eq!(MicroCredits::MAX.checked_add(MicroCredits::new(1)), None);
        assert_eq!(WattHours::new(1).checked_sub(WattHours::new(2)), None);
        assert_eq!(
            MicroCredits::checked_sum([MicroCredits::new(2), MicroCredits::new(3)]),
            Some(MicroCredits::new(5))
        );
        assert_eq!(
            MicroCredits::checked_sum([MicroCredits::MAX, MicroCredits::new(1)]),
            None
        );
        assert_eq!(
            Price::new(180_000).cost_of(WattHours::new(1_500)),
            Some(MicroCredits::new(270_000))
        );
        assert_eq!(
            Price::new(999).cost_of(WattHours::new(1)),
            Some(MicroCredits::ZERO)
        );
        assert_eq!(Price::MAX.cost_of(WattHours::MAX), None);
        assert_eq!(WattHours::new(150).to_string(), "150 Wh");
        assert_eq!(serde_json::to_string(&MicroCredits::new(7)).unwrap(), "7");
    }
}
