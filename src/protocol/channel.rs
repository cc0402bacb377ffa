//! Channel names and kinds. A name is classified by prefix, longest prefix first
//! (`private-encrypted-cache-` before `private-encrypted-` before `private-`), with
//! `starts_with`, never an unanchored pattern.

/// Longest channel name accepted; the server SDKs allow 200 (the docs say 164).
pub(crate) const MAX_CHANNEL_NAME_LEN: usize = 200;

/// Prefix of the per-user channel pusher-js subscribes to after sign-in.
pub(crate) const USER_CHANNEL_PREFIX: &str = "#server-to-user-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelKind {
    Public,
    Private,
    /// `private-encrypted-`: authorised like private; payloads are opaque ciphertext.
    Encrypted,
    Presence,
    /// `#server-to-user-{id}`: only the socket signed in as that user may join.
    User,
}

/// A channel name that passed the naming rules, with its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChannelSpec {
    pub kind: ChannelKind,
    /// `cache-`, `private-cache-`, `private-encrypted-cache-` or `presence-cache-`.
    pub cache: bool,
}

impl ChannelSpec {
    pub(crate) fn needs_auth(&self) -> bool {
        matches!(
            self.kind,
            ChannelKind::Private | ChannelKind::Encrypted | ChannelKind::Presence
        )
    }

    /// Client events are allowed on private and presence channels, never on encrypted ones
    /// (receivers could not decrypt plain text) nor public ones.
    pub(crate) fn allows_client_events(&self) -> bool {
        matches!(self.kind, ChannelKind::Private | ChannelKind::Presence)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChannelNameError {
    Empty,
    TooLong(usize),
    BadCharacter(char),
    Reserved,
}

impl std::fmt::Display for ChannelNameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelNameError::Empty => write!(f, "The channel name must not be empty"),
            ChannelNameError::TooLong(n) => write!(
                f,
                "The channel name is {n} characters long; at most {MAX_CHANNEL_NAME_LEN} are allowed"
            ),
            ChannelNameError::BadCharacter(c) => write!(
                f,
                "The channel name contains {c:?}; only A-Z a-z 0-9 _ - = @ , . ; are allowed"
            ),
            ChannelNameError::Reserved => write!(f, "Channel names starting with # are reserved"),
        }
    }
}

fn allowed_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=' | b'@' | b',' | b'.' | b';')
}

/// Checks a channel name and returns its kind.
pub(crate) fn classify(name: &str) -> Result<ChannelSpec, ChannelNameError> {
    if name.is_empty() {
        return Err(ChannelNameError::Empty);
    }
    if name.len() > MAX_CHANNEL_NAME_LEN {
        return Err(ChannelNameError::TooLong(name.chars().count()));
    }
    if let Some(user) = name.strip_prefix(USER_CHANNEL_PREFIX) {
        check_chars(user)?;
        if user.is_empty() {
            return Err(ChannelNameError::Empty);
        }
        return Ok(ChannelSpec {
            kind: ChannelKind::User,
            cache: false,
        });
    }
    if name.starts_with('#') {
        return Err(ChannelNameError::Reserved);
    }
    check_chars(name)?;
    let (kind, cache) = if name.starts_with("private-encrypted-cache-") {
        (ChannelKind::Encrypted, true)
    } else if name.starts_with("private-encrypted-") {
        (ChannelKind::Encrypted, false)
    } else if name.starts_with("private-cache-") {
        (ChannelKind::Private, true)
    } else if name.starts_with("private-") {
        (ChannelKind::Private, false)
    } else if name.starts_with("presence-cache-") {
        (ChannelKind::Presence, true)
    } else if name.starts_with("presence-") {
        (ChannelKind::Presence, false)
    } else if name.starts_with("cache-") {
        (ChannelKind::Public, true)
    } else {
        (ChannelKind::Public, false)
    };
    Ok(ChannelSpec { kind, cache })
}

fn check_chars(name: &str) -> Result<(), ChannelNameError> {
    match name.bytes().position(|b| !allowed_char(b)) {
        None => Ok(()),
        Some(i) => Err(ChannelNameError::BadCharacter(
            name[i..].chars().next().unwrap_or('?'),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str) -> (ChannelKind, bool) {
        let spec = classify(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        (spec.kind, spec.cache)
    }

    #[test]
    fn prefixes_classify_longest_first() {
        assert_eq!(kind("my-channel"), (ChannelKind::Public, false));
        assert_eq!(kind("my-cache-x"), (ChannelKind::Public, false));
        assert_eq!(kind("cache-x"), (ChannelKind::Public, true));
        assert_eq!(
            kind("private-App.Models.User.1"),
            (ChannelKind::Private, false)
        );
        assert_eq!(kind("private-cache-x"), (ChannelKind::Private, true));
        assert_eq!(kind("private-encrypted-x"), (ChannelKind::Encrypted, false));
        assert_eq!(
            kind("private-encrypted-cache-x"),
            (ChannelKind::Encrypted, true)
        );
        assert_eq!(kind("presence-chat.1"), (ChannelKind::Presence, false));
        assert_eq!(kind("presence-cache-x"), (ChannelKind::Presence, true));
        assert_eq!(kind("#server-to-user-42"), (ChannelKind::User, false));
        assert_eq!(kind("foo-bar_1234@=,.;"), (ChannelKind::Public, false));
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(classify(""), Err(ChannelNameError::Empty));
        assert_eq!(
            classify(&"a".repeat(201)),
            Err(ChannelNameError::TooLong(201))
        );
        assert!(classify(&"a".repeat(200)).is_ok());
        assert_eq!(classify("a b"), Err(ChannelNameError::BadCharacter(' ')));
        assert_eq!(classify("a:b"), Err(ChannelNameError::BadCharacter(':')));
        assert_eq!(classify("#other"), Err(ChannelNameError::Reserved));
        assert_eq!(classify("#server-to-user-"), Err(ChannelNameError::Empty));
        assert!(matches!(
            classify("ünicode"),
            Err(ChannelNameError::BadCharacter('ü'))
        ));
    }

    #[test]
    fn client_events_only_on_private_and_presence() {
        assert!(
            classify("private-a")
                .map(|s| s.allows_client_events())
                .unwrap_or(false)
        );
        assert!(
            classify("presence-a")
                .map(|s| s.allows_client_events())
                .unwrap_or(false)
        );
        assert!(
            !classify("public")
                .map(|s| s.allows_client_events())
                .unwrap_or(true)
        );
        assert!(
            !classify("private-encrypted-a")
                .map(|s| s.allows_client_events())
                .unwrap_or(true)
        );
    }
}
