//! Exact probabilities: reduced fractions, so that three endpoints show as 1/3, not 0.333….

use std::fmt;
use std::ops::{Add, Mul};

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

/// A probability as a reduced fraction `numerator / denominator` (never above 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Probability {
    numerator: u128,
    denominator: u128,
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Probability {
    /// Certainty.
    pub const ONE: Probability = Probability {
        numerator: 1,
        denominator: 1,
    };
    /// Impossibility.
    pub const ZERO: Probability = Probability {
        numerator: 0,
        denominator: 1,
    };

    /// `count / total`, reduced. `total` must be positive and at least `count`.
    pub fn new(count: u128, total: u128) -> Probability {
        assert!(
            total > 0 && count <= total,
            "bad probability {count}/{total}"
        );
        let g = gcd(count, total).max(1);
        Probability {
            numerator: count / g,
            denominator: total / g,
        }
    }

    /// The numerator of the reduced fraction.
    pub fn numerator(self) -> u128 {
        self.numerator
    }

    /// The denominator of the reduced fraction.
    pub fn denominator(self) -> u128 {
        self.denominator
    }

    /// True for 0.
    pub fn is_zero(self) -> bool {
        self.numerator == 0
    }

    /// True for 1.
    pub fn is_one(self) -> bool {
        self.numerator == self.denominator
    }

    /// `1 - self`.
    pub fn complement(self) -> Probability {
        Probability::new(self.denominator - self.numerator, self.denominator)
    }

    /// As a floating-point number.
    pub fn value(self) -> f64 {
        self.numerator as f64 / self.denominator as f64
    }
}

impl Add for Probability {
    type Output = Probability;

    /// `self + other` (the caller guarantees the sum is at most 1).
    fn add(self, other: Probability) -> Probability {
        let den = self.denominator / gcd(self.denominator, other.denominator) * other.denominator;
        let num =
            self.numerator * (den / self.denominator) + other.numerator * (den / other.denominator);
        Probability::new(num, den)
    }
}

impl Mul for Probability {
    type Output = Probability;

    fn mul(self, other: Probability) -> Probability {
        // Cross-reduce first so the products stay small.
        let a = gcd(self.numerator, other.denominator).max(1);
        let b = gcd(other.numerator, self.denominator).max(1);
        Probability::new(
            (self.numerator / a) * (other.numerator / b),
            (self.denominator / b) * (other.denominator / a),
        )
    }
}

impl fmt::Display for Probability {
    /// `1/3 (33.33%)`, `1 (100%)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let percent = format!("{:.2}", self.value() * 100.0);
        let percent = percent.trim_end_matches('0').trim_end_matches('.');
        if self.denominator == 1 {
            write!(f, "{} ({percent}%)", self.numerator)
        } else {
            write!(f, "{}/{} ({percent}%)", self.numerator, self.denominator)
        }
    }
}

impl Serialize for Probability {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Probability", 3)?;
        s.serialize_field("numerator", &self.numerator)?;
        s.serialize_field("denominator", &self.denominator)?;
        s.serialize_field("value", &self.value())?;
        s.end()
    }
}
