//! From a profile and the `run` flags to a checked Landlock [`Policy`].
//!
//! Landlock only grants: everything not named is denied. So the rules are built from the
//! profile's lists (system paths, home paths), the live mount, the session's private TMPDIR,
//! device files, and the `--allow-*` flags; then two checks refuse a rule set that would defeat
//! the protection:
//! - no writable path may contain the real project directory or its store
//!   ([`crate::sandbox::ensure_no_write_rule_contains`]);
//! - no rule may make a secret readable ([`crate::profile::SECRETS`] under the agent's home and
//!   the invoking user's home), unless the user named that secret itself with `--allow-read`.

use crate::profile::{Profile, SECRETS};
use crate::sandbox::{self, Policy, VerifiedMount};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// What the user asked for on the command line, on top of the profile.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    pub allow_read: Vec<PathBuf>,
    pub allow_write: Vec<PathBuf>,
    pub allow_port: Vec<u16>,
    pub allow_bind: Vec<u16>,
}

/// A policy and where each of its path rules came from.
#[derive(Debug, Clone)]
pub struct Built {
    pub policy: Policy,
    /// (path as ruled, origin such as `profile pi` or `--allow-read`), for messages.
    pub origins: Vec<(PathBuf, String)>,
    /// Home directories created for `home_write` entries that did not exist yet.
    pub created: Vec<PathBuf>,
}

/// Everything [`build`] needs to know about the session.
pub struct Session<'a> {
    pub profile: &'a Profile,
    pub extra: &'a Extra,
    /// The agent's home directory (the `--user` account's, else the invoking user's).
    pub home: &'a Path,
    /// Other homes whose secrets must stay unreadable (the invoking user's, under `--user`).
    pub other_homes: &'a [PathBuf],
    pub mount: &'a VerifiedMount,
    pub project: &'a Path,
    pub store: &'a Path,
    pub tmpdir: &'a Path,
    /// Owner for created home directories (`--user`), else the caller's.
    pub owner: Option<(u32, u32)>,
}

/// Build and check the policy. Paths of the profile that do not exist are skipped (a profile
/// lists what an agent may use, not what must be there), except `home_write` entries, which are
/// created as private directories so the agent can keep its state on the first run. Paths given
/// on the command line must exist.
pub fn build(s: &Session) -> Result<Built> {
    let mut b = Built {
        policy: Policy::default(),
        origins: Vec::new(),
        created: Vec::new(),
    };
    let pname = format!("profile {}", s.profile.name);
    for p in &s.profile.read {
        if p.exists() {
            b.policy.read_exec.push(p.clone());
            b.origins.push((p.clone(), pname.clone()));
        }
    }
    for p in &s.profile.home_read {
        let full = s.home.join(p);
        if full.exists() {
            b.policy.read_exec.push(full.clone());
            b.origins.push((full, pname.clone()));
        }
    }
    for p in &s.profile.home_write {
        let full = s.home.join(p);
        if std::fs::symlink_metadata(&full).is_err() {
            create_private_dir(s.home, p, s.owner)?;
            b.created.push(full.clone());
        }
        b.policy.write.push(full.clone());
        b.origins.push((full, pname.clone()));
    }
    for p in &s.profile.write {
        if p.exists() {
            b.policy.write.push(p.clone());
            b.origins.push((p.clone(), pname.clone()));
        }
    }
    if s.profile.tmp {
        b.policy.write.push(PathBuf::from("/tmp"));
        b.origins
            .push((PathBuf::from("/tmp"), format!("{pname} (tmp = true)")));
    }
    for (list, flag, write) in [
        (&s.extra.allow_read, "--allow-read", false),
        (&s.extra.allow_write, "--allow-write", true),
    ] {
        for p in list {
            let abs = match p.canonicalize() {
                Ok(a) => a,
                Err(e) => bail!("{flag} {}: {}", p.display(), crate::cli::strip_os_error(&e)),
            };
            if write {
                b.policy.write.push(abs.clone());
            } else {
                b.policy.read_exec.push(abs.clone());
            }
            b.origins.push((abs, flag.to_string()));
        }
    }
    b.policy.write.push(s.mount.path().to_path_buf());
    b.origins
        .push((s.mount.path().to_path_buf(), "the project mount".into()));
    b.policy.write.push(s.tmpdir.to_path_buf());
    b.origins
        .push((s.tmpdir.to_path_buf(), "the session's TMPDIR".into()));
    b.policy.write_files = sandbox::device_files();

    b.policy.connect = s.profile.connect.clone();
    b.policy.connect.extend(&s.extra.allow_port);
    b.policy.connect.sort_unstable();
    b.policy.connect.dedup();
    b.policy.bind = s.profile.bind.clone();
    b.policy.bind.extend(&s.extra.allow_bind);
    b.policy.bind.sort_unstable();
    b.policy.bind.dedup();

    sandbox::ensure_no_write_rule_contains(
        &b.policy,
        &[s.project, s.store],
        std::slice::from_ref(s.mount),
    )?;
    let mut homes = vec![s.home.to_path_buf()];
    homes.extend(s.other_homes.iter().cloned());
    check_secrets(&b, &homes, &s.extra.allow_read)?;
    Ok(b)
}

