//! The one way every role loads its configuration file (gateway, detector,
//! dashboard): the TOML file, then environment overrides
//! `<PREFIX><SECTION>__<KEY>` (e.g. `TAD_DASHBOARD_SERVER__API_TOKEN`), extracted
//! with figment into the role's own config type. The type's
//! `#[serde(default, deny_unknown_fields)]` fills every key left out with its
//! default and turns an unknown key into an error naming it.
//!
//! Defaults come from serde, not from a figment layer under the file, so a table
//! the file gives (say `[trust.risky_ports]`) replaces the default table whole
//! instead of being merged into it: what the operator wrote is what runs. An
//! environment override is merged key by key into the file's values.
//! Semantic checks stay with each role's type; this only gets the values in.

use std::path::{Path, PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::de::DeserializeOwned;

/// Errors loading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("config file {path} does not exist")]
    Missing { path: PathBuf },
    /// TOML syntax, a wrong type, an unknown key; figment's message names the key
    /// and, for environment overrides, the variable.
    #[error("config file {path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: Box<figment::Error>,
    },
}

/// Loads `path`, then applies `env_prefix` overrides; keys given by neither take
/// the type's serde defaults.
///
/// # Errors
/// [`ConfigFileError::Missing`] when the file does not exist,
/// [`ConfigFileError::Invalid`] for syntax, type and unknown-key errors.
pub fn load<T: DeserializeOwned>(path: &Path, env_prefix: &str) -> Result<T, ConfigFileError> {
    if !path.exists() {
        return Err(ConfigFileError::Missing {
            path: path.to_owned(),
        });
    }
    Figment::from(Toml::file(path))
        .merge(Env::prefixed(env_prefix).split("__"))
        .extract()
        .map_err(|e| ConfigFileError::Invalid {
            path: path.to_owned(),
            source: Box::new(e),
        })
}

/// Parses TOML text (no environment overrides): tests and `config check` of a
/// text that is not a file.
///
/// # Errors
/// figment's error naming the bad key or value (boxed: it is large).
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Box<figment::Error>> {
    Figment::from(Toml::string(text))
        .extract()
        .map_err(Box::new)
}
