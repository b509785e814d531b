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
//!
//! ```toml
//! [retention]              # what `saferoot gc` keeps (see gc.rs)
//! keep_within = "14d"      # history younger than this; "off": no age limit
//! max_size = "10GiB"       # store size cap: bytes ("500MiB", "2G") or "10%" of the filesystem
//! ```

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

/// History younger than this is kept by default: two weeks.
pub const DEFAULT_KEEP_WITHIN_NS: i64 = 14 * 86_400 * 1_000_000_000;
/// The default store size cap: 10 GiB or 10% of the filesystem, whichever is smaller.
pub const DEFAULT_MAX_BYTES: u64 = 10 << 30;
pub const DEFAULT_MAX_PERCENT: f64 = 10.0;

/// A cap on the store's size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SizeCap {
    /// No cap.
    Off,
    Bytes(u64),
    /// A share of the size of the filesystem the store is on.
    Percent(f64),
    /// The built-in default: the smaller of [`DEFAULT_MAX_BYTES`] and [`DEFAULT_MAX_PERCENT`].
    Default,
}

impl SizeCap {
    /// Parse `10GiB`, `500MiB`, `2G`, `4096`, `10%` or `off`.
    pub fn parse(s: &str) -> Result<SizeCap> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") {
            return Ok(SizeCap::Off);
        }
        let bad = || {
            Error::Invalid(format!(
                "invalid size {s:?} (examples: 10GiB, 500MiB, 2G, 4096, 10%, off)"
            ))
        };
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(v > 0.0 && v <= 100.0) {
                return Err(bad());
            }
            return Ok(SizeCap::Percent(v));
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        // Whole numbers exactly (f64 would round above 2^53); fractions of a unit such as
        // 1.5GiB through f64, and only if they come to whole bytes. Nothing that does not fit
        // in 64 bits.
        if !num.contains('.') {
            let v: u64 = num.parse().map_err(|_| bad())?;
            return v.checked_mul(mult).map(SizeCap::Bytes).ok_or_else(bad);
        }
        let v: f64 = num.parse().map_err(|_| bad())?;
        let bytes = v * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 || bytes.fract() != 0.0 {
            return Err(bad());
        }
        Ok(SizeCap::Bytes(bytes as u64))
    }

    /// The cap in bytes for a filesystem of `fs_bytes`; `None`: no cap.
    pub fn bytes(self, fs_bytes: u64) -> Option<u64> {
        let pct = |p: f64| (fs_bytes as f64 * p / 100.0) as u64;
        match self {
            SizeCap::Off => None,
            SizeCap::Bytes(b) => Some(b),
            SizeCap::Percent(p) => Some(pct(p)),
            SizeCap::Default => Some(DEFAULT_MAX_BYTES.min(pct(DEFAULT_MAX_PERCENT))),
        }
    }

    /// As people write it.
    pub fn describe(self) -> String {
        match self {
            SizeCap::Off => "no size cap".into(),
            SizeCap::Bytes(b) => crate::human_bytes(b),
            SizeCap::Percent(p) => format!("{p}% of the filesystem"),
            SizeCap::Default => format!(
                "{} or {DEFAULT_MAX_PERCENT}% of the filesystem, whichever is smaller",
                crate::human_bytes(DEFAULT_MAX_BYTES)
            ),
        }
    }
}

/// Parse a duration: `14d`, `36h`, `90m`, `45s`, `2w`, sums such as `1d12h`, or `off`
/// (`None`). Returns nanoseconds.
pub fn parse_duration(s: &str) -> Result<Option<i64>> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let bad = || {
        Error::Invalid(format!(
            "invalid duration {s:?} (examples: 14d, 36h, 90m, 2w, 1d12h, off)"
        ))
    };
    let mut total: i64 = 0;
    let mut rest = t;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if n == 0 {
            return Err(bad());
        }
        let v: i64 = rest[..n].parse().map_err(|_| bad())?;
        let u = rest[n..].chars().next().ok_or_else(bad)?;
        let secs: i64 = match u {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        total = v
            .checked_mul(secs * 1_000_000_000)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
        rest = &rest[n + u.len_utf8()..];
    }
    Ok(Some(total))
}

/// A duration in nanoseconds as people write it (`14d`, `1d12h`, `90m`).
pub fn describe_duration(ns: i64) -> String {
    let mut s = ns / 1_000_000_000;
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// What `gc` keeps: `[retention]` in config.toml.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// History younger than this is kept (unless the size cap needs it); `None`: any age.
    pub keep_within_ns: Option<i64>,
    pub max_size: SizeCap,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_within_ns: Some(DEFAULT_KEEP_WITHIN_NS),
            max_size: SizeCap::Default,
        }
    }
}