/// `mkdir -p HOME/rel` for the components that are missing, each 0700 and owned by `owner`.
fn create_private_dir(home: &Path, rel: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let mut cur = home.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        if std::fs::symlink_metadata(&cur).is_ok() {
            continue;
        }
        if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&cur) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                bail!(
                    "create {}: {}",
                    cur.display(),
                    crate::cli::strip_os_error(&e)
                );
            }
        }
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&cur, Some(uid), Some(gid)).map_err(|e| {
                anyhow::anyhow!(
                    "chown {}: {}",
                    cur.display(),
                    crate::cli::strip_os_error(&e)
                )
            })?;
        }
    }
    Ok(())
}

/// The secrets that exist under `homes`, resolved (a secret may be a symlink to elsewhere).
fn existing_secrets(homes: &[PathBuf]) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for h in homes {
        for s in SECRETS {
            let p = h.join(s);
            if std::fs::symlink_metadata(&p).is_ok() {
                let resolved = p.canonicalize().unwrap_or_else(|_| p.clone());
                out.push((p, resolved));
            }
        }
    }
    out
}

/// Refuse a rule that contains a secret, or lies inside one, unless it is an `--allow-read` of
/// exactly that secret or of something inside it (the user named it; that is their call).
fn check_secrets(b: &Built, homes: &[PathBuf], explicit: &[PathBuf]) -> Result<()> {
    let secrets = existing_secrets(homes);
    let explicit: Vec<PathBuf> = explicit
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    let rules = b
        .policy
        .read_exec
        .iter()
        .chain(&b.policy.write)
        .chain(&b.policy.write_files);
    for rule in rules {
        let Ok(resolved) = rule.canonicalize() else {
            continue;
        };
        for (shown, secret) in &secrets {
            let contains = secret.starts_with(&resolved) && *secret != resolved;
            let inside = resolved.starts_with(secret);
            if !contains && !inside {
                continue;
            }
            let named = inside && explicit.contains(&resolved);
            if named {
                continue;
            }
            let origin = b
                .origins
                .iter()
                .find(|(p, _)| p == rule)
                .map(|(_, o)| o.as_str())
                .unwrap_or("the sandbox");
            if contains {
                bail!(
                    "the sandbox rule {} (from {origin}) would make the secret {} readable: \
                     allow narrower paths",
                    rule.display(),
                    shown.display()
                );
            }
            bail!(
                "the sandbox rule {} (from {origin}) is inside the secret {}: only \
                 `--allow-read {}` can allow it",
                rule.display(),
                shown.display(),
                rule.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(read: &[&Path], origin: &str) -> Built {
        Built {
            policy: Policy {
                read_exec: read.iter().map(|p| p.to_path_buf()).collect(),
                ..Policy::default()
            },
            origins: read
                .iter()
                .map(|p| (p.to_path_buf(), origin.to_string()))
                .collect(),
            created: Vec::new(),
        }
    }

    #[test]
    fn secrets_are_refused_by_containing_rules_and_allowed_only_when_named() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::create_dir_all(home.join(".config/app")).unwrap();
        std::fs::write(home.join(".ssh/id_ed25519"), "k").unwrap();
        let homes = vec![home.clone()];

        let e = check_secrets(&built(&[&home], "profile x"), &homes, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("would make the secret"), "{e}");
        assert!(e.contains(".ssh"), "{e}");
        assert!(e.contains("profile x"), "{e}");

        let ssh = home.join(".ssh");
        let e = check_secrets(&built(&[&ssh], "profile x"), &homes, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("only `--allow-read"), "{e}");
        check_secrets(
            &built(&[&ssh], "--allow-read"),
            &homes,
            std::slice::from_ref(&ssh),
        )
        .unwrap();
        check_secrets(
            &built(&[&home.join(".config/app")], "profile x"),
            &homes,
            &[],
        )
        .unwrap();
    }

    #[test]
    fn a_secret_behind_a_symlink_is_found() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("home");
        let keys = t.path().join("keys");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&keys).unwrap();
        std::os::unix::fs::symlink(&keys, home.join(".ssh")).unwrap();
        let e = check_secrets(
            &built(&[t.path()], "--allow-read"),
            std::slice::from_ref(&home),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(".ssh"), "{e}");
    }

    #[test]
    fn missing_home_write_dirs_are_created_private() {
        let t = tempfile::tempdir().unwrap();
        create_private_dir(t.path(), Path::new(".pi/agent"), None).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(t.path().join(".pi/agent")).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
    }
}
