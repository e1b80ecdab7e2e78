//! The CLI's view of the engine's configuration schema: its flags, the environment and an
//! optional config file (`--config ecr-vault.yaml`), in that order of precedence, then the
//! engine's defaults. The file is YAML (JSON is YAML too); the engine checks its keys.

use std::path::{Path, PathBuf};

use ecr_vault_engine::config::{ConfigError, Layer, Raw, Settings, file_layer};

use crate::output::Invalid;

impl From<ConfigError> for Invalid {
    fn from(e: ConfigError) -> Self {
        Invalid(e.to_string())
    }
}

/// Flag values that are settings, as `(key id, value)` for the top layer.
#[derive(Default)]
pub struct Flags(Vec<(&'static str, Raw)>);

impl Flags {
    pub fn one(&mut self, id: &'static str, v: Option<impl ToString>) -> &mut Self {
        if let Some(v) = v {
            self.0.push((id, Raw::One(v.to_string())));
        }
        self
    }

    pub fn into_inner(self) -> Vec<(&'static str, Raw)> {
        self.0
    }

    pub fn many(&mut self, id: &'static str, v: &[String]) -> &mut Self {
        if !v.is_empty() {
            self.0.push((id, Raw::Many(v.to_vec())));
        }
        self
    }
}

/// The file's layer, or none when no file is given.
pub fn file(path: Option<&Path>) -> Result<Option<Layer>, Invalid> {
    let Some(path) = path else {
        return Ok(None);
    };
    let name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| Invalid(format!("config file {name}: {e}")))?;
    let tree: serde_json::Value = serde_norway::from_str(&text)
        .map_err(|e| Invalid(format!("config file {name}: not valid YAML: {e}")))?;
    Ok(Some(file_layer(&name, &tree)?))
}

/// Flags, then the environment, then the file.
pub fn settings(flags: Flags, path: Option<&PathBuf>) -> Result<Settings, Invalid> {
    let mut layers = vec![Layer::flags(flags.0), Layer::env()];
    layers.extend(file(path.map(PathBuf::as_path))?);
    Ok(Settings::new(layers))
}
