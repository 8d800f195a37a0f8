//! A valid transaction and the small value types of its fields.
//!
//! Every field type can only hold what the contract calls valid, so code downstream of
//! [`crate::validate()`] never re-checks: an [`AccountId`] is always `ACC` and seven digits, an
//! [`Amount`] always whole cents in range, an [`EventTime`] always UTC microseconds.

use std::fmt;

use compact_str::CompactString;

use uuid::Uuid;

use crate::amount::Amount;
use crate::time::EventTime;

/// `^ACC[0-9]{7}$`, kept as its number: ten bytes of text become four, and ordering and hashing
/// are integer operations. The text form always has exactly seven digits, so it round-trips.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(u32);

impl AccountId {
    /// The account `ACC` + `n` in seven digits; `None` when `n` has more than seven.
    pub fn new(n: u32) -> Option<Self> {
        (n <= 9_999_999).then_some(AccountId(n))
    }

    /// Parses `ACC` followed by exactly seven ASCII digits.
    pub fn parse(s: &str) -> Option<Self> {
        let digits = s.strip_prefix("ACC")?.as_bytes();
        if digits.len() != 7 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(AccountId(
            digits.iter().fold(0, |n, &d| n * 10 + u32::from(d - b'0')),
        ))
    }

    /// The account's number (the seven digits).
    pub fn number(self) -> u32 {
        self.0
    }

    /// `ACC` and the seven digits, as bytes (a record's Kafka key), without the formatting
    /// machinery: the generator writes one per record.
    pub fn to_ascii(self) -> [u8; 10] {
        let mut out = *b"ACC0000000";
        zero_padded(&mut out[3..], u64::from(self.0));
        out
    }
}

/// Writes `n` in decimal into `digits`, right-aligned and zero-padded (leading digits that do
/// not fit are dropped): the fixed-width numbers of keys and ids, written per record.
pub fn zero_padded(digits: &mut [u8], mut n: u64) {
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ascii = self.to_ascii();
        f.write_str(std::str::from_utf8(&ascii).map_err(|_| fmt::Error)?)
    }
}

/// An ISO 4217-style code of three upper-case ASCII letters. Which codes are *accepted* is the
/// rules file's `fx_rates_usd`, not this type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Three upper-case ASCII letters, or `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let b: [u8; 3] = s.as_bytes().try_into().ok()?;
        b.iter().all(u8::is_ascii_uppercase).then_some(Currency(b))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares a closed set of lower-case names (`transaction_type`, `channel`) as an enum with
/// `parse`, `as_str` and `ALL`.
macro_rules! name_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in the contract's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The exact (case-sensitive) name, or `None`.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

name_enum!(
    /// What kind of movement of money a transaction is.
    TransactionType {
        Purchase = "purchase",
        Withdrawal = "withdrawal",
        Transfer = "transfer",
        Payment = "payment",
        Refund = "refund",
    }
);

name_enum!(
    /// Where the card was used.
    Channel {
        Online = "online",
        Pos = "pos",
        Atm = "atm",
        Mobile = "mobile",
    }
);

/// A valid transaction: what [`crate::validate()`] returns and every later stage consumes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Transaction {
    /// Ordered and printed in lower case, whatever case the input used.
    pub transaction_id: Uuid,
    pub account_id: AccountId,
    pub amount: Amount,
    pub currency: Currency,
    /// 1 to 64 characters. Short strings (up to 24 bytes, nearly all of them) are stored inline:
    /// no allocation per record.
    pub merchant_id: CompactString,
    /// A merchant category code: four ASCII digits.
    pub merchant_category: Option<[u8; 4]>,
    pub transaction_type: TransactionType,
    pub channel: Channel,
    /// Two upper-case ASCII letters.
    pub country: Option<[u8; 2]>,
    /// At most 100 characters; inline up to 24 bytes.
    pub city: Option<CompactString>,
    pub event_time: EventTime,
}

impl Transaction {
    /// `merchant_category` as text.
    pub fn merchant_category_str(&self) -> Option<&str> {
        self.merchant_category
            .as_ref()
            .and_then(|m| std::str::from_utf8(m).ok())
    }

