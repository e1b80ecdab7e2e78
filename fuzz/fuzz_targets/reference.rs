//! Repository names, tags, image references, vault locations and restore renames: whatever
//! parses must be safe to put in an S3 key or a URL path, and must print back as it was read.
#![no_main]

use ecr_vault_engine::Mapping;
use ecr_vault_registry::{ImageRef, RepoName, Tag};
use ecr_vault_vault::VaultLocation;
use libfuzzer_sys::fuzz_target;

/// What no accepted name may contain: traversal, empty segments, absolute paths, escapes,
/// control characters.
fn assert_safe(s: &str) {
    assert!(!s.is_empty());
    assert!(!s.starts_with('/') && !s.ends_with('/'), "{s:?}");
    assert!(
        !s.contains("//") && !s.contains('%') && !s.contains('\\'),
        "{s:?}"
    );
    assert!(s.split('/').all(|seg| seg != ".." && seg != "."), "{s:?}");
    assert!(s.bytes().all(|b| b.is_ascii_graphic()), "{s:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = RepoName::parse(s) {
        assert_eq!(r.as_str(), s);
        assert!(s.len() <= ecr_vault_registry::reference::MAX_NAME_LEN);
        assert_safe(s);
    }
    if let Ok(t) = Tag::parse(s) {
        assert_eq!(t.as_str(), s);
        assert!(s.len() <= ecr_vault_registry::reference::MAX_TAG_LEN);
        assert!(!s.contains('/') && !s.starts_with('.'));
        assert_safe(s);
        let _ = t.attached_subject();
    }
    if let Ok(r) = ImageRef::parse(s) {
        assert_safe(r.repo.as_str());
        // Display is the canonical form: it parses back to the same reference.
        let again = ImageRef::parse(&r.to_string()).expect("canonical form parses");
        assert_eq!(again, r);
    }
    if let Ok(v) = VaultLocation::parse(s) {
        let key = v.layout_key();
        assert!(key.starts_with(&v.prefix));
        assert!(!key.starts_with('/') && !key.contains("//"), "{key:?}");
        assert!(key.split('/').all(|seg| seg != ".."), "{key:?}");
    }
    // A restore rename FROM=TO applied to a name: the result is a valid name or an error.
    if let Some((from, rest)) = s.split_once('=') {
        let (to, name) = rest.split_once('\n').unwrap_or((rest, "team/app"));
        if let Ok(name) = RepoName::parse(name) {
            let m = Mapping {
                renames: vec![(from.to_owned(), to.to_owned())],
                retags: vec![(from.to_owned(), to.to_owned())],
                digest_only: false,
            };
            if let Ok(out) = m.repo(&name) {
                assert_safe(out.as_str());
            }
            if let Ok(t) = Tag::parse(from)
                && let Ok(out) = m.tag(&t)
            {
                assert_safe(out.as_str());
            }
        }
    }
});
