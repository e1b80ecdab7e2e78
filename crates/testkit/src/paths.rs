//! Where the repository and the external tools are.
//!
//! Tools come from `<repo>/.venv/bin` first (the pinned versions `scripts/setup.sh` installs),
//! then from `PATH` (Debian packages such as `skopeo` and `docker-registry`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// The repository root: `$ECR_VAULT_ROOT` if set, else the first ancestor of this crate's
/// manifest directory that holds `scripts/setup.sh`.
pub fn repo_root() -> Result<PathBuf> {
    if let Some(root) = std::env::var_os("ECR_VAULT_ROOT") {
        return Ok(PathBuf::from(root));
    }
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    start
        .ancestors()
        .find(|dir| dir.join("scripts").join("setup.sh").is_file())
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
                "cannot find the repository root above {}; set ECR_VAULT_ROOT",
                start.display()
            )
        })
}

/// Finds an executable: `<repo>/.venv/bin/<name>`, then each `PATH` entry. The first of
/// `names` that exists wins. A missing tool is an error that says how to install it.
pub fn find_tool(names: &[&str]) -> Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(root) = repo_root() {
        dirs.push(root.join(".venv").join("bin"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    for name in names {
        for dir in &dirs {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "required tool {} not found in <repo>/.venv/bin or PATH; run `bash scripts/setup.sh` \
         from the repository root to install the pinned test tools",
        names.join(" / ")
    )
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
