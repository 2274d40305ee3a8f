//! See the crate README.
#![doc = include_str!("../README.md")]

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret prints instead of itself.
pub const MASK: &str = "***";

/// A secret value (an access token, a password, a key). `Debug`, `Display`
/// and `Serialize` give `***`; [`Secret::expose`] gives the value.
/// Deserializes from the plain value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The value itself, for the one place that uses it (a signature, a
    /// connection).
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The value itself, unwrapped.
    pub fn into_exposed(self) -> T {
        self.0
    }
}

impl Secret<String> {
    /// Whether the value is empty (no secret configured).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret<String> {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<T> Serialize for Secret<T> {
    /// `"***"`: see [`serialize_exposed`] for a field written in clear.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Secret)
    }
}

/// Serializes a secret in clear, for a field that is asked to be:
/// `#[serde(serialize_with = "bbb_secret::serialize_exposed")]`.
pub fn serialize_exposed<T: Serialize, S: Serializer>(
    secret: &Secret<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    secret.0.serialize(serializer)
}

/// A URL that may carry a password (a database or broker URL). `Debug`,
/// `Display` and `Serialize` give it with the password masked
/// ([`mask_url`]); [`SecretUrl::expose`] gives the URL itself. Deserializes
/// from the plain string.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The URL itself, password included, for the one place that connects.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password masked, for logs and error messages.
    pub fn masked(&self) -> String {
        mask_url(&self.0)
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        SecretUrl(url)
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        SecretUrl(url.to_owned())
    }
}

impl From<&String> for SecretUrl {
    fn from(url: &String) -> Self {
        SecretUrl(url.clone())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.masked(), f)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for SecretUrl {
    /// The masked URL: see [`serialize_exposed_url`] for a field written in clear.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.masked())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretUrl)
    }
}

/// Serializes a URL in clear, password included, for a field that is asked
/// to be: `#[serde(serialize_with = "bbb_secret::serialize_exposed_url")]`.
pub fn serialize_exposed_url<S: Serializer>(
    url: &SecretUrl,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&url.0)
}

/// `url` with the password of its user information replaced by `***`, for
/// logs and error messages. Only that password is masked: an `@` in the
/// path, the query or the fragment is left as it is. It never returns a
/// password written the way people write them, even in a string that is not
/// a valid URL:
///
/// - `scheme://user:password@host/...` gives `scheme://user:***@host/...`;
///   a URL without a password (`scheme://user@host`, `scheme://host`, or an
///   `@` only after the host, as in `http://host/users/me@example.com`) is
///   returned as is.
/// - The user information ends at the last `@` before the first `/`, `?` or
///   `#`, so an unescaped `@` in a password is masked with the rest of it
///   (`postgres://u:p@ss@host/db` gives `postgres://u:***@host/db`).
/// - When no `@` comes before the first `/`, `?` or `#` but a `:` does, and
///   what follows the `:` is not a port, that character is taken as part of
///   an unescaped password (`mysql://bbb:pa/ss@db/sched` gives
///   `mysql://bbb:***@db/sched`): the user information then runs to the
///   last `@`.
/// - A string without `://` that holds an `@` is masked whole.
pub fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return if url.contains('@') {
            MASK.to_owned()
        } else {
            url.to_owned()
        };
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let Some(last_at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo_end = match authority.rfind('@') {
        Some(at) => at,
        None if is_cut_password(authority) => last_at,
        // The '@' is in the path, the query or the fragment.
        None => return url.to_owned(),
    };
    let userinfo = &rest[..userinfo_end];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:{MASK}{}",
        &url[..authority_start],
        &userinfo[..colon],
        &rest[userinfo_end..]
    )
}