impl Retention {
    pub fn describe(&self) -> String {
        format!(
            "keep {}, {}",
            self.keep_within_ns
                .map(|d| format!("{} of history", describe_duration(d)))
                .unwrap_or_else(|| "history of any age".into()),
            match self.max_size {
                SizeCap::Off => self.max_size.describe(),
                cap => format!("at most {}", cap.describe()),
            }
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub scratch: Vec<Pattern>,
    /// [`ALWAYS_PROTECTED`] plus the project's own `protect` entries.
    pub protect: Vec<Protected>,
    pub retention: Retention,
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
            retention: Retention::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    scratch: Option<Vec<String>>,
    protect: Option<Vec<String>>,
    retention: Option<RetentionFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionFile {
    keep_within: Option<String>,
    max_size: Option<String>,
}

impl Config {
    pub fn parse(text: &str) -> Result<Config> {
        let f: File = toml::from_str(text).map_err(|e| Error::Invalid(e.message().to_string()))?;
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
        if let Some(r) = f.retention {
            let ctx = |e: Error| Error::Invalid(format!("[retention] {e}"));
            if let Some(k) = r.keep_within {
                c.retention.keep_within_ns = parse_duration(&k).map_err(ctx)?;
            }
            if let Some(m) = r.max_size {
                c.retention.max_size = SizeCap::parse(&m).map_err(ctx)?;
            }
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
        Config::parse(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
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
    fn retention_sizes_and_durations() {
        let c =
            Config::parse("[retention]\nkeep_within = \"1d12h\"\nmax_size = \"1.5GiB\"").unwrap();
        assert_eq!(c.retention.keep_within_ns, Some(36 * 3600 * 1_000_000_000));
        assert_eq!(c.retention.max_size, SizeCap::Bytes(3 << 29));
        assert_eq!(Config::parse("").unwrap().retention, Retention::default());
        assert_eq!(SizeCap::parse("10%").unwrap(), SizeCap::Percent(10.0));
        assert_eq!(SizeCap::parse("off").unwrap(), SizeCap::Off);
        assert_eq!(SizeCap::parse("4096").unwrap(), SizeCap::Bytes(4096));
        assert_eq!(SizeCap::Default.bytes(1 << 40), Some(10 << 30));
        assert_eq!(SizeCap::Default.bytes(1 << 30), Some((1u64 << 30) / 10));
        assert_eq!(parse_duration("off").unwrap(), None);
        assert_eq!(
            parse_duration("2w").unwrap(),
            Some(14 * 86_400 * 1_000_000_000)
        );
        assert_eq!(describe_duration(36 * 3600 * 1_000_000_000), "1d12h");
        for bad in ["", "14", "d", "14x", "-3d", "1.5d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(SizeCap::parse("0.5KiB").unwrap(), SizeCap::Bytes(512));
        assert_eq!(SizeCap::parse("0").unwrap(), SizeCap::Bytes(0));
        assert_eq!(
            SizeCap::parse("9007199254740993").unwrap(),
            SizeCap::Bytes(9_007_199_254_740_993)
        );
        assert_eq!(
            SizeCap::parse("18446744073709551615").unwrap(),
            SizeCap::Bytes(u64::MAX)
        );
        for bad in [
            "",
            "10XB",
            "-1G",
            "0%",
            "150%",
            "ten",
            "0.5",
            "1.5b",
            "18446744073709551616",
            "20000000TiB",
        ] {
            assert!(SizeCap::parse(bad).is_err(), "{bad:?}");
        }
        let e = Config::parse("[retention]\nmax_size = \"lots\"").unwrap_err();
        assert!(e.to_string().contains("[retention]"), "{e}");
    }

    #[test]
    fn a_bad_file_is_named_once_with_its_path() {
        let t = tempfile::tempdir().unwrap();
        let root: std::os::fd::OwnedFd = std::fs::File::open(t.path()).unwrap().into();
        let store =
            crate::Store::open_or_create(std::os::fd::AsFd::as_fd(&root), t.path()).unwrap();
        let path = t.path().join(".saferoot").join(CONFIG_FILE);
        for text in ["scratch = [", "[retention]\nkeep_within = \"5x\""] {
            std::fs::write(&path, text).unwrap();
            let e = Config::load(&store).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{}: ", path.display())), "{e}");
            assert_eq!(e.matches(CONFIG_FILE).count(), 1, "{e}");
        }
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
