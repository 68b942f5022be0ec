//! How a layer stream is compressed: detected from its first bytes when extracting, chosen by name when
//! writing one (`gzip`, `zstd`, `none`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A compression name other than `gzip`, `zstd`, `none` (or `plain`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression {0:?} (expected gzip, zstd or none)")]
pub struct UnknownCompression(pub String);

/// A layer stream's compression. Serialized as `"gzip"`, `"zstd"`, `"none"` (plain tar).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// An uncompressed tar stream.
    #[serde(rename = "none", alias = "plain")]
    Plain,
    Gzip,
    Zstd,
}

impl Compression {
    /// Detects gzip (`1f 8b`) and zstd (`28 b5 2f fd`); anything else is taken as a plain tar stream.
    pub fn detect(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::Plain
        }
    }

    /// The OCI media type of a layer blob compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Plain => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Plain => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

impl FromStr for Compression {
    type Err = UnknownCompression;

    /// `gzip`, `zstd`, and `none` or `plain` for an uncompressed stream.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" | "plain" => Ok(Compression::Plain),
            _ => Err(UnknownCompression(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 3] = [Compression::Plain, Compression::Gzip, Compression::Zstd];

    #[test]
    fn names_round_trip_through_display_and_from_str() {
        for c in ALL {
            assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
        }
        assert_eq!(Compression::Plain.to_string(), "none");
        assert_eq!("plain".parse::<Compression>().unwrap(), Compression::Plain);
        let err = "lz4".parse::<Compression>().unwrap_err().to_string();
        assert_eq!(
            err,
            r#"unknown compression "lz4" (expected gzip, zstd or none)"#
        );
    }

    #[test]
    fn serde_uses_lowercase_names_with_none_for_plain() {
        let json = serde_json::to_string(&ALL).unwrap();
        assert_eq!(json, r#"["none","gzip","zstd"]"#);
        let back: Vec<Compression> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ALL);
        let plain: Compression = serde_json::from_str(r#""plain""#).unwrap();
        assert_eq!(plain, Compression::Plain);
        assert!(serde_json::from_str::<Compression>(r#""Gzip""#).is_err());
    }

    #[test]
    fn media_types_are_the_oci_layer_types() {
        assert_eq!(
            Compression::Plain.media_type(),
            "application/vnd.oci.image.layer.v1.tar"
        );
        assert_eq!(
            Compression::Gzip.media_type(),
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(
            Compression::Zstd.media_type(),
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }

    #[test]
    fn detection_reads_magic_bytes() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"ustar"), Compression::Plain);
        assert_eq!(Compression::detect(&[]), Compression::Plain);
    }
}
