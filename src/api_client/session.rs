//! The saved session of `infrahub login`: where the daemon is, who logged in, the token.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ClientError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub url: String,
    pub username: String,
    pub token: String,
    /// When the token expires (RFC 3339), for a friendlier message than a 401.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `$XDG_CONFIG_HOME/infrahub`, else `$HOME/.config/infrahub`.
pub fn config_dir() -> Result<PathBuf, ClientError> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => {
                return Err(ClientError::Refused(
                    "neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the session"
                        .to_owned(),
                ));
            }
        },
    };
    Ok(base.join("infrahub"))
}

pub fn session_path() -> Result<PathBuf, ClientError> {
    Ok(config_dir()?.join("session.json"))
}

impl Session {
    /// The saved session, if any.
    pub fn load() -> Result<Option<Self>, ClientError> {
        let path = session_path()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                ClientError::Refused(format!(
                    "{} is damaged ({e}): run `infrahub login` again",
                    path.display()
                ))
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(ClientError::Failed(format!("cannot read {}: {err}", path.display()))),
        }
    }

    /// Writes the session readable by its owner only (0600, in a 0700 directory), replacing
    /// the old one atomically.
    pub fn save(&self) -> Result<PathBuf, ClientError> {
        let path = session_path()?;
        let failed = |what: &Path, err: std::io::Error| {
            ClientError::Failed(format!("cannot write {}: {err}", what.display()))
        };
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        create_private_dir(&dir).map_err(|e| failed(&dir, e))?;
        let temporary = dir.join(".session.json.tmp");
        let _ = std::fs::remove_file(&temporary);
        let mut file = private_file(&temporary).map_err(|e| failed(&temporary, e))?;
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| failed(&temporary, e))?;
        std::fs::rename(&temporary, &path).map_err(|e| failed(&path, e))?;
        Ok(path)
    }

    /// Forgets the saved session; true when there was one.
    pub fn remove() -> Result<bool, ClientError> {
        let path = session_path()?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(err) => {
                Err(ClientError::Failed(format!("cannot remove {}: {err}", path.display())))
            }
        }
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}
