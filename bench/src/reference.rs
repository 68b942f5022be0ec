//! Image references as `lockbench pull` and its workers take them: `DIR`, `DIR:TAG` or
//! `DIR@sha256:<64 hex>`, split into the layout directory and what `store_core::oci::pull` looks
//! up in its index.json (a tag, a manifest digest, or nothing for the only manifest).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The OCI image layout directory.
    pub dir: PathBuf,
    /// A tag (`latest`) or a manifest digest (`sha256:…`); `None` when the index has one manifest.
    pub reference: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    input: String,
    reason: String,
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    /// A path that exists as a whole wins, so directories with `:` or `@` in their name still work.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let whole = PathBuf::from(input);
        if whole.exists() {
            return Ok(ImageRef {
                dir: whole,
                reference: None,
            });
        }
        let err = |reason: String| ReferenceError {
            input: input.to_string(),
            reason,
        };
        // `@algorithm:encoded` after the last `@`, as in `podman pull …@sha256:…`.
        if let Some((dir, digest)) = input.rsplit_once('@')
            && digest.contains(':')
            && !digest.contains('/')
        {
            if dir.is_empty() {
                return Err(err("no directory before the '@'".into()));
            }
            if !is_sha256_digest(digest) {
                return Err(err(format!(
                    "digest {digest:?} is not sha256: followed by 64 lowercase hex digits"
                )));
            }
            return Ok(ImageRef {
                dir: PathBuf::from(dir),
                reference: Some(digest.to_string()),
            });
        }
        Ok(match input.rsplit_once(':') {
            Some((dir, tag)) if !dir.is_empty() && !tag.is_empty() && !tag.contains('/') => {
                ImageRef {
                    dir: PathBuf::from(dir),
                    reference: Some(tag.to_string()),
                }
            }
            _ => ImageRef {
                dir: whole,
                reference: None,
            },
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            None => write!(f, "{}", self.dir.display()),
            Some(r) if r.starts_with("sha256:") => write!(f, "{}@{r}", self.dir.display()),
            Some(tag) => write!(f, "{}:{tag}", self.dir.display()),
        }
    }
}

/// `sha256:` and 64 lowercase hex digits, the only digest store-core resolves.
fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(PathBuf, Option<String>), ReferenceError> {
        s.parse::<ImageRef>().map(|r| (r.dir, r.reference))
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn splits_tag_unless_path_exists() {
        assert_eq!(
            parse("/no/such/dir:v1").unwrap(),
            (PathBuf::from("/no/such/dir"), Some("v1".to_string()))
        );
        assert_eq!(
            parse("/no/such/dir").unwrap(),
            (PathBuf::from("/no/such/dir"), None)
        );
        let tmp = tempfile::tempdir().unwrap();
        let odd = tmp.path().join("a:b");
        std::fs::create_dir(&odd).unwrap();
        let s = odd.to_str().unwrap();
        assert_eq!(parse(s).unwrap(), (odd.clone(), None));
    }

    #[test]
    fn a_digest_after_the_at_sign_selects_the_manifest() {
        let r: ImageRef = format!("/images/img-00@{DIGEST}").parse().unwrap();
        assert_eq!(r.dir, PathBuf::from("/images/img-00"));
        assert_eq!(r.reference.as_deref(), Some(DIGEST));
        assert_eq!(r.to_string(), format!("/images/img-00@{DIGEST}"));
        // A directory with '@' in its name still takes a tag.
        assert_eq!(
            parse("/x/a@b/img:v1").unwrap(),
            (PathBuf::from("/x/a@b/img"), Some("v1".to_string()))
        );
    }

    #[test]
    fn a_malformed_digest_is_refused_naming_it() {
        for bad in [
            "sha256:1234",
            "sha512:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            let e = parse(&format!("/images/img-00@{bad}")).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains(bad) && text.contains("64 lowercase hex digits"),
                "{text}"
            );
        }
        assert!(parse(&format!("@{DIGEST}")).is_err());
    }
}
