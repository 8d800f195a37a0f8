//! Money as whole cents, read exactly from the text of a JSON number.
//!
//! A JSON number is parsed from its digits, never through `f64`: `10.10`, `10.100` and `1.01e1`
//! are the same 1010 cents, and `10.005` is refused however many digits follow. The domain
//! (`0 < amount <= 1e9`, whole cents) fits an `i64` of cents with room to spare, which is also
//! the unscaled value of Iceberg's `decimal(18,2)`.

use std::fmt;

use rust_decimal::Decimal;

/// The contract's upper bound, 1 000 000 000.00, in cents.
pub const MAX_CENTS: i64 = 100_000_000_000;

/// A positive amount of money in a transaction's own currency, exact to the cent.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Amount(i64);

/// Why an amount was refused; the text becomes the dead letter's `message`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmountError {
    NotPositive,
    FractionOfCent,
    TooLarge,
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AmountError::NotPositive => "amount must be greater than 0",
            AmountError::FractionOfCent => "amount must be a whole number of cents",
            AmountError::TooLarge => "amount must be at most 1000000000",
        })
    }
}

impl Amount {
    /// An amount of `cents` hundredths; `None` outside `1..=MAX_CENTS`.
    pub fn from_cents(cents: i64) -> Option<Self> {
        (1..=MAX_CENTS).contains(&cents).then_some(Amount(cents))
    }

    /// The amount in cents: the unscaled value of a `decimal(18,2)`.
    pub fn cents(self) -> i64 {
        self.0
    }

    /// The amount as an exact decimal with scale 2.
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.0, 2)
    }

    /// Parses the text of a JSON number (as the JSON grammar allows it) into an amount, enforcing
    /// the contract's rule. The text must already be a valid JSON number; anything else is
    /// reported as not positive rather than panicking.
    pub fn parse_json_number(text: &str) -> Result<Self, AmountError> {
        let b = text.as_bytes();
        if b.first() == Some(&b'-') {
            // Even `-0` is not greater than zero.
            return Err(AmountError::NotPositive);
        }
        let (mantissa, exp) = match b.iter().position(|&c| c == b'e' || c == b'E') {
            Some(i) => (&b[..i], parse_exponent(&b[i + 1..])),
            None => (b, 0),
        };
        let (int, frac) = match mantissa.iter().position(|&c| c == b'.') {
            Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
            None => (mantissa, &[][..]),
        };

        // value = D × 10^e where D is the digit string int ++ frac. Strip D's leading zeros and
        // trailing zeros (moving the latter into e) so that D has no trailing zero: then the
        // value is whole cents exactly when e >= -2.
        let len = int.len() + frac.len();
        let digit = |i: usize| {
            if i < int.len() {
                int[i]
            } else {
                frac[i - int.len()]
            }
        };
        let lead = (0..len).take_while(|&i| digit(i) == b'0').count();
        if lead == len {
            return Err(AmountError::NotPositive);
        }
        let trail = (lead..len).rev().take_while(|&i| digit(i) == b'0').count();
        let significant = lead..len - trail;
        let e = exp
            .saturating_sub(frac.len() as i64)
            .saturating_add(trail as i64);
        if e < -2 {
            return Err(AmountError::FractionOfCent);
        }
        // cents = D × 10^(e + 2); more than 12 digits is over 1e11 cents before we compute it.
        let shift = e + 2;
        if significant.len() as i64 + shift > 12 {
            return Err(AmountError::TooLarge);
        }
        let mut cents: i64 = 0;
        for i in significant {
            let c = digit(i);
            if !c.is_ascii_digit() {
                return Err(AmountError::NotPositive);
            }
            cents = cents * 10 + i64::from(c - b'0');
        }
        cents *= 10i64.pow(shift as u32);
        Amount::from_cents(cents).ok_or(AmountError::TooLarge)
    }
}

/// A saturating parse of an exponent (`+12`, `-3`, `400000000000`): a huge exponent only has to
/// stay huge, not exact, for the bounds checks to refuse it.
fn parse_exponent(b: &[u8]) -> i64 {
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let mag = digits.iter().fold(0i64, |acc, &c| {
        acc.saturating_mul(10)
            .saturating_add(i64::from(c.wrapping_sub(b'0')))
            .min(1 << 40)
    });
    if neg {
        -mag
    } else {
        mag
    }
}

/// Always two decimals, as `decimal(18,2)` prints: `120.50`.
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<i64, AmountError> {
        Amount::parse_json_number(s).map(Amount::cents)
    }

    #[test]
    fn exact_forms_of_the_same_value() {
        for s in [
            "10.1",
            "10.10",
            "10.100",
            "10.1000000000000000000000000000000000",
            "1.01e1",
            "1010e-2",
            "0.00101E4",
            "101e-1",
        ] {
            assert_eq!(p(s), Ok(1010), "{s}");
        }
        assert_eq!(p("42"), Ok(4200));
        assert_eq!(p("0.01"), Ok(1));
    }

    #[test]
    fn lower_bound() {
        assert_eq!(p("0"), Err(AmountError::NotPositive));
        assert_eq!(p("0.00"), Err(AmountError::NotPositive));
        assert_eq!(p("0e10"), Err(AmountError::NotPositive));
        assert_eq!(p("-0"), Err(AmountError::NotPositive));
        assert_eq!(p("-0.01"), Err(AmountError::NotPositive));
        assert_eq!(p("-5"), Err(AmountError::NotPositive));
        assert_eq!(p("0.01"), Ok(1));
    }

    #[test]
    fn upper_bound() {
        assert_eq!(p("1000000000"), Ok(MAX_CENTS));
        assert_eq!(p("1000000000.00"), Ok(MAX_CENTS));
        assert_eq!(p("1e9"), Ok(MAX_CENTS));
        assert_eq!(p("1000000000.01"), Err(AmountError::TooLarge));
        assert_eq!(p("999999999.99"), Ok(MAX_CENTS - 1));
        assert_eq!(p("1e10"), Err(AmountError::TooLarge));
        assert_eq!(p("1e400000000000000000000"), Err(AmountError::TooLarge));
        assert_eq!(
            p("123456789012345678901234567890"),
            Err(AmountError::TooLarge)
        );
    }

    #[test]
    fn whole_cents() {
        assert_eq!(p("10.005"), Err(AmountError::FractionOfCent));
        assert_eq!(p("10.0050"), Err(AmountError::FractionOfCent));
        assert_eq!(p("42.001"), Err(AmountError::FractionOfCent));
        assert_eq!(p("1e-3"), Err(AmountError::FractionOfCent));
        assert_eq!(
            p("1e-400000000000000000000"),
            Err(AmountError::FractionOfCent)
        );
        assert_eq!(
            p("0.0000000000000000000000000000001"),
            Err(AmountError::FractionOfCent)
        );
        // A fraction of a cent beyond the bound: the cents rule is checked first.
        assert_eq!(p("2000000000.001"), Err(AmountError::FractionOfCent));
    }

    #[test]
    fn display_and_decimal() {
        let a = Amount::parse_json_number("120.5").unwrap();
        assert_eq!(a.to_string(), "120.50");
        assert_eq!(a.to_decimal().to_string(), "120.50");
        assert_eq!(Amount::from_cents(7).unwrap().to_string(), "0.07");
    }
}
