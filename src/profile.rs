//! Sandbox profiles: which home paths, extra system paths, TCP ports and environment variables
//! an agent gets under `saferoot run --profile NAME`.
//!
//! Profiles are TOML data. The built-in ones are compiled in from `profiles/*.toml`; a file
//! `NAME.toml` in the user's profile directory (`$XDG_CONFIG_HOME/saferoot/profiles`, else
//! `~/.config/saferoot/profiles`) replaces the built-in profile of that name, or adds a new one.
//! A profile may `extends` another (built-in or user); lists are concatenated, parent first.
//!
//! ```toml
//! description = "Pi coding agent with a local Ollama (127.0.0.1:11434)"
//! extends = "base"
//! home_read = []            # relative to the agent's HOME: read + execute
//! home_write = [".pi"]      # relative to HOME: read + write (created as directories if missing)
//! read = []                 # absolute paths: read + execute
//! write = []                # absolute paths: read + write
//! connect = [11434]         # TCP ports the agent may connect to
//! bind = []                 # TCP ports it may listen on
//! env = ["OLLAMA_HOST"]     # variables passed through; a trailing `*` matches any suffix
//! tmp = false               # true: /tmp is writable too (else only the private TMPDIR)
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The profile used when `run` is given none.
pub const DEFAULT_PROFILE: &str = "generic";

/// Built-in profiles, by name, as shipped in `profiles/`.
const BUILTIN: &[(&str, &str)] = &[
    ("base", include_str!("../profiles/base.toml")),
    ("generic", include_str!("../profiles/generic.toml")),
    ("pi", include_str!("../profiles/pi.toml")),
    ("claude-code", include_str!("../profiles/claude-code.toml")),
    ("codex", include_str!("../profiles/codex.toml")),
    ("opencode", include_str!("../profiles/opencode.toml")),
    ("aider", include_str!("../profiles/aider.toml")),
    ("gemini", include_str!("../profiles/gemini.toml")),
];

/// Paths under a home directory that hold credentials or private history. No profile may make
/// them readable, not even by listing a directory that contains them; only an explicit
/// `--allow-read` of the path itself can.
pub const SECRETS: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".config/gcloud",
    ".kube",
    ".docker",
    ".netrc",
    ".git-credentials",
    ".config/git/credentials",
    ".config/gh",
    ".npmrc",
    ".pypirc",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".password-store",
    ".local/share/keyrings",
    ".vault-token",
    ".bash_history",
    ".zsh_history",
    ".histfile",
    ".python_history",
    ".node_repl_history",
    ".psql_history",
    ".mysql_history",
    ".sqlite_history",
    ".lesshst",
    ".local/share/fish/fish_history",
];

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("unknown profile {name:?} (`saferoot profile list` shows the available ones)")]
    Unknown { name: String },
    #[error("profile {name:?} ({origin}): {msg}")]
    Invalid {
        name: String,
        origin: String,
        msg: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("profile {name:?}: `extends` chain is a cycle or deeper than 8 ({chain})")]
    Cycle { name: String, chain: String },
}

/// One profile file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    description: Option<String>,
    extends: Option<String>,
    #[serde(default)]
    home_read: Vec<String>,
    #[serde(default)]
    home_write: Vec<String>,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
    #[serde(default)]
    connect: Vec<u16>,
    #[serde(default)]
    bind: Vec<u16>,
    #[serde(default)]
    env: Vec<String>,
    tmp: Option<bool>,
}

/// Where a profile came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Builtin,
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Builtin => f.write_str("built-in"),
            Origin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A profile with its `extends` chain applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub origin: Origin,
    /// This profile, then the one it extends, and so on.
    pub chain: Vec<String>,
    pub home_read: Vec<PathBuf>,
    pub home_write: Vec<PathBuf>,
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub connect: Vec<u16>,
    pub bind: Vec<u16>,
    pub env: Vec<String>,
    pub tmp: bool,
}

/// The directory user profiles are read from.
pub fn user_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        let x = PathBuf::from(x);
        if x.is_absolute() {
            return Some(x.join("saferoot/profiles"));
        }
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config/saferoot/profiles"))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
        && !name.starts_with('.')
}

