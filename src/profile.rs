//! Sandbox profiles: which home paths, extra system paths, TCP ports and environment variables
//! an agent gets under `saferoot run --profile NAME`.
//!
//! Profiles are TOML data. The built-in ones are compiled in from `profiles/*.toml`; a file
//! `NAME.toml` in the user's profile directory (`$XDG_CONFIG_HOME/saferoot/profiles`, else
//! `~/.config/saferoot/profiles`) replaces the built-in profile of that name, or adds a new one.
//! A profile may `extends` another (built-in or user); lists are concatenated, parent first,
//! and `set_env` tables are merged, the child's value winning for a name both set.
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
//! set_env = { OLLAMA_HOST = "127.0.0.1:11434" }  # variables set; `$HOME`/`${HOME}` expanded
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
    #[serde(default)]
    set_env: BTreeMap<String, String>,
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
    /// Variables set for the agent, by name; values as written (`$HOME` unexpanded: the agent's
    /// home is known only when running, see [`expand_home`]). They win over passed variables.
    pub set_env: BTreeMap<String, String>,
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
    for (k, v) in &file.set_env {
        check_set_env(k, v).map_err(|msg| invalid(format!("set_env {k:?}: {msg}")))?;
    }
    Ok(file)
}

/// Variables saferoot itself gives the agent; a profile cannot set them.
const SET_BY_SAFEROOT: &[&str] = &["HOME", "TMPDIR", "SAFEROOT_DIR"];

/// Why `set_env` entry `name = value` is refused, if it is.
fn check_set_env(name: &str, value: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err("not a variable name (empty, or contains `=` or NUL)".to_string());
    }
    if name.starts_with("LD_") || NEVER_BY_GLOB.contains(&name) {
        return Err(
            "the dynamic loader's variables (LD_*) and the user's agent sockets cannot be set \
             by a profile"
                .to_string(),
        );
    }
    if SET_BY_SAFEROOT.contains(&name) {
        return Err("saferoot sets this variable itself".to_string());
    }
    if value.contains('\0') {
        return Err("the value contains NUL".to_string());
    }
    expand_home(value, Path::new("/")).map(|_| ())
}

