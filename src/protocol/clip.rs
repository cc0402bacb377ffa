//! Client input quoted back in error messages is cut short, so that a 250 KB channel or event
//! name costs the server one short reply rather than echoing every byte back.

use std::borrow::Cow;

/// Longest error message sent back, in bytes (before JSON escaping).
pub(crate) const MAX_MESSAGE: usize = 1024;
/// Longest channel name quoted in a reply's `channel` field. Valid names are at most 200
/// bytes; a somewhat longer one is still quoted whole, so that pusher-js can hand the error
/// to the channel object it made for that name.
pub(crate) const MAX_CHANNEL: usize = 1024;

/// `text`, or its first `max` bytes (cut at a character boundary) followed by `…` and how much
/// was left out.
pub(crate) fn clip(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}… ({} more bytes)",
        &text[..end],
        text.len() - end
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole() {
        assert!(matches!(clip("abc", 3), Cow::Borrowed("abc")));
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let text = "é".repeat(10); // 20 bytes
        assert_eq!(clip(&text, 5), "éé… (16 more bytes)");
        assert_eq!(clip(&"x".repeat(1000), 4), "xxxx… (996 more bytes)");
    }
}
