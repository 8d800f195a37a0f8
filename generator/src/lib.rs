//! Synthetic card transactions for the pipeline: valid ones with configurable shares of
//! suspicious patterns (high values, bursts of rapid activity, night hours) and invalid ones
//! of every kind the contract names, deterministic from a seed.
//!
//! [`Generator`] makes records and says what each is meant to be ([`Label`]); [`run::run`]
//! drives it at a rate to Kafka, standard output or a file, reloading
//! [`GeneratorConfig`] when its file changes.
//!
//! ```
//! use generator::{Generator, GeneratorConfig, Label};
//!
//! let mut g = Generator::new(GeneratorConfig::default(), Some(7));
//! let mut buf = Vec::new();
//! let meta = g.next_into(&mut buf);
//! if meta.label == Label::Valid {
//!     let t = model::validate(&buf, &model::Rules::default()).unwrap();
//!     assert_eq!(t.account_id, meta.key);
//! }
//! ```

pub mod config;
pub mod generate;
pub mod output;
pub mod run;

pub use config::GeneratorConfig;
pub use generate::{Generator, Label, Meta};