/// The text of profile `name` and where it came from: the user's file first, else built-in.
fn source(name: &str, user: Option<&Path>) -> Result<(String, Origin), ProfileError> {
    if !valid_name(name) {
        return Err(ProfileError::Unknown {
            name: name.to_string(),
        });
    }
    if let Some(dir) = user {
        let path = dir.join(format!("{name}.toml"));
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok((text, Origin::File(path))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ProfileError::Read { path, source }),
        }
    }
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| (text.to_string(), Origin::Builtin))
        .ok_or_else(|| ProfileError::Unknown {
            name: name.to_string(),
        })
}

fn parse(name: &str, text: &str, origin: &Origin) -> Result<ProfileFile, ProfileError> {
    let invalid = |msg: String| ProfileError::Invalid {
        name: name.to_string(),
        origin: origin.to_string(),
        msg,
    };
    let file: ProfileFile = toml::from_str(text).map_err(|e| {
        // toml's message spans several lines (the offending line and a caret); keep the gist.
        let msg = e.message().to_string();
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        invalid(match line {
            Some(l) => format!("line {l}: {msg}"),
            None => msg,
        })
    })?;
    for p in file.home_read.iter().chain(&file.home_write) {
        let path = Path::new(p);
        if p.is_empty()
            || path.is_absolute()
            || path
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(invalid(format!(
                "home path {p:?} must be relative to HOME, without `..`"
            )));
        }
    }
    for p in file.read.iter().chain(&file.write) {
        let path = Path::new(p);
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(invalid(format!(
                "path {p:?} must be absolute, without `..` (home paths go in home_read/home_write)"
            )));
        }
    }
    if let Some(0) = file
        .connect
        .iter()
        .chain(&file.bind)
        .copied()
        .find(|&p| p == 0)
    {
        return Err(invalid("port 0 is not a port".to_string()));
    }
    for v in &file.env {
        let body = v.strip_suffix('*').unwrap_or(v);
        if (body.is_empty() && v != "*")
            || !body.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            return Err(invalid(format!(
                "environment entry {v:?} must be a variable name, optionally ending in `*`"
            )));
        }
    }
    Ok(file)
}

/// Load profile `name` with its `extends` chain applied.
pub fn load(name: &str) -> Result<Profile, ProfileError> {
    load_from(name, user_dir().as_deref())
}

/// [`load`] with an explicit user profile directory (tests).
pub fn load_from(name: &str, user: Option<&Path>) -> Result<Profile, ProfileError> {
    let mut files = Vec::new();
    let mut chain: Vec<String> = Vec::new();
    let mut next = Some(name.to_string());
    let mut origin = None;
    while let Some(n) = next {
        if chain.contains(&n) || chain.len() >= 8 {
            chain.push(n);
            return Err(ProfileError::Cycle {
                name: name.to_string(),
                chain: chain.join(" → "),
            });
        }
        let (text, o) = source(&n, user)?;
        let file = parse(&n, &text, &o)?;
        next = file.extends.clone();
        origin.get_or_insert(o);
        chain.push(n);
        files.push(file);
    }
    let description = files
        .first()
        .and_then(|f| f.description.clone())
        .unwrap_or_default();
    let mut p = Profile {
        name: name.to_string(),
        description,
        origin: origin.unwrap_or(Origin::Builtin),
        chain,
        home_read: Vec::new(),
        home_write: Vec::new(),
        read: Vec::new(),
        write: Vec::new(),
        connect: Vec::new(),
        bind: Vec::new(),
        env: Vec::new(),
        tmp: false,
    };
    // Parents first, so that a listing reads from general to specific.
    for f in files.iter().rev() {
        p.home_read.extend(f.home_read.iter().map(PathBuf::from));
        p.home_write.extend(f.home_write.iter().map(PathBuf::from));
        p.read.extend(f.read.iter().map(PathBuf::from));
        p.write.extend(f.write.iter().map(PathBuf::from));
        p.connect.extend(&f.connect);
        p.bind.extend(&f.bind);
        p.env.extend(f.env.iter().cloned());
        if let Some(t) = f.tmp {
            p.tmp = t;
        }
    }
    dedup(&mut p.home_read);
    dedup(&mut p.home_write);
    dedup(&mut p.read);
    dedup(&mut p.write);
    dedup(&mut p.connect);
    dedup(&mut p.bind);
    dedup(&mut p.env);
    Ok(p)
}

