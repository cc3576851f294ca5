//! Secrets in configuration: a value that never prints, the one way to read a secret given
//! inline or as a file, and redaction of credentials inside URLs.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};

use super::ConfigError;

/// A string that must not leak: `Debug` and `Serialize` show `[redacted]`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

/// A secret that configuration gives either inline (`<key>`, often from the environment) or
/// as a file (`<key>_file`, e.g. a systemd credential), never both.
#[derive(Debug, Clone, Copy)]
pub struct SecretSource<'a> {
    /// The inline key, e.g. `argocd.token`; the file key is this with `_file`.
    pub key: &'static str,
    pub value: Option<&'a Secret>,
    pub file: Option<&'a PathBuf>,
}

impl SecretSource<'_> {
    /// Refuses both at once (checked when configuration loads, before any file is read).
    pub fn check_exclusive(&self) -> Result<(), ConfigError> {
        if self.value.is_some() && self.file.is_some() {
            return Err(ConfigError::invalid(
                self.key,
                format!("set either {0} or {0}_file, not both", self.key),
            ));
        }
        Ok(())
    }

    /// Whether either form is set.
    pub fn is_set(&self) -> bool {
        self.value.is_some() || self.file.is_some()
    }

    /// The secret: the inline value, or the file's content with surrounding whitespace
    /// trimmed; `None` when neither is set.
    pub fn read(&self) -> Result<Option<Secret>, ConfigError> {
        self.check_exclusive()?;
        match (self.value, self.file) {
            (Some(value), _) => Ok(Some(value.clone())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|text| Some(Secret::new(text.trim())))
                .map_err(|e| ConfigError::Invalid {
                    key: self.key,
                    message: format!("{}_file: cannot read {}: {e}", self.key, path.display()),
                }),
            (None, None) => Ok(None),
        }
    }

    /// [`read`](Self::read), refusing an absent secret with `missing` as the hint.
    pub fn require(&self, missing: &str) -> Result<Secret, ConfigError> {
        self.read()?.ok_or_else(|| ConfigError::Invalid {
            key: self.key,
            message: format!("missing: {missing}"),
        })
    }
}

/// Renders a URL with its password (or a token given as the user name) replaced, for
/// messages, logs, job errors and `config check`. Anything that does not parse as a URL is
/// returned unchanged when it holds no `user:secret@` part.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            // A placeholder the URL encoder leaves alone, swapped for the readable marker.
            if url.password().is_some() && url.set_password(Some("REDACTED")).is_ok() {
                return url.to_string().replacen(":REDACTED@", ":[redacted]@", 1);
            }
            url.to_string()
        }
        Err(_) => "[unparsable URL]".to_owned(),
    }
}

/// Hides the credentials of every URL inside `text` (`scheme://user:secret@host` becomes
/// `scheme://[redacted]@host`), e.g. in git's messages about a remote given with a token. The
/// one function behind `config check`, logs and job errors.
pub fn redact_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c == '/' || c.is_whitespace() || matches!(c, '"' | '\'' | '>' | ')'))
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(user_end) if user_end > 0 => {
                out.push_str("[redacted]");
                out.push_str(&authority[user_end..]);
            }
            _ => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

pub(super) fn serialize_redacted_credentials<S: Serializer>(
    value: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(text) => serializer.serialize_some(&redact_credentials(text)),
        None => serializer.serialize_none(),
    }
}

pub(super) fn serialize_redacted_url<S: Serializer>(
    url: &str,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_url(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"[redacted]\"");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn a_secret_comes_from_a_value_or_a_trimmed_file_never_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  from-file\n").unwrap();
        let value = Secret::new("inline");
        let inline = SecretSource { key: "x.token", value: Some(&value), file: None };
        assert_eq!(inline.read().unwrap().unwrap().expose(), "inline");
        let file = SecretSource { key: "x.token", value: None, file: Some(&path) };
        assert_eq!(file.read().unwrap().unwrap().expose(), "from-file");
        let both = SecretSource { key: "x.token", value: Some(&value), file: Some(&path) };
        assert!(both.read().unwrap_err().to_string().contains("not both"));
        let none = SecretSource { key: "x.token", value: None, file: None };
        assert!(none.read().unwrap().is_none());
        let err = none.require("set it").unwrap_err().to_string();
        assert!(err.contains("x.token") && err.contains("missing: set it"), "{err}");
        let gone = dir.path().join("gone");
        let absent = SecretSource { key: "x.token", value: None, file: Some(&gone) };
        let err = absent.read().unwrap_err().to_string();
        assert!(err.contains("x.token_file") && err.contains("cannot read"), "{err}");
    }

    #[test]
    fn credentials_inside_text_are_hidden() {
        assert_eq!(
            redact_credentials(
                "git push to https://oauth2:glpat-123@gitlab.example/ops.git failed"
            ),
            "git push to https://[redacted]@gitlab.example/ops.git failed"
        );
        assert_eq!(
            redact_credentials("fatal: 'ssh://git@host:22/x' and http://host/y"),
            "fatal: 'ssh://[redacted]@host:22/x' and http://host/y"
        );
        assert_eq!(redact_credentials("no urls here"), "no urls here");
        assert_eq!(redact_credentials("/srv/git/ops.git"), "/srv/git/ops.git");
        assert_eq!(redact_credentials("https://u:p@h"), "https://[redacted]@h");
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db/infrahub"),
            "postgres://app:[redacted]@db/infrahub"
        );
        assert_eq!(redact_url("postgres://db/infrahub"), "postgres://db/infrahub");
        assert_eq!(redact_url("not a url"), "[unparsable URL]");
    }
}
