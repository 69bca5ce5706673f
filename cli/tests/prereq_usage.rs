//! `prereq` refuses, before any AWS call, to attach a policy that is neither
//! AmazonSSMManagedInstanceCore nor the stack's CommandOutputWriterPolicy unless confirmed.

use std::process::Command;

fn fleet_install(outputs: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fleet-install"))
        // Nothing may be sent: an endpoint that refuses connections makes any call fail fast.
        .args([
            "--endpoint-url",
            "http://127.0.0.1:9",
            "--region",
            "us-east-1",
            "--outputs-file",
        ])
        .arg(outputs)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap()
}

fn outputs_file(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("fleet-install-{name}-{}.json", std::process::id()));
    std::fs::write(
        &path,
        r#"{"CommandOutputWriterPolicyArn": "arn:aws:iam::123456789012:policy/fleet-install-CommandOutputWriterPolicy-X"}"#,
    )
    .unwrap();
    path
}

#[test]
fn another_policy_without_confirmation_is_a_usage_error() {
    let outputs = outputs_file("usage");
    let out = fleet_install(
        &outputs,
        &[
            "prereq",
            "--apply",
            "--policy-arn",
            "arn:aws:iam::aws:policy/AdministratorAccess",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--allow-any-policy"), "{stderr}");
    assert!(stderr.contains("Usage: fleet-install prereq"), "{stderr}");
    assert!(out.stdout.is_empty());
    let _ = std::fs::remove_file(outputs);
}

#[test]
fn the_writer_policy_and_confirmed_policies_pass_the_check() {
    let outputs = outputs_file("pass");
    for args in [
        vec![
            "prereq",
            "--policy-arn",
            "arn:aws:iam::123456789012:policy/fleet-install-CommandOutputWriterPolicy-X",
        ],
        vec![
            "prereq",
            "--policy-arn",
            "arn:aws:iam::aws:policy/AdministratorAccess",
            "--allow-any-policy",
        ],
    ] {
        let out = fleet_install(&outputs, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Past the check, the first IAM call fails on the closed endpoint: exit 1, not 2.
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("iam:ListRoles"), "{args:?}: {stderr}");
        assert!(!stderr.contains("--allow-any-policy"), "{stderr}");
    }
    let _ = std::fs::remove_file(outputs);
}
