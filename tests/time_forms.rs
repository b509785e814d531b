//! Every TIME form the CLI accepts, through a real mount and `restore --dry-run`, and the
//! one-line errors for TIMEs it refuses.

mod common;
use common::*;
use std::time::Duration;

fn sleep(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn each_time_form_resolves_and_bad_ones_say_why() {
    if !fuse_available() {
        return;
    }
    let p = Project::empty();
    std::fs::write(p.dir().join("precious.txt"), b"keep me\n").unwrap();
    p.mount();
    sleep(1200);
    let at = chrono::Local::now();
    sleep(1200);
    assert_ok(&p.sh("rm precious.txt"));
    sleep(1200);

    let utc = at.with_timezone(&chrono::Utc);
    let plus1 = at.with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap());
    let forms = [
        utc.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string(),
        plus1.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string(),
        at.format("%Y-%m-%d %H:%M:%S").to_string(),
        at.format("%H:%M:%S").to_string(),
        "2s".to_string(),
        "2s ago".to_string(),
    ];
    for form in &forms {
        let o = p.run(&["restore", "--dry-run", form]);
        assert_ok(&o);
        assert!(
            stdout(&o).contains("+ precious.txt"),
            "{form}: {}",
            stdout(&o)
        );
    }
    // The same instants, for real: the file comes back.
    assert_ok(&p.run(&["restore", &forms[0]]));
    assert_eq!(
        std::fs::read(p.dir().join("precious.txt")).unwrap(),
        b"keep me\n"
    );

    for (bad, want) in [
        ("yesterday", "cannot read time"),
        ("25:99", "cannot read time"),
        ("3x", "cannot read time"),
        ("2001-01-01T00:00:00Z", "nothing is recorded before"),
        ("1d", "nothing is recorded before"),
        ("2199-01-01T00:00:00Z", "future"),
        ("@0", "snapshot"),
        ("@start", "saferoot run"),
    ] {
        let o = p.run(&["restore", "--dry-run", bad]);
        assert!(!o.status.success(), "{bad} should be refused");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{bad}: {err}");
        assert!(err.contains(want), "{bad}: expected {want:?} in {err}");
    }
    p.umount();
}