/// Creates (or truncates) a file that only its owner may read and write
/// (mode 0600, also when the file existed with a wider mode): for tokens, and
/// anything else kept on disk that other users of the host must not read.
pub fn create_private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Whether `authority` (what precedes the first `/`, `?` or `#`, holding no
/// `@`) is `user:` and the start of a password cut short by one of those
/// characters, rather than a host with a port or an IPv6 literal.
fn is_cut_password(authority: &str) -> bool {
    match authority.split_once(':') {
        Some((user, after)) => !user.starts_with('[') && !after.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_for_their_owner() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("bbb-secret-{}", std::process::id()));
        std::fs::write(&path, "old content").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        create_private_file(&path).unwrap().write_all(b"t").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "t");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_secret_never_prints_itself() {
        let s = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(&s)), "Some(***)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s.clone().into_exposed(), "hunter2");
        assert!(!s.is_empty());
        assert!(Secret::<String>::default().is_empty());
    }

    #[test]
    fn a_secret_deserializes_plain_and_serializes_in_clear_only_when_asked() {
        #[derive(Serialize, Deserialize)]
        struct Config {
            token: Secret<String>,
            #[serde(serialize_with = "serialize_exposed")]
            written_out: Secret<String>,
            url: SecretUrl,
            #[serde(serialize_with = "serialize_exposed_url")]
            url_written_out: SecretUrl,
        }
        let c: Config = toml::from_str(
            r#"
            token = "hunter2"
            written_out = "swordfish"
            url = "postgres://bbb:pw1@db/bbb"
            url_written_out = "amqp://bbb:pw2@mq/%2f"
            "#,
        )
        .unwrap();
        assert_eq!(c.token.expose(), "hunter2");
        assert_eq!(c.url.expose(), "postgres://bbb:pw1@db/bbb");
        let text = toml::to_string(&c).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("pw1"), "{text}");
        assert!(text.contains("token = \"***\""), "{text}");
        assert!(
            text.contains("url = \"postgres://bbb:***@db/bbb\""),
            "{text}"
        );
        assert!(text.contains("written_out = \"swordfish\""), "{text}");
        assert!(
            text.contains("url_written_out = \"amqp://bbb:pw2@mq/%2f\""),
            "{text}"
        );
    }

    #[test]
    fn a_secret_url_prints_masked() {
        let u = SecretUrl::from("mysql://bbb:hunter2@db:3306/sched");
        assert_eq!(u.to_string(), "mysql://bbb:***@db:3306/sched");
        assert_eq!(format!("{u:?}"), "\"mysql://bbb:***@db:3306/sched\"");
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            "\"mysql://bbb:***@db:3306/sched\""
        );
        assert_eq!(u.expose(), "mysql://bbb:hunter2@db:3306/sched");
        let plain = SecretUrl::new("sqlite:///var/lib/bbb/queue.sqlite");
        assert_eq!(plain.to_string(), "sqlite:///var/lib/bbb/queue.sqlite");
    }

    #[test]
    fn masks_the_password_of_valid_urls() {
        assert_eq!(
            mask_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            mask_url("amqp://user:pa:ss@host:5672/vh"),
            "amqp://user:***@host:5672/vh"
        );
        assert_eq!(mask_url("amqp://u:p@host"), "amqp://u:***@host");
        assert_eq!(
            mask_url("amqp://guest:secret@localhost:5672/%2f"),
            "amqp://guest:***@localhost:5672/%2f"
        );
        assert_eq!(mask_url("amqp://user@host/vh"), "amqp://user@host/vh");
        assert_eq!(mask_url("amqp://host/vh"), "amqp://host/vh");
        assert_eq!(mask_url("sqlite:///tmp/x"), "sqlite:///tmp/x");
        assert_eq!(mask_url("not a url"), "not a url");
        assert_eq!(mask_url(""), "");
    }

    #[test]
    fn masks_the_password_of_unparsable_urls() {
        // A '/', '?', '#' or '@' in an unescaped password makes the URL
        // unparsable (or parse with the wrong host); the password is masked
        // all the same.
        for (url, masked) in [
            ("mysql://bbb:pa/ss@db/sched", "mysql://bbb:***@db/sched"),
            (
                "mysql://bbb:sched/db@pw@db/sched",
                "mysql://bbb:***@db/sched",
            ),
            ("postgres://u:p@ss@host/db", "postgres://u:***@host/db"),
            ("postgres://u:p?ss#x@host/db", "postgres://u:***@host/db"),
            ("postgres://:pw/x@host/db", "postgres://:***@host/db"),
        ] {
            assert_eq!(mask_url(url), masked, "{url}");
        }
        // No scheme separator: nothing is kept around an '@'.
        assert_eq!(mask_url("u:secret@host/db"), "***");
        assert_eq!(mask_url("postgres:/u:secret@host/db"), "***");
    }

    #[test]
    fn an_at_sign_after_the_host_is_not_a_password() {
        // The user information ends where the host's part of the URL does:
        // an '@' in the path, the query or the fragment is shown as it is.
        for url in [
            "http://tok/en@host/",
            "https://example.com/users/me@example.com",
            "http://builders:8080/list@2024.json",
            "http://host/path?mail=a@b",
            "http://host#a@b",
            "http://[::1]:8010/a@b",
            "http://host:/a@b",
        ] {
            assert_eq!(mask_url(url), url);
        }
        // With a password as well, only the password is masked.
        assert_eq!(
            mask_url("http://u:pw@host/users/me@example.com"),
            "http://u:***@host/users/me@example.com"
        );
        assert_eq!(
            mask_url("postgres://u:p@ss/word@host/db"),
            "postgres://u:***@ss/word@host/db"
        );
        assert_eq!(
            mask_url("http://user@host/a@b"),
            "http://user@host/a@b",
            "no password"
        );
    }
}
