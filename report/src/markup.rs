//! Escaping text for XML and HTML (JUnit output here, lockbench's report page).

/// Escapes `s` for XML or HTML text and attribute values. Control characters other than newline,
/// tab and carriage return become U+FFFD: XML 1.0 cannot carry them, even escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && !matches!(c, '\n' | '\t' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(
            super::escape("a<b & 'c' \"d\">\u{1}\n"),
            "a&lt;b &amp; &#39;c&#39; &quot;d&quot;&gt;\u{FFFD}\n"
        );
    }
}
