//! The one way every role loads its configuration file (gateway, detector,
//! dashboard): defaults of the role's own config type, then the TOML file, then
//! environment overrides `<PREFIX><SECTION>__<KEY>` (e.g.
//! `TAD_DASHBOARD_SERVER__API_TOKEN`), extracted with figment into the type, whose
//! `#[serde(deny_unknown_fields)]` turns an unknown key into an error naming it.
//! Semantic checks stay with each role's type; this only gets the values in.

use std::path::{Path, PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Serialize, de::DeserializeOwned};

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

/// Loads `path` over `T::default()`, then applies `env_prefix` overrides.
///
/// # Errors
/// [`ConfigFileError::Missing`] when the file does not exist,
/// [`ConfigFileError::Invalid`] for syntax, type and unknown-key errors.
pub fn load<T>(path: &Path, env_prefix: &str) -> Result<T, ConfigFileError>
where
    T: Serialize + DeserializeOwned + Default,
{
    if !path.exists() {
        return Err(ConfigFileError::Missing {
            path: path.to_owned(),
        });
    }
    Figment::from(Serialized::defaults(T::default()))
        .merge(Toml::file(path))
        .merge(Env::prefixed(env_prefix).split("__"))
        .extract()
        .map_err(|e| ConfigFileError::Invalid {
            path: path.to_owned(),
            source: Box::new(e),
        })
}

/// Parses TOML text over `T::default()` (no environment overrides): tests and
/// `config check` of a text that is not a file.
///
/// # Errors
/// figment's error naming the bad key or value.
pub fn parse<T>(text: &str) -> Result<T, figment::Error>
where
    T: Serialize + DeserializeOwned + Default,
{
    Figment::from(Serialized::defaults(T::default()))
        .merge(Toml::string(text))
        .extract()
}
