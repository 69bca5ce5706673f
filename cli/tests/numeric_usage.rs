//! A negative or out-of-range number for a numeric option is a usage error that says what the
//! option takes (exit 2), before anything is read or sent.

use std::process::Command;

fn fleet_install(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fleet-install"))
        // Nothing may be sent: an endpoint that refuses connections makes any call fail fast.
        .args([
            "--endpoint-url",
            "http://127.0.0.1:9",
            "--region",
            "us-east-1",
            "--outputs-file",
            "/nonexistent/outputs.json",
        ])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap()
}

#[test]
fn a_negative_canary_is_explained_with_exit_2() {
    let out = fleet_install(&["rollout", "--tag", "team=web", "--canary", "-1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("unexpected argument"), "{stderr}");
    assert!(stderr.contains("--canary"), "{stderr}");
    assert!(stderr.contains("must be 0 or more"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn every_numeric_option_explains_a_negative_value() {
    for (args, says) in [
        (
            vec!["preview", "--tag", "a=b", "--wave-size", "-3"],
            "must be at least 1",
        ),
        (
            vec!["preview", "--tag", "a=b", "--wave-percent", "-3"],
            "greater than 0 and at most 100",
        ),
        (
            vec!["rollout", "--tag", "a=b", "--max-failure-ratio", "-0.5"],
            "between 0 and 1",
        ),
        (vec!["rollout", "--tag", "a=b", "--pause", "-1"], "must be 0 or more"),
    ] {
        let out = fleet_install(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: invalid value"), "{stderr}");
    }
}
