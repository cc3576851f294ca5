//! Names that end up in Kubernetes object names, and account names.

use std::fmt;

use super::ValidationError;

/// A DNS-1123 label: 1-63 characters of `a-z`, `0-9` and `-`, starting and ending with an
/// alphanumeric. Sites, fields, departments, projects and namespaces are named this way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label(String);

impl Label {
    /// Checks `value` as the request field `field`, so the error names what the client sent.
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        if value.is_empty() || value.len() > 63 {
            return Err(ValidationError::new(field, "must be 1 to 63 characters long"));
        }
        let bytes = value.as_bytes();
        let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
        if !bytes.iter().all(allowed) {
            return Err(ValidationError::new(
                field,
                "may contain only lowercase letters a-z, digits and '-'",
            ));
        }
        if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
            return Err(ValidationError::new(field, "must start and end with a letter or digit"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A human-readable title; defaults to the name when the client gives none.
pub fn parse_display_name(
    field: &str,
    value: Option<&str>,
    fallback: &str,
) -> Result<String, ValidationError> {
    let value = value.map(str::trim).unwrap_or(fallback);
    if value.is_empty() || value.chars().count() > 200 {
        return Err(ValidationError::new(field, "must be 1 to 200 characters long"));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// An account name: 1-63 characters of letters, digits, `.`, `_` and `-`, starting with a
/// letter or digit. Compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let ok_len = !value.is_empty() && value.len() <= 63;
        let ok_first = value.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric);
        let ok_chars =
            value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok_len && ok_first && ok_chars {
            Ok(Self(value.to_owned()))
        } else {
            Err(ValidationError::new(
                "username",
                "must be 1 to 63 characters of letters, digits, '.', '_' or '-', \
                 starting with a letter or digit",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_accept_dns_1123() {
        for ok in ["a", "berlin", "team-7", "0abc", &"x".repeat(63)] {
            assert_eq!(Label::parse("name", ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn labels_reject_everything_else() {
        for bad in ["", "Berlin", "-a", "a-", "a_b", "a.b", "ä", " a", &"x".repeat(64)] {
            let err = Label::parse("name", bad).unwrap_err();
            assert_eq!(err.field, "name", "{bad:?}");
        }
    }

    #[test]
    fn display_name_defaults_trims_and_limits() {
        assert_eq!(parse_display_name("d", None, "berlin").unwrap(), "berlin");
        assert_eq!(parse_display_name("d", Some("  Berlin DC "), "x").unwrap(), "Berlin DC");
        assert!(parse_display_name("d", Some("   "), "x").is_err());
        assert!(parse_display_name("d", Some("a\nb"), "x").is_err());
        assert!(parse_display_name("d", Some(&"é".repeat(201)), "x").is_err());
        assert!(parse_display_name("d", Some(&"é".repeat(200)), "x").is_ok());
    }

    #[test]
    fn usernames() {
        for ok in ["admin", "team-platform", "j.doe_2", "A1"] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".admin", "a b", "a/b", &"a".repeat(64)] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
    }
}
