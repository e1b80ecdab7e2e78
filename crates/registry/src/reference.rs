//! Repository names, tags and image references, validated against the OCI distribution grammar.
//!
//! These strings come from registries, events and users and end up in S3 keys and URL paths, so
//! they are parsed once, strictly, into types that cannot hold `..`, `%2e`, `//`, absolute paths,
//! control characters or overlong values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::Digest;
use crate::error::InvalidInput;

/// Longest repository name accepted (the common registry limit; ECR allows 256 with the host).
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag the OCI grammar allows.
pub const MAX_TAG_LEN: usize = 128;

/// A repository name such as `team/app/api`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        if s.is_empty() {
            return Err(InvalidInput::new("repository", s, "empty"));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(InvalidInput::new(
                "repository",
                s,
                "longer than 255 characters",
            ));
        }
        for component in s.split('/') {
            if !valid_component(component) {
                return Err(InvalidInput::new(
                    "repository",
                    s,
                    "each path component must be lower-case alphanumerics separated by '.', '_', '__' or '-'",
                ));
            }
        }
        Ok(RepoName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

/// A tag such as `v1.2.3` or `sha256-<hex>.sig`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        let b = s.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_');
        if !first_ok
            || b.len() > MAX_TAG_LEN
            || !b
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        {
            return Err(InvalidInput::new(
                "tag",
                s,
                "tags are 1-128 characters of [A-Za-z0-9_.-] and must not start with '.' or '-'",
            ));
        }
        Ok(Tag(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For cosign-style attachment tags (`sha256-<hex>`, `sha256-<hex>.sig`, `.att`, `.sbom`),
    /// the digest of the image they attach to.
    pub fn attached_subject(&self) -> Option<Digest> {
        let rest = self.0.strip_prefix("sha256-")?;
        let (hex, suffix) = rest.split_at_checked(64)?;
        if !matches!(suffix, "" | ".sig" | ".att" | ".sbom") {
            return None;
        }
        Digest::parse(&format!("sha256:{hex}")).ok()
    }
}

/// A manifest reference: a tag or a digest.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// The path segment used in `/v2/<name>/manifests/<reference>`.
    pub fn as_path(&self) -> String {
        match self {
            Reference::Tag(t) => t.as_str().to_owned(),
            Reference::Digest(d) => d.to_string(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_path())
    }
}

impl From<Tag> for Reference {
    fn from(t: Tag) -> Self {
        Reference::Tag(t)
    }
}

impl From<Digest> for Reference {
    fn from(d: Digest) -> Self {
        Reference::Digest(d)
    }
}

/// `repository[:tag][@digest]`, as users type it and as snapshots record it in
/// `org.opencontainers.image.ref.name` (`repository:tag`).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ImageRef {
    pub repo: RepoName,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d)?)),
            None => (s, None),
        };
        // The tag separator is the last ':' after the last '/'.
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match rest[slash..].rfind(':') {
            Some(i) => (
                &rest[..slash + i],
                Some(Tag::parse(&rest[slash + i + 1..])?),
            ),
            None => (rest, None),
        };
        Ok(ImageRef {
            repo: RepoName::parse(repo)?,
            tag,
            digest,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.repo.as_str())?;
        if let Some(t) = &self.tag {
            write!(f, ":{}", t.as_str())?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

macro_rules! string_newtype_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
        impl FromStr for $t {
            type Err = InvalidInput;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$t>::parse(s)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
string_newtype_impls!(RepoName);
string_newtype_impls!(Tag);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "a",
            "team/app/api",
            "my-repo",
            "my--repo",
            "my_repo",
            "my__repo",
            "a.b/c-d/e_f",
            "123456789012/x",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok} refused");
        }
    }

    #[test]
    fn refuses_traversal_and_hostile_names() {
        let long = "a".repeat(256);
        for bad in [
            "",
            "..",
            "a/../b",
            "a/./b",
            "%2e%2e/x",
            "a//b",
            "/abs",
            "abs/",
            "Upper",
            "a b",
            "a\nb",
            "a\u{0}b",
            "a___b",
            "-a",
            "a-",
            "a/.hidden",
            "a\\b",
            long.as_str(),
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn validates_tags() {
        assert!(Tag::parse("v1.2.3").is_ok());
        assert!(Tag::parse("_x").is_ok());
        assert!(Tag::parse(&"a".repeat(128)).is_ok());
        for bad in ["", ".x", "-x", "a/b", "a:b", "..", "%2e", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn finds_cosign_attachment_subjects() {
        let hex = "a".repeat(64);
        for suffix in ["", ".sig", ".att", ".sbom"] {
            let t = Tag::parse(&format!("sha256-{hex}{suffix}")).unwrap();
            assert_eq!(t.attached_subject().unwrap().hex(), hex);
        }
        assert!(
            Tag::parse("sha256-abc.sig")
                .unwrap()
                .attached_subject()
                .is_none()
        );
        assert!(
            Tag::parse(&format!("sha256-{hex}.other"))
                .unwrap()
                .attached_subject()
                .is_none()
        );
    }

    #[test]
    fn parses_image_refs() {
        let r = ImageRef::parse("team/app:v1").unwrap();
        assert_eq!(r.repo.as_str(), "team/app");
        assert_eq!(r.tag.unwrap().as_str(), "v1");
        let d = format!("sha256:{}", "b".repeat(64));
        let r = ImageRef::parse(&format!("team/app@{d}")).unwrap();
        assert!(r.tag.is_none());
        assert_eq!(r.digest.unwrap().to_string(), d);
        assert!(ImageRef::parse("../x:v1").is_err());
    }
}
