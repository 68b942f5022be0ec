//! Glob patterns for lock names: `*` and `?` stay within one path component, `**` crosses `/`.

pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // matched[j]: the pattern so far matches t[..j]. One pass per pattern token keeps the cost at
    // pattern × text, whatever the stars (backtracking is exponential on `*a*a*a…b`).
    let mut matched = vec![false; t.len() + 1];
    matched[0] = true;
    let mut i = 0;
    while i < p.len() {
        let mut next = vec![false; t.len() + 1];
        match p[i] {
            '*' => {
                let crosses = p.get(i + 1) == Some(&'*');
                // A star matches any run after a matched prefix; a single star stops at '/'.
                let mut open = false;
                for j in 0..=t.len() {
                    if j > 0 && !crosses && t[j - 1] == '/' {
                        open = false;
                    }
                    open |= matched[j];
                    next[j] = open;
                }
                i += if crosses { 2 } else { 1 };
            }
            c => {
                for j in 1..=t.len() {
                    let fits = if c == '?' {
                        t[j - 1] != '/'
                    } else {
                        t[j - 1] == c
                    };
                    next[j] = matched[j - 1] && fits;
                }
                i += 1;
            }
        }
        matched = next;
    }
    matched[t.len()]
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn literal_and_wildcards() {
        assert!(glob_match("layers.lock", "layers.lock"));
        assert!(!glob_match("layers.lock", "images.lock"));
        assert!(glob_match("*.lock", "images.lock"));
        assert!(!glob_match("*.lock", "overlay-images/images.lock"));
        assert!(glob_match("**.lock", "overlay-images/images.lock"));
        assert!(glob_match("overlay-*/*.lock", "overlay-images/images.lock"));
        assert!(glob_match("?mages.lock", "images.lock"));
        assert!(!glob_match("?", "/"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("", "x"));
        assert!(glob_match(
            "/var/lib/**/layers.lock",
            "/var/lib/containers/storage/overlay-layers/layers.lock"
        ));
        assert!(glob_match("a/**", "a/b/c"));
        assert!(!glob_match("a/*", "a/b/c"));
        assert!(glob_match("***", "a/b"));
        assert!(!glob_match("?", ""));
    }

    #[test]
    fn many_stars_stay_fast() {
        // Exponential for a backtracking matcher: 30 stars against 200 characters.
        let pattern = format!("{}b", "*a".repeat(30));
        let text = "a".repeat(200);
        let started = std::time::Instant::now();
        assert!(!glob_match(&pattern, &text));
        assert!(glob_match(&pattern, &format!("{text}b")));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
