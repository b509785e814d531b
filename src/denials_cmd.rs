//! `saferoot profile list|show` and `saferoot denials`.

use crate::cli::{self, ProfileCmd};
use crate::profile;
use anyhow::{bail, Result};
use saferoot_snapshots::{journal, time, Op};
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn profile(action: ProfileCmd) -> Result<i32> {
    match action {
        ProfileCmd::List { json: true } => {
            for l in profile::list() {
                println!(
                    "{}",
                    serde_json::json!({
                        "name": l.name,
                        "origin": l.origin,
                        "description": l.description,
                    })
                );
            }
            Ok(0)
        }
        ProfileCmd::List { json: false } => {
            let list = profile::list();
            let width = list.iter().map(|l| l.name.len()).max().unwrap_or(0);
            let out = std::io::stdout();
            let mut out = out.lock();
            for l in list {
                writeln!(
                    out,
                    "{:width$}  {:10}  {}",
                    l.name,
                    if l.origin == "built-in" || l.origin == "error" {
                        l.origin.clone()
                    } else {
                        "user".to_string()
                    },
                    l.description
                )?;
            }
            if let Some(d) = profile::user_dir() {
                writeln!(out, "(user profiles: {}/NAME.toml)", d.display())?;
            }
            Ok(0)
        }
        ProfileCmd::Show { name } => {
            let p = profile::load(&name)?;
            print!("{}", profile::render(&p));
            Ok(0)
        }
    }
}

/// A session of the journal: (number from 1, start time, command).
type Session = (usize, i64, String);

/// The sessions of the journal.
fn sessions(dir: &Path) -> Result<(saferoot_snapshots::Store, Vec<Session>)> {
    let (store, _) = cli::open_store(dir)?;
    let (recs, _) = journal::read(store.dir(), store.dir_path())?;
    let list = recs
        .iter()
        .filter(|r| r.op == Op::Run)
        .enumerate()
        .map(|(i, r)| (i + 1, r.t, r.note.clone().unwrap_or_default()))
        .collect();
    Ok((store, list))
}

pub fn denials(dir: &Path, session: Option<i64>, json: bool) -> Result<i32> {
    let (store, list) = sessions(dir)?;
    if list.is_empty() {
        let (recs, _) = journal::read(store.dir(), store.dir_path())?;
        if let Some((_, r)) = journal::horizon(&recs) {
            bail!(
                "no `saferoot run` session is left in the journal of {}: {}",
                dir.display(),
                saferoot_snapshots::restore::horizon_reason(r)
            );
        }
        bail!(
            "no `saferoot run` session has been recorded in {}",
            dir.display()
        );
    }
    let n = list.len() as i64;
    let want = session.unwrap_or(-1);
    let idx = match want {
        0 => bail!("--session 0: sessions are numbered from 1 (or -1 for the last)"),
        k if k > 0 && k <= n => (k - 1) as usize,
        k if k < 0 && -k <= n => (n + k) as usize,
        k => bail!(
            "--session {k}: there are {n} session(s) in {}",
            dir.display()
        ),
    };
    let (num, t, cmd) = &list[idx];
    let denials: Vec<_> = saferoot_snapshots::denials::read(&store)?
        .into_iter()
        .filter(|d| d.session == *t)
        .collect();
    let home = home();
    let at = crate::run::Places {
        home: home.as_deref(),
        project: Some(dir),
    };
    let out = std::io::stdout();
    let mut out = out.lock();
    if json {
        for d in &denials {
            let mut v = serde_json::to_value(d)?;
            v["session_number"] = serde_json::json!(num);
            v["remedy"] = serde_json::json!(crate::run::remedy(d, at));
            writeln!(out, "{v}")?;
        }
        return Ok(0);
    }
    writeln!(
        out,
        "session {num} of {n}, started {}: `{}` — {} denied access{}",
        time::format_local_short(*t),
        cli::shown_text(cmd),
        denials.len(),
        if denials.len() == 1 { "" } else { "es" }
    )?;
    for (target, what, count, comms, remedy) in crate::run::grouped(&denials, at) {
        let times = if count > 1 {
            format!(", {count}×")
        } else {
            String::new()
        };
        writeln!(
            out,
            "  {target}  [{what}, by {comms}{times}]\n      {remedy}"
        )?;
    }
    Ok(0)
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}