/// `value` with `$HOME` and `${HOME}` replaced by `home` and `$$` by `$`; any other `$` is an
/// error (saferoot expands nothing else, so that a profile means the same in every shell).
pub fn expand_home(value: &str, home: &Path) -> Result<std::ffi::OsString, String> {
    use std::os::unix::ffi::OsStrExt;
    let name_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out: Vec<u8> = Vec::with_capacity(value.len());
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let rest = &b[i + 1..];
        if rest.starts_with(b"$") {
            out.push(b'$');
            i += 2;
        } else if rest.starts_with(b"{HOME}") {
            out.extend_from_slice(home.as_os_str().as_bytes());
            i += 7;
        } else if rest.starts_with(b"HOME") && !rest.get(4).is_some_and(|&c| name_char(c)) {
            out.extend_from_slice(home.as_os_str().as_bytes());
            i += 5;
        } else {
            let var: String = if let Some(braced) = rest.strip_prefix(b"{") {
                match braced.iter().position(|&c| c == b'}') {
                    Some(end) => format!("${{{}}}", String::from_utf8_lossy(&braced[..end])),
                    None => format!("${{{} (no closing brace)", String::from_utf8_lossy(braced)),
                }
            } else {
                let end = rest
                    .iter()
                    .position(|&c| !name_char(c))
                    .unwrap_or(rest.len());
                format!("${}", String::from_utf8_lossy(&rest[..end]))
            };
            return Err(format!(
                "{var} is not expanded: only $HOME and ${{HOME}} are (write $$ for a literal $)"
            ));
        }
    }
    Ok(std::os::unix::ffi::OsStringExt::from_vec(out))
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
    let mut origin: Option<Origin> = None;
    let mut last_origin: Option<Origin> = None;
    while let Some(n) = next {
        if chain.last() == Some(&n) {
            // The user's NAME.toml hides the built-in NAME, so it cannot extend it.
            let builtin = BUILTIN.iter().any(|(b, _)| *b == n);
            return Err(ProfileError::Invalid {
                name: n.clone(),
                origin: last_origin.map(|o| o.to_string()).unwrap_or_default(),
                msg: if builtin {
                    format!(
                        "extends itself: a user profile {n:?} replaces the built-in one, so it \
                         cannot extend it; name yours differently (say `{n}-mine.toml` with \
                         `extends = {n:?}`) and run it with --profile {n}-mine"
                    )
                } else {
                    "extends itself".to_string()
                },
            });
        }
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
        origin.get_or_insert_with(|| o.clone());
        last_origin = Some(o);
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
        set_env: BTreeMap::new(),
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
        p.set_env
            .extend(f.set_env.iter().map(|(k, v)| (k.clone(), v.clone())));
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

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

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
    let set: Vec<String> = p
        .set_env
        .iter()
        .map(|(k, v)| {
            let key = if k
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
            {
                k.clone()
            } else {
                toml_string(k)
            };
            format!("{key} = {}", toml_string(v))
        })
        .collect();
    if set.is_empty() {
        s.push_str("set_env = {}\n");
    } else {
        s.push_str(&format!("set_env = {{ {} }}\n", set.join(", ")));
    }
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
    fn set_env_parses_and_extends_merge_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("parent.toml"),
            "extends = \"base\"\nset_env = { A = \"parent\", B = \"$HOME/b\" }\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("child.toml"),
            "extends = \"parent\"\n[set_env]\nA = \"child\"\nC = \"${HOME}/.c\"\n",
        )
        .unwrap();
        let p = load_from("child", Some(dir.path())).unwrap();
        let want: BTreeMap<String, String> =
            [("A", "child"), ("B", "$HOME/b"), ("C", "${HOME}/.c")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(p.set_env, want);
        let parent = load_from("parent", Some(dir.path())).unwrap();
        assert_eq!(parent.set_env["A"], "parent");
        // No built-in profile sets anything (see docs/agents/claude-code.md for why not even
        // CLAUDE_CONFIG_DIR).
        let none = tempfile::tempdir().unwrap();
        for (name, _) in BUILTIN {
            assert!(load_from(name, Some(none.path()))
                .unwrap()
                .set_env
                .is_empty());
        }
    }

    #[test]
    fn set_env_expands_home_and_nothing_else() {
        let h = Path::new("/home/agent");
        let x = |v: &str| expand_home(v, h);
        assert_eq!(x("$HOME/.claude").unwrap(), "/home/agent/.claude");
        assert_eq!(x("${HOME}/.claude").unwrap(), "/home/agent/.claude");
        assert_eq!(x("$HOME:${HOME}").unwrap(), "/home/agent:/home/agent");
        assert_eq!(x("plain value").unwrap(), "plain value");
        assert_eq!(x("").unwrap(), "");
        assert_eq!(x("cost: $$5").unwrap(), "cost: $5");
        assert_eq!(x("$HOME-x").unwrap(), "/home/agent-x");
        for (bad, var) in [
            ("$HOMEDIR/x", "$HOMEDIR"),
            ("$USER", "$USER"),
            ("${XDG_CONFIG_HOME}/x", "${XDG_CONFIG_HOME}"),
            ("${HOME", "${HOME (no closing brace)"),
            ("a$", "$"),
            ("$1", "$1"),
        ] {
            let e = x(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("{var} is not expanded")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn set_env_errors_are_one_line_and_name_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        for (i, (entry, want)) in [
            ("FOO = \"$USER/x\"", "$USER is not expanded"),
            ("\"\" = \"x\"", "not a variable name"),
            ("\"A=B\" = \"x\"", "not a variable name"),
            ("\"A\\u0000\" = \"x\"", "not a variable name"),
            ("LD_PRELOAD = \"/x.so\"", "dynamic loader"),
            ("LD_LIBRARY_PATH = \"/x\"", "dynamic loader"),
            ("SSH_AUTH_SOCK = \"/x\"", "agent sockets"),
            ("TMPDIR = \"/tmp\"", "saferoot sets"),
            ("HOME = \"/x\"", "saferoot sets"),
            ("A = \"x\\u0000y\"", "NUL"),
        ]
        .into_iter()
        .enumerate()
        {
            let name = format!("bad{i}");
            let path = dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, format!("set_env = {{ {entry} }}\n")).unwrap();
            let e = load_from(&name, Some(dir.path())).unwrap_err().to_string();
            assert!(e.contains(want), "{entry}: {e}");
            assert!(e.contains(&path.display().to_string()), "{entry}: {e}");
            assert!(e.contains("set_env \""), "{entry}: {e}");
            assert!(!e.contains('\n'), "{entry}: {e}");
        }
        std::fs::write(dir.path().join("list.toml"), "set_env = [\"A\"]\n").unwrap();
        let e = load_from("list", Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        std::fs::write(dir.path().join("num.toml"), "set_env = { A = 1 }\n").unwrap();
        assert!(load_from("num", Some(dir.path())).is_err());
    }

    #[test]
    fn a_user_profile_cannot_extend_the_builtin_it_replaces() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("claude-code.toml"),
            "extends = \"claude-code\"\n",
        )
        .unwrap();
        let e = load_from("claude-code", Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("claude-code-mine"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        std::fs::write(dir.path().join("other.toml"), "extends = \"claude-code\"\n").unwrap();
        let e = load_from("other", Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("profile \"claude-code\" ("), "{e}");
        assert!(e.contains("claude-code.toml): extends itself"), "{e}");
        std::fs::remove_file(dir.path().join("other.toml")).unwrap();
        std::fs::write(
            dir.path().join("claude-code-mine.toml"),
            "extends = \"claude-code\"\nset_env = { CLAUDE_CONFIG_DIR = \"$HOME/.claude\" }\n",
        )
        .unwrap();
        std::fs::remove_file(dir.path().join("claude-code.toml")).unwrap();
        let p = load_from("claude-code-mine", Some(dir.path())).unwrap();
        assert_eq!(p.chain, ["claude-code-mine", "claude-code", "base"]);
        assert_eq!(p.set_env["CLAUDE_CONFIG_DIR"], "$HOME/.claude");
        assert!(env_allowed(&p.env, "ANTHROPIC_API_KEY"));
    }

    #[test]
    fn render_round_trips_through_the_parser() {
        let none = tempfile::tempdir().unwrap();
        let p = load_from("pi", Some(none.path())).unwrap();
        let text = render(&p);
        let back = parse("pi", &text, &Origin::Builtin).unwrap();
        assert_eq!(back.connect, p.connect);
        assert_eq!(back.home_write.len(), p.home_write.len());
        assert!(text.contains("\nset_env = {}\n"), "{text}");
        let mut p = p;
        p.set_env
            .insert("CLAUDE_CONFIG_DIR".into(), "${HOME}/.claude".into());
        p.set_env
            .insert("odd name".into(), "a \"q\" \\ \u{1b} é".into());
        let text = render(&p);
        assert!(
            text.contains("set_env = { CLAUDE_CONFIG_DIR = \"${HOME}/.claude\", "),
            "{text}"
        );
        let back = parse("pi", &text, &Origin::Builtin).unwrap();
        assert_eq!(back.set_env, p.set_env);
    }
}
