//! Reading a YAML configuration file into a typed value, with errors a user can act on.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration file that could not be read, parsed or validated: names the file, the key
/// and the problem, e.g. `config/alerting-rules.yaml: rules.rapid_activity.min_count: must be
/// at least 1`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{problem}", file.display(), if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct ConfigError {
    pub file: PathBuf,
    /// The dotted path of the offending key; empty when the file as a whole is at fault.
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(file: &Path, key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// The file's text, or an error naming it.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, "", format!("cannot read the file: {e}")))
}

/// Parses YAML into `T`; an error carries the dotted path of the key at fault.
pub fn parse<T: DeserializeOwned>(text: &str, origin: &Path) -> Result<T, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key: Cow<'_, str> = if key == "." { "".into() } else { key.into() };
        ConfigError::new(origin, key, e.into_inner().to_string())
    })
}
