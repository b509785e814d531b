//! Per-project settings: `.saferoot/config.toml`.
//!
//! ```toml
//! # Regenerable trees: changes under them pass through unversioned (no trash, no pre-images,
//! # not journaled), so a build or a package install does not fill the store.
//! scratch = ["/target/", "node_modules/", "__pycache__/"]
//! ```
//!
//! Pattern syntax (a small subset of gitignore's, on purpose): a pattern names a directory and
//! ends with `/`; a leading `/` anchors it at the project root, otherwise it matches a directory
//! of that name at any depth; `*` matches any run of characters within one name. Everything
//! else is protected — including files git ignores, such as `.env`.
//!
//! The default list is used when the file does not exist or has no `scratch` key. The daemon
//! reads the file when it mounts; a change takes effect at the next mount.

use crate::{Error, Result, Store};
use serde::Deserialize;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

pub const CONFIG_FILE: &str = "config.toml";

/// The scratch trees used when the project does not configure its own.
pub const DEFAULT_SCRATCH: &[&str] = &[
    "/target/",
    "node_modules/",
    "__pycache__/",
    ".pytest_cache/",
    ".mypy_cache/",
    ".venv/",
    ".gradle/",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    anchored: bool,
    name: Vec<u8>,
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern> {
        let bad = |why: &str| Error::Invalid(format!("scratch pattern {s:?}: {why}"));
        let body = s
            .strip_suffix('/')
            .ok_or_else(|| bad("must end with `/` (scratch entries are directories)"))?;
        let (anchored, name) = match body.strip_prefix('/') {
            Some(rest) => (true, rest),
            None => (false, body),
        };
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(bad(
                "must be a single directory name, like `target/` or `/build/`",
            ));
        }
        if name == crate::store::STORE_DIR {
            return Err(bad("the store itself cannot be scratch"));
        }
        Ok(Pattern {
            anchored,
            name: name.as_bytes().to_vec(),
        })
    }

    fn matches_name(&self, name: &[u8]) -> bool {
        glob(&self.name, name)
    }
}

/// The names along a project-relative path (`.` and the like dropped).
fn names(rel: &Path) -> Vec<&[u8]> {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes()),
            _ => None,
        })
        .collect()
}

/// `*` matches any run of bytes; everything else matches itself.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    match pat.iter().position(|&c| c == b'*') {
        None => pat == s,
        Some(i) => {
            let (head, rest) = (&pat[..i], &pat[i + 1..]);
            if !s.starts_with(head) {
                return false;
            }
            let s = &s[head.len()..];
            (0..=s.len()).any(|k| glob(rest, &s[k..]))
        }
    }
}

/// Paths inside the project that a sandboxed agent may never change, because something outside
/// the sandbox acts on them: git runs hooks and obeys its config (`core.hooksPath`,
/// `core.fsmonitor`, aliases, filters) the next time the user runs git.
pub const ALWAYS_PROTECTED: &[&str] = &[
    ".git/hooks",
    ".git/config",
    ".git/config.worktree",
    ".git/modules/*/hooks",
    ".git/modules/*/config",
];

/// A protected path: project-relative components, each of which may contain `*` (any run of
/// characters within one name). It protects the path itself and everything beneath it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    pub text: String,
    parts: Vec<Vec<u8>>,
}

impl Protected {
    pub fn parse(s: &str) -> Result<Protected> {
        let bad = |why: &str| Error::Invalid(format!("protect entry {s:?}: {why}"));
        let body = s.trim_start_matches('/').trim_end_matches('/');
        let mut parts = Vec::new();
        for c in body.split('/') {
            if c.is_empty() || c == "." || c == ".." {
                return Err(bad(
                    "must be a relative path inside the project, without `.` or `..`",
                ));
            }
            parts.push(c.as_bytes().to_vec());
        }
        if parts
            .first()
            .is_some_and(|p| p == crate::store::STORE_DIR.as_bytes())
        {
            return Err(bad("the store is always out of the agent's reach"));
        }
        Ok(Protected {
            text: s.to_string(),
            parts,
        })
    }

