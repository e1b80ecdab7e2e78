//! Repository and tag selection with globs: include lists, then exclude lists.
//!
//! `*` stays inside one path segment and `**` crosses them, so `team/*` means the direct
//! children of `team` and `team/**` everything beneath it.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

/// The user's filter strings, kept as given for the snapshot record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterSpec {
    #[serde(default)]
    pub repositories: Vec<String>,
    #[serde(default)]
    pub exclude_repositories: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub exclude_tags: Vec<String>,
}

/// Compiled filters.
#[derive(Clone, Debug)]
pub struct Filters {
    spec: FilterSpec,
    repos: Option<GlobSet>,
    exclude_repos: GlobSet,
    tags: Option<GlobSet>,
    exclude_tags: GlobSet,
}

fn compile(patterns: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let glob: Glob = GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("invalid glob {p:?}: {e}"))?;
        b.add(glob);
    }
    b.build().map_err(|e| e.to_string())
}

impl Filters {
    pub fn new(spec: FilterSpec) -> Result<Self, String> {
        let nonempty = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let repos = nonempty(&spec.repositories);
        let tags = nonempty(&spec.tags);
        Ok(Filters {
            repos: if repos.is_empty() {
                None
            } else {
                Some(compile(&repos)?)
            },
            exclude_repos: compile(&nonempty(&spec.exclude_repositories))?,
            tags: if tags.is_empty() {
                None
            } else {
                Some(compile(&tags)?)
            },
            exclude_tags: compile(&nonempty(&spec.exclude_tags))?,
            spec,
        })
    }

    /// The repositories when every include pattern is a plain name (no glob), so a registry
    /// without `/v2/_catalog` (Docker Hub, GHCR, Quay…) can still be listed; else None.
    pub fn named_repositories(&self) -> Option<Vec<String>> {
        let names: Vec<String> = self
            .spec
            .repositories
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let plain = |n: &String| !n.contains(['*', '?', '[', ']', '{', '}', '\\', '!']);
        (!names.is_empty() && names.iter().all(plain)).then_some(names)
    }

    pub fn all() -> Self {
        // An empty spec always compiles.
        match Filters::new(FilterSpec::default()) {
            Ok(f) => f,
            Err(e) => unreachable!("empty filters: {e}"),
        }
    }

    pub fn spec(&self) -> &FilterSpec {
        &self.spec
    }

    /// Whether these filters select everything.
    pub fn is_all(&self) -> bool {
        self.spec == FilterSpec::default()
    }

    pub fn repository(&self, name: &str) -> bool {
        self.repos.as_ref().is_none_or(|g| g.is_match(name)) && !self.exclude_repos.is_match(name)
    }

    pub fn tag(&self, tag: &str) -> bool {
        self.tags.as_ref().is_none_or(|g| g.is_match(tag)) && !self.exclude_tags.is_match(tag)
    }

    /// Whether tag filters were given at all: untagged images are kept only when not.
    pub fn has_tag_filter(&self) -> bool {
        self.tags.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(repos: &[&str], ex: &[&str], tags: &[&str], ex_tags: &[&str]) -> Filters {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        Filters::new(FilterSpec {
            repositories: v(repos),
            exclude_repositories: v(ex),
            tags: v(tags),
            exclude_tags: v(ex_tags),
        })
        .unwrap()
    }

    #[test]
    fn only_plain_names_list_without_a_catalog() {
        let names = f(&["team/api", " web "], &[], &[], &[]).named_repositories();
        assert_eq!(names, Some(vec!["team/api".to_owned(), "web".to_owned()]));
        assert_eq!(
            f(&["team/api", "team/*"], &[], &[], &[]).named_repositories(),
            None
        );
        assert_eq!(f(&[], &[], &[], &[]).named_repositories(), None);
    }

    #[test]
    fn globs_respect_path_segments() {
        let x = f(&["team/*"], &[], &[], &[]);
        assert!(x.repository("team/app"));
        assert!(!x.repository("team/app/api"));
        let x = f(&["team/**"], &["team/legacy/**"], &[], &[]);
        assert!(x.repository("team/app/api"));
        assert!(!x.repository("team/legacy/x"));
        assert!(!x.repository("other"));
        assert!(Filters::all().repository("anything/at/all"));
    }

    #[test]
    fn tag_filters_include_then_exclude() {
        let x = f(&[], &[], &["v*", "latest"], &["*-rc*"]);
        assert!(x.tag("v1.2"));
        assert!(x.tag("latest"));
        assert!(!x.tag("v2-rc1"));
        assert!(!x.tag("dev"));
        assert!(
            Filters::new(FilterSpec {
                repositories: vec!["[".into()],
                ..Default::default()
            })
            .is_err()
        );
    }
}
