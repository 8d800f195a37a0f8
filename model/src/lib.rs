//! The pipeline's shared vocabulary: the records that cross its boundaries and the rules
//! that decide what is valid.
//!
//! - [`Transaction`], the input record once valid, and [`validate()`], which makes one from
//!   raw bytes or says why not ([`Rejection`]) exactly as the contract orders its errors;
//! - [`DeadLetter`], what an invalid record becomes, and [`Alert`], what a rule raises;
//! - [`Rules`], the hot-reloaded rules file, and [`reload::Reloader`], which watches any
//!   configuration file.
//!
//! Nothing here uses a binary float: amounts are whole cents ([`Amount`]), rates and
//! thresholds are [`rust_decimal::Decimal`], times are UTC microseconds ([`EventTime`]).

pub mod alert;
pub mod amount;
pub mod config_file;
pub mod dead_letter;
pub mod reload;
pub mod rules;
pub mod time;
pub mod transaction;
pub mod validate;

pub use alert::{Alert, Details, Rule};
pub use amount::Amount;
pub use config_file::ConfigError;
pub use dead_letter::{DeadLetter, PayloadEncoding, Source};
pub use rules::{Rules, Severity};
pub use time::EventTime;
pub use transaction::{AccountId, Channel, Currency, Transaction, TransactionType};
pub use validate::{validate, validate_deferred, Deferred, ErrorCode, Field, Rejection};
