//! A real agent under the sandbox: the Pi coding agent (npm `@mariozechner/pi-coding-agent`,
//! pinned by `tests/fixtures/pi-agent/package-lock.json`), talking to a scripted stand-in for
//! Ollama on 127.0.0.1:11434 (`tests/fixtures/fake_ollama.py`), is told by its "model" to
//! `rm -rf` the untracked files of a repository and to edit a tracked one. Under
//! `saferoot run --profile pi` it must do exactly that with no denial of anything it needs, and
//! `saferoot restore @start` must bring the tree back byte for byte.
//!
//! Pi is installed by this test with `npm ci` into `target/tmp/pi-agent` (once; reused while the
//! lock file is unchanged). That prefix is outside the system paths the profile reads, so the run
//! adds `--allow-read` for it, as a user whose npm prefix is not under /usr would. Without Node.js
//! 20.6+ and npm the test is skipped, or fails when `CI` is set (`.ci/run` installs them).

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PATH: &str = "/usr/local/bin:/usr/bin:/bin";
const PROMPT: &str = "Clean up the untracked files and mark the README as reviewed.";

/// Skip (outside CI) or fail (in CI) with `why`.
fn unavailable(why: &str) -> Option<PathBuf> {
    if std::env::var_os("CI").is_some() {
        panic!("{why}; CI is set, so this is a failure, not a skip");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// The pinned Pi, installed with `npm ci` under the target directory; its `pi` executable.
fn install_pi() -> Option<PathBuf> {
    let node = Command::new("node").arg("--version").output();
    let Some(node) = node.ok().filter(|o| o.status.success()) else {
        return unavailable("node is not installed (Pi needs Node.js 20.6 or later)");
    };
    let version = String::from_utf8_lossy(&node.stdout).trim().to_owned();
    let parts: Vec<u32> = version
        .trim_start_matches('v')
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    if parts.len() < 2 || (parts[0], parts[1]) < (20, 6) {
        return unavailable(&format!(
            "node {version} is too old: Pi needs 20.6 or later"
        ));
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pi-agent");
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pi-agent");
    let pi = prefix.join("node_modules/.bin/pi");
    let lock = std::fs::read(fixture.join("package-lock.json")).expect("fixture lock file");
    let installed = std::fs::read(prefix.join("package-lock.json")).ok();
    if pi.exists() && installed.as_deref() == Some(&lock[..]) {
        return Some(pi);
    }
    let _ = std::fs::remove_dir_all(&prefix);
    std::fs::create_dir_all(&prefix).unwrap();
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(fixture.join(f), prefix.join(f)).unwrap();
    }
    // --ignore-scripts: Pi runs without its dependencies' optional native builds (documented in
    // docs/agents/pi.md), and a test should not run install scripts.
    let npm = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(&prefix)
        .stdin(Stdio::null())
        .output();
    match npm {
        Ok(o) if o.status.success() && pi.exists() => Some(pi),
        Ok(o) => unavailable(&format!(
            "npm ci of the pinned Pi failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        )),
        Err(e) => unavailable(&format!("npm is not installed ({e})")),
    }
}

/// fake_ollama.py on `port` (0: any free port); its process and the port it listens on.
fn start_fake_ollama(port: u16, log: &Path) -> Option<(Child, u16)> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut child = Command::new("python3")
        .arg(fixtures.join("fake_ollama.py"))
        .args(["--port", &port.to_string(), "--script"])
        .arg(fixtures.join("pi_script.json"))
        .arg("--log")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 fake_ollama.py");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    match line
        .trim()
        .strip_prefix("READY ")
        .and_then(|p| p.parse().ok())
    {
        Some(p) => Some((child, p)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait for `child` at most `limit`; kill it (and fail) when it takes longer.
fn wait_bounded(mut child: Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().expect("wait");
            panic!(
                "still running after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn pi_deletes_and_edits_under_the_sandbox_and_restore_at_start_undoes_it() {
    if !fuse_available() {
        return;
    }
    let Some(pi) = install_pi() else { return };
    let prefix = pi.ancestors().nth(3).unwrap().to_owned();

    // The repository: tracked README.md and src/lib.rs; untracked notes/, scratch/ and .env.
    let p = Project::empty();
    let d = p.dir();
    std::fs::create_dir_all(d.join("src")).unwrap();
    std::fs::write(d.join("README.md"), b"# Demo project\n\nStatus: draft\n").unwrap();
    std::fs::write(
        d.join("src/lib.rs"),
        b"pub fn answer() -> u32 {\n    42\n}\n",
    )
    .unwrap();
    git(d, &["init", "-q"]);
    git(d, &["add", "README.md", "src/lib.rs"]);
    git(d, &["commit", "-qm", "init"]);
    std::fs::create_dir_all(d.join("notes")).unwrap();
    std::fs::write(d.join("notes/todo.txt"), b"buy milk\n").unwrap();
    std::fs::create_dir_all(d.join("scratch/deep")).unwrap();
    std::fs::write(d.join("scratch/data.csv"), b"a,b\n1,2\n").unwrap();
    std::fs::write(d.join("scratch/deep/big.bin"), vec![7u8; 300_000]).unwrap();
    std::fs::write(d.join(".env"), b"SECRET=hunter2\n").unwrap();
    // The first mount creates the store and adds `.saferoot/` to `.git/info/exclude`: that
    // belongs to the tree as it was when the session started.
    p.mount();
    p.umount();
    let before = digest(d);

    // The "model": on 11434 as the profile expects; elsewhere (and allowed) if a real Ollama
    // already holds that port on this machine.
    let work = tempfile::Builder::new()
        .prefix("saferoot-pi.")
        .tempdir()
        .unwrap();
    let log = work.path().join("requests.jsonl");
    let (server, port, extra_port) = match start_fake_ollama(11434, &log) {
        Some((c, port)) => (Server(c), port, None),
        None => {
            let (c, port) = start_fake_ollama(0, &log).expect("fake_ollama.py did not start");
            eprintln!("note: 11434 is taken here; the fake model listens on {port}");
            (Server(c), port, Some(port.to_string()))
        }
    };

    // HOME holds Pi's model configuration and nothing else.
    let home = work.path().join("home");
    std::fs::create_dir_all(home.join(".pi/agent")).unwrap();
    std::fs::write(
        home.join(".pi/agent/models.json"),
        format!(
            r#"{{"providers": {{"ollama": {{
                "baseUrl": "http://127.0.0.1:{port}/v1", "api": "openai-completions",
                "apiKey": "ollama",
                "compat": {{"supportsDeveloperRole": false, "supportsReasoningEffort": false}},
                "models": [{{"id": "fake-coder", "contextWindow": 32768, "maxTokens": 4096}}]
            }}}}}}"#
        ),
    )
    .unwrap();

    let mut args: Vec<String> = vec![
        "-C".into(),
        d.to_str().unwrap().into(),
        "run".into(),
        "--profile".into(),
        "pi".into(),
        "--allow-read".into(),
        prefix.to_str().unwrap().into(),
    ];
    if let Some(port) = &extra_port {
        args.extend(["--allow-port".into(), port.clone()]);
    }
    args.push("--".into());
    args.push(pi.to_str().unwrap().into());
    for a in [
        "--offline",
        "--no-extensions",
        "--no-skills",
        "--no-prompt-templates",
        "--no-themes",
        "--no-context-files",
        "--provider",
        "ollama",
        "--model",
        "fake-coder",
        "--thinking",
        "off",
        "-p",
        PROMPT,
    ] {
        args.push(a.into());
    }
    let child = Command::new(bin())
        .args(&args)
        .env_clear()
        .env("HOME", &home)
        .env("PATH", PATH)
        .env("TERM", "dumb")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("saferoot run");
    let o = wait_bounded(child, Duration::from_secs(180));
    drop(server);
    let err = stderr(&o);
    assert_ok(&o);
    assert_eq!(stdout(&o).trim(), "done", "Pi's answer; stderr:\n{err}");

    // What the "model" saw: all three turns answered, both tool results sent back.
    let chats: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["path"] == "/v1/chat/completions" && r["repeat"] == false)
        .collect();
    let turns: Vec<i64> = chats.iter().map(|r| r["turn"].as_i64().unwrap()).collect();
    assert_eq!(turns, [0, 1, 2], "turns answered; stderr:\n{err}");
    let tool_results = |r: &serde_json::Value| -> Vec<String> {
        r["body"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(|m| m["tool_call_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(tool_results(&chats[1]).contains(&"call_0_0".to_owned()));
    assert!(tool_results(&chats[2]).contains(&"call_1_0".to_owned()));

    // What Pi did to the tree.
    for gone in ["notes", "scratch", ".env"] {
        assert!(!d.join(gone).exists(), "{gone} still exists");
    }
    assert_eq!(
        std::fs::read_to_string(d.join("README.md")).unwrap(),
        "# Demo project\n\nStatus: reviewed by pi\n"
    );
    assert_eq!(
        before[Path::new("src/lib.rs")],
        digest(d)[Path::new("src/lib.rs")]
    );

    // Nothing Pi needs was refused: no denial in the session, none in the summary.
    let o = p.run(&["denials", "--json"]);
    assert_ok(&o);
    assert_eq!(
        stdout(&o),
        "",
        "denials of the Pi session; run's stderr:\n{err}"
    );
    assert!(
        !err.contains("denied access") && !err.contains("--allow-") && !err.contains("warning"),
        "the summary reports refusals:\n{err}"
    );
    // The summary names the deletions and the command that undoes them.
    assert!(err.contains("restore @start"), "summary:\n{err}");

    // And that command gives the tree back, byte for byte.
    let o = p.run(&["restore", "@start"]);
    assert_ok(&o);
    assert_same_tree(&before, &digest(d));
    assert!(!is_mounted(d), "run unmounts what it mounted");
}