    /// `country` as text.
    pub fn country_str(&self) -> Option<&str> {
        self.country
            .as_ref()
            .and_then(|c| std::str::from_utf8(c).ok())
    }

    /// Appends the canonical JSON form: the contract's fields in its order, absent optional
    /// fields left out, `amount` with two decimals, `event_time` in UTC with six fraction
    /// digits. Validating the output gives back an equal transaction.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Written byte by byte rather than through `write!`: the generator writes one per
        // record, and the formatting machinery was most of its time.
        out.extend_from_slice(br#"{"transaction_id":""#);
        out.extend_from_slice(
            self.transaction_id
                .hyphenated()
                .encode_lower(&mut [0u8; 36])
                .as_bytes(),
        );
        out.extend_from_slice(br#"","account_id":""#);
        out.extend_from_slice(&self.account_id.to_ascii());
        out.extend_from_slice(br#"","amount":"#);
        let cents = self.amount.cents() as u64;
        write_digits(out, cents / 100, 1);
        out.push(b'.');
        write_digits(out, cents % 100, 2);
        out.extend_from_slice(br#","currency":""#);
        out.extend_from_slice(self.currency.as_str().as_bytes());
        out.extend_from_slice(br#"","merchant_id":"#);
        write_json_str(out, &self.merchant_id);
        if let Some(mcc) = self.merchant_category_str() {
            out.extend_from_slice(br#","merchant_category":""#);
            out.extend_from_slice(mcc.as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(br#","transaction_type":""#);
        out.extend_from_slice(self.transaction_type.as_str().as_bytes());
        out.extend_from_slice(br#"","channel":""#);
        out.extend_from_slice(self.channel.as_str().as_bytes());
        out.push(b'"');
        if let Some(country) = self.country_str() {
            out.extend_from_slice(br#","country":""#);
            out.extend_from_slice(country.as_bytes());
            out.push(b'"');
        }
        if let Some(city) = &self.city {
            out.extend_from_slice(br#","city":"#);
            write_json_str(out, city);
        }
        out.extend_from_slice(br#","event_time":""#);
        out.extend_from_slice(&self.event_time.canonical());
        out.extend_from_slice(br#""}"#);
    }

    /// The canonical JSON form as a `String`.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(320);
        self.write_json(&mut out);
        String::from_utf8(out).expect("canonical JSON is UTF-8")
    }
}

/// Appends `v` in decimal, zero-padded to at least `width` digits.
fn write_digits(out: &mut Vec<u8>, mut v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    while v > 0 || buf.len() - i < width {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `s` as a JSON string literal, escaped.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids() {
        assert_eq!(
            AccountId::parse("ACC0000001").unwrap().to_string(),
            "ACC0000001"
        );
        assert_eq!(AccountId::parse("ACC9999999").unwrap().number(), 9_999_999);
        for n in [0, 7, 1_000_000, 1_234_567, 9_999_999] {
            let a = AccountId::new(n).unwrap();
            assert_eq!(a.to_string(), format!("ACC{n:07}"));
            assert_eq!(&a.to_ascii()[..], a.to_string().as_bytes());
        }
        for bad in [
            "ACC000001",
            "ACC00000001",
            "acc0000001",
            "ACC000000a",
            "ACC-000001",
            "ACC",
        ] {
            assert_eq!(AccountId::parse(bad), None, "{bad}");
        }
        assert!(AccountId::new(10_000_000).is_none());
    }

    #[test]
    fn currencies() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for bad in ["eur", "EU", "EURO", "E1R", ""] {
            assert_eq!(Currency::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn closed_sets() {
        for t in TransactionType::ALL {
            assert_eq!(TransactionType::parse(t.as_str()), Some(*t));
        }
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()), Some(*c));
        }
        assert_eq!(Channel::parse("POS"), None);
        assert_eq!(TransactionType::ALL.len(), 5);
        assert_eq!(Channel::ALL.len(), 4);
    }
}