fn dedup<T: PartialEq + Clone>(v: &mut Vec<T>) {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v.drain(..) {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    *v = out;
}

/// One line of `saferoot profile list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub name: String,
    pub origin: String,
    pub description: String,
}

/// Every profile: built-in ones, then user ones, by name. A user file that does not parse is
/// listed with its error as the description rather than hiding the others.
pub fn list() -> Vec<Listed> {
    list_from(user_dir().as_deref())
}

pub fn list_from(user: Option<&Path>) -> Vec<Listed> {
    let mut names: BTreeMap<String, ()> = BuiltIn::names().map(|n| (n, ())).collect();
    if let Some(dir) = user {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let file = e.file_name();
                let Some(f) = file.to_str() else { continue };
                if let Some(n) = f.strip_suffix(".toml") {
                    if valid_name(n) {
                        names.insert(n.to_string(), ());
                    }
                }
            }
        }
    }
    names
        .into_keys()
        .map(|n| match load_from(&n, user) {
            Ok(p) => Listed {
                name: n,
                origin: p.origin.to_string(),
                description: p.description,
            },
            Err(e) => Listed {
                name: n,
                origin: "error".to_string(),
                description: e.to_string(),
            },
        })
        .collect()
}

struct BuiltIn;
impl BuiltIn {
    fn names() -> impl Iterator<Item = String> {
        BUILTIN.iter().map(|(n, _)| n.to_string())
    }
}

/// Whether environment variable `name` is passed by the entries `pass`. `*` alone matches
/// everything except the dynamic loader's variables (`LD_*`), which only an entry naming them
/// exactly passes.
pub fn env_allowed(pass: &[String], name: &str) -> bool {
    pass.iter().any(|p| {
        if p == name {
            return true;
        }
        if name.starts_with("LD_") || NEVER_BY_GLOB.contains(&name) {
            return false;
        }
        match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => false,
        }
    })
}

/// Variables no glob passes: they hand the agent a way out of the sandbox (a socket to the
/// user's SSH or GPG agent, which can sign and authenticate as the user).
const NEVER_BY_GLOB: &[&str] = &[
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "GPG_AGENT_INFO",
    "DBUS_SESSION_BUS_ADDRESS",
];