    /// How `rel` relates to this entry: `Some(true)` if `rel` is the protected path or beneath
    /// it, `Some(false)` if `rel` is one of its ancestors, `None` otherwise.
    fn relation(&self, rel: &[&[u8]]) -> Option<bool> {
        let n = rel.len().min(self.parts.len());
        if !rel[..n]
            .iter()
            .zip(&self.parts[..n])
            .all(|(name, pat)| glob(pat, name))
        {
            return None;
        }
        Some(rel.len() >= self.parts.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub scratch: Vec<Pattern>,
    /// [`ALWAYS_PROTECTED`] plus the project's own `protect` entries.
    pub protect: Vec<Protected>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scratch: DEFAULT_SCRATCH
                .iter()
                .map(|p| Pattern::parse(p).expect("default patterns are valid"))
                .collect(),
            protect: ALWAYS_PROTECTED
                .iter()
                .map(|p| Protected::parse(p).expect("built-in protected paths are valid"))
                .collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    scratch: Option<Vec<String>>,
    protect: Option<Vec<String>>,
}

impl Config {
    pub fn parse(text: &str) -> Result<Config> {
        let f: File = toml::from_str(text)
            .map_err(|e| Error::Invalid(format!("{CONFIG_FILE}: {}", e.message())))?;
        let mut c = Config::default();
        if let Some(list) = f.scratch {
            c.scratch = list
                .iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<_>>()?;
        }
        for p in f.protect.unwrap_or_default() {
            c.protect.push(Protected::parse(&p)?);
        }
        Ok(c)
    }

    /// The project's configuration (the defaults if it has no config file).
    pub fn load(store: &Store) -> Result<Config> {
        let path = store.dir_path().join(CONFIG_FILE);
        let fd = match nix::fcntl::openat(
            store.dir(),
            CONFIG_FILE,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => return Ok(Config::default()),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let mut text = String::new();
        std::fs::File::from(fd)
            .read_to_string(&mut text)
            .map_err(|e| Error::Io {
                op: "read",
                path: path.clone(),
                cause: e,
            })?;
        Config::parse(&text)
    }

    /// Is `rel` (project-relative) a protected path or beneath one? With `or_ancestor`, also
    /// when `rel` is a directory that contains a protected path (renaming or removing it would
    /// take the protected path along). Returns the entry that matched.
    pub fn protected(&self, rel: &Path, or_ancestor: bool) -> Option<&Protected> {
        if self.protect.is_empty() {
            return None;
        }
        let comps = names(rel);
        if comps.is_empty() {
            return None;
        }
        self.protect.iter().find(|p| match p.relation(&comps) {
            Some(inside) => inside || or_ancestor,
            None => false,
        })
    }

    /// Is the project-relative path `rel` inside a scratch tree? `is_dir` says whether `rel`
    /// itself is a directory (a pattern names directories only: a file called `target` at the
    /// root is protected).
    pub fn is_scratch(&self, rel: &Path, is_dir: bool) -> bool {
        if self.scratch.is_empty() {
            return false;
        }
        let comps = names(rel);
        let n = comps.len();
        comps.iter().enumerate().any(|(i, name)| {
            // The last component is a directory only if the caller says so.
            (i + 1 < n || is_dir)
                && self
                    .scratch
                    .iter()
                    .any(|p| (!p.anchored || i == 0) && p.matches_name(name))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_build_trees_and_nothing_else() {
        let c = Config::default();
        assert!(c.is_scratch(Path::new("target"), true));
        assert!(c.is_scratch(Path::new("target/debug/app"), false));
        assert!(
            !c.is_scratch(Path::new("target"), false),
            "a file named target is protected"
        );
        assert!(
            !c.is_scratch(Path::new("src/target/x"), false),
            "/target/ is anchored"
        );
        assert!(c.is_scratch(Path::new("web/node_modules/x/index.js"), false));
        assert!(c.is_scratch(Path::new("a/b/__pycache__/m.pyc"), false));
        assert!(!c.is_scratch(Path::new(".env"), false));
        assert!(!c.is_scratch(Path::new("src/main.rs"), false));
        assert!(!c.is_scratch(Path::new("node_modules_backup/x"), false));
    }

    #[test]
    fn parse_patterns_and_globs() {
        let c = Config::parse("scratch = [\"build*/\", \"/dist/\"]").unwrap();
        assert!(c.is_scratch(Path::new("x/build-release/o"), false));
        assert!(c.is_scratch(Path::new("dist/a"), false));
        assert!(!c.is_scratch(Path::new("x/dist/a"), false));
        assert!(
            !c.is_scratch(Path::new("target/a"), false),
            "the list replaces the defaults"
        );
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert!(Config::parse("scratch = []").unwrap().scratch.is_empty());
    }

    #[test]
    fn protected_paths_and_their_ancestors() {
        let c = Config::parse("protect = [\"secrets/\", \"deploy/*.key\"]").unwrap();
        let p = |s: &str| c.protected(Path::new(s), false).map(|x| x.text.clone());
        let a = |s: &str| c.protected(Path::new(s), true).is_some();
        assert_eq!(p(".git/hooks/pre-commit").as_deref(), Some(".git/hooks"));
        assert_eq!(p(".git/hooks").as_deref(), Some(".git/hooks"));
        assert_eq!(p(".git/config").as_deref(), Some(".git/config"));
        assert!(
            p(".git/config.lock").is_none(),
            "git's lock file is not the config"
        );
        assert!(p(".git/HEAD").is_none());
        assert!(p(".git/objects/ab/cd").is_none());
        assert!(p(".git").is_none());
        assert!(a(".git"), ".git contains protected paths");
        assert!(!a("src"));
        assert!(p(".git/modules/sub/hooks/post-checkout").is_some());
        assert!(p("secrets/db.txt").is_some());
        assert!(p("deploy/prod.key").is_some());
        assert!(p("deploy/prod.txt").is_none());
        assert!(a("deploy"));
        assert!(
            p("sub/.git/hooks/x").is_none(),
            "only the top-level repository"
        );
        assert!(Config::parse("protect = [\"../x\"]").is_err());
        assert!(Config::parse("protect = [\".saferoot/x\"]").is_err());
        assert!(Config::default()
            .protected(Path::new(".git/hooks/x"), false)
            .is_some());
    }

    #[test]
    fn bad_config_is_a_clear_error() {
        for (text, want) in [
            ("scratch = [\"target\"]", "must end with `/`"),
            ("scratch = [\"a/b/\"]", "single directory name"),
            ("scratch = [\"/.saferoot/\"]", "store itself"),
            ("scrach = []", "scrach"),
            ("scratch = 3", "expected a sequence"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
