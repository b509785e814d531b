//! Which requests come from a sandboxed agent, and refusing those that would change a protected
//! path (`.git/hooks`, `.git/config`, the project's `protect` list).
//!
//! Landlock cannot help here: these paths are inside the project, which the agent may write.
//! The FUSE layer sees every request with the caller's thread id, so it asks whether that thread
//! descends from a live `saferoot run` process (which registered itself with the daemon before
//! starting the agent). `run` makes itself a child subreaper, so an agent's process that
//! daemonizes (double fork) is re-parented to `run`, not to init, and stays recognizable. The
//! user's own processes (their shell, their editor, their `git config`) are not descendants and
//! are never refused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

/// A live `saferoot run` session, as registered by its `run` process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardedSession {
    /// The `run` process (not sandboxed itself; its descendants are).
    pub pid: u32,
    /// Its start time in clock ticks after boot (`/proc/PID/stat` field 22), so that a recycled
    /// pid is not mistaken for it.
    pub start_ticks: u64,
    /// The session's id: the time of its `run` journal record.
    pub session: i64,
}

#[derive(Default)]
pub struct Guard {
    any: AtomicBool,
    sessions: RwLock<Vec<GuardedSession>>,
}

/// `(ppid, start_ticks)` of a process or thread, from `/proc/PID/stat`.
pub fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything; the rest follows
    // the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, starttime field 22.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

impl Guard {
    pub fn set(&self, sessions: Vec<GuardedSession>) {
        let mut s = self.sessions.write().unwrap_or_else(|p| p.into_inner());
        self.any.store(!sessions.is_empty(), Ordering::Release);
        *s = sessions;
    }

    pub fn sessions(&self) -> Vec<GuardedSession> {
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Is any session live? Cheap: checked before anything else on the request path.
    pub fn active(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// The session whose agent `pid` (a thread id from a FUSE request) belongs to, if any: a
    /// strict descendant of a registered `run` process.
    pub fn session_of(&self, pid: u32) -> Option<i64> {
        if !self.active() || pid == 0 {
            return None;
        }
        let sessions = self.sessions();
        let mut cur = pid;
        for _ in 0..128 {
            let (ppid, _) = proc_stat(cur)?;
            if ppid == 0 {
                return None;
            }
            if let Some(s) = sessions.iter().find(|s| s.pid == ppid) {
                // Check the start time so that a recycled pid does not count.
                if proc_stat(ppid).is_some_and(|(_, st)| st == s.start_ticks) {
                    return Some(s.session);
                }
            }
            cur = ppid;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_of_a_registered_process_belongs_to_its_session() {
        let me = std::process::id();
        let (_, ticks) = proc_stat(me).unwrap();
        let g = Guard::default();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert_eq!(g.session_of(child.id()), None, "no session registered");
        g.set(vec![GuardedSession {
            pid: me,
            start_ticks: ticks,
            session: 42,
        }]);
        assert_eq!(g.session_of(child.id()), Some(42));
        assert_eq!(g.session_of(me), None, "run itself is not the agent");
        g.set(vec![GuardedSession {
            pid: me,
            start_ticks: ticks + 1,
            session: 42,
        }]);
        assert_eq!(
            g.session_of(child.id()),
            None,
            "a recycled pid does not count"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
