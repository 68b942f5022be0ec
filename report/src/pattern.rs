//! Glob patterns for lock names: `*` and `?` stay within one path component, `**` crosses `/`.

pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    matches_from(&p, &t)
}

fn matches_from(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') => {
            let crosses = p.get(1) == Some(&'*');
            let rest = if crosses { &p[2..] } else { &p[1..] };
            // Try every split point; lock names are short, so the backtracking stays cheap.
            for i in 0..=t.len() {
                if matches_from(rest, &t[i..]) {
                    return true;
                }
                if i < t.len() && !crosses && t[i] == '/' {
                    return false;
                }
            }
            false
        }
        Some('?') => match t.first() {
            Some(c) if *c != '/' => matches_from(&p[1..], &t[1..]),
            _ => false,
        },
        Some(c) => t.first() == Some(c) && matches_from(&p[1..], &t[1..]),
    }
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
    }
}