/// The profile as TOML text, its `extends` chain applied (`saferoot profile show`).
pub fn render(p: &Profile) -> String {
    fn list<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
        let v: Vec<String> = items
            .map(|x| {
                let s = x.to_string();
                format!("{s:?}")
            })
            .collect();
        format!("[{}]", v.join(", "))
    }
    fn ports(items: &[u16]) -> String {
        let v: Vec<String> = items.iter().map(|p| p.to_string()).collect();
        format!("[{}]", v.join(", "))
    }
    let mut s = String::new();
    s.push_str(&format!("# profile {:?} ({})", p.name, p.origin));
    if p.chain.len() > 1 {
        s.push_str(&format!(", extends {}", p.chain[1..].join(" → ")));
    }
    s.push('\n');
    s.push_str(&format!("description = {:?}\n", p.description));
    s.push_str(&format!(
        "home_read = {}\n",
        list(p.home_read.iter().map(|x| x.display()))
    ));
    s.push_str(&format!(
        "home_write = {}\n",
        list(p.home_write.iter().map(|x| x.display()))
    ));
    s.push_str(&format!(
        "read = {}\n",
        list(p.read.iter().map(|x| x.display()))
    ));
    s.push_str(&format!(
        "write = {}\n",
        list(p.write.iter().map(|x| x.display()))
    ));
    s.push_str(&format!("connect = {}\n", ports(&p.connect)));
    s.push_str(&format!("bind = {}\n", ports(&p.bind)));
    s.push_str(&format!("env = {}\n", list(p.env.iter())));
    s.push_str(&format!("tmp = {}\n", p.tmp));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_loads() {
        let none = tempfile::tempdir().unwrap();
        for (name, _) in BUILTIN {
            let p = load_from(name, Some(none.path())).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p.origin, Origin::Builtin);
            assert!(!p.description.is_empty(), "{name} has no description");
            if *name != "base" {
                assert_eq!(p.chain.last().map(String::as_str), Some("base"), "{name}");
                assert!(p.read.contains(&PathBuf::from("/usr")), "{name}");
            }
            for h in p.home_read.iter().chain(&p.home_write) {
                for s in SECRETS {
                    assert!(
                        !Path::new(s).starts_with(h) && !h.starts_with(s),
                        "{name} lists {} which reaches the secret {s}",
                        h.display()
                    );
                }
            }
        }
    }

    #[test]
    fn pi_allows_ollama() {
        let none = tempfile::tempdir().unwrap();
        let p = load_from("pi", Some(none.path())).unwrap();
        assert!(p.connect.contains(&11434));
    }

    #[test]
    fn user_file_overrides_builtin_and_extends_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pi.toml"),
            "description = \"mine\"\nextends = \"base\"\nconnect = [8080]\n",
        )
        .unwrap();
        let p = load_from("pi", Some(dir.path())).unwrap();
        assert_eq!(p.description, "mine");
        assert_eq!(p.connect, vec![8080]);
        assert_eq!(p.origin, Origin::File(dir.path().join("pi.toml")));
        assert_eq!(p.chain, vec!["pi".to_string(), "base".to_string()]);
    }

    #[test]
    fn unknown_and_malformed_are_one_line_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_from("nope", Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("unknown profile \"nope\""), "{e}");
        assert!(!e.contains('\n'));
        std::fs::write(dir.path().join("bad.toml"), "connect = [\"x\"\n").unwrap();
        let e = load_from("bad", Some(dir.path())).unwrap_err().to_string();
        assert!(e.starts_with("profile \"bad\" ("), "{e}");
        assert!(e.contains("line "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        std::fs::write(dir.path().join("typo.toml"), "conect = [1]\n").unwrap();
        let e = load_from("typo", Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("conect"), "{e}");
        std::fs::write(dir.path().join("abs.toml"), "home_read = [\"/etc\"]\n").unwrap();
        let e = load_from("abs", Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("relative to HOME"), "{e}");
        std::fs::write(dir.path().join("up.toml"), "home_read = [\"../x\"]\n").unwrap();
        assert!(load_from("up", Some(dir.path())).is_err());
        std::fs::write(dir.path().join("port.toml"), "connect = [70000]\n").unwrap();
        assert!(load_from("port", Some(dir.path())).is_err());
        std::fs::write(dir.path().join("a.toml"), "extends = \"b\"\n").unwrap();
        std::fs::write(dir.path().join("b.toml"), "extends = \"a\"\n").unwrap();
        let e = load_from("a", Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
        let e = load_from("../etc/passwd", Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown profile"), "{e}");
    }

    #[test]
    fn list_shows_builtin_and_user_profiles_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mine.toml"), "description = \"x\"\n").unwrap();
        std::fs::write(dir.path().join("broken.toml"), "description = \n").unwrap();
        let l = list_from(Some(dir.path()));
        let names: Vec<&str> = l.iter().map(|x| x.name.as_str()).collect();
        for n in ["base", "generic", "pi", "claude-code", "mine", "broken"] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        let broken = l.iter().find(|x| x.name == "broken").unwrap();
        assert_eq!(broken.origin, "error");
    }

    #[test]
    fn env_globs() {
        let pass = vec!["PATH".to_string(), "PI_*".to_string(), "*".to_string()];
        assert!(env_allowed(&pass, "PATH"));
        assert!(env_allowed(&pass, "PI_X"));
        assert!(env_allowed(&pass, "ANYTHING"));
        assert!(!env_allowed(&pass, "LD_PRELOAD"));
        assert!(!env_allowed(&pass, "SSH_AUTH_SOCK"));
        let exact = vec!["LD_LIBRARY_PATH".to_string()];
        assert!(env_allowed(&exact, "LD_LIBRARY_PATH"));
        assert!(!env_allowed(&exact, "LD_PRELOAD"));
        assert!(!env_allowed(&["PI_*".to_string()], "OTHER"));
    }

    #[test]
    fn render_round_trips_through_the_parser() {
        let none = tempfile::tempdir().unwrap();
        let p = load_from("pi", Some(none.path())).unwrap();
        let text = render(&p);
        let back = parse("pi", &text, &Origin::Builtin).unwrap();
        assert_eq!(back.connect, p.connect);
        assert_eq!(back.home_write.len(), p.home_write.len());
    }
}
