//! Where the CLI's credentials come from: the SDK's default chain (AWS_ACCESS_KEY_ID,
//! AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN first), and an explicit --profile over the
//! environment, as in the AWS CLI. Checked on the first request's signature, sent to a local
//! listener that answers it with a 400.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

/// Run `fleet-install unmanaged` against a local listener and return the headers of the first
/// request (lower-cased names).
fn first_request_headers(home: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Vec<(String, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        // One request is enough; the listener then closes, so the SDK's retries fail fast.
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.trim_end().split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let body = r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"test listener"}"#;
        let _ = write!(
            stream,
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        headers
    });
    let outputs = home.join("outputs.json");
    std::fs::write(&outputs, r#"{"LedgerTableName": "ledger"}"#).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleet-install"));
    cmd.args([
        "--endpoint-url",
        &format!("http://127.0.0.1:{port}"),
        "--region",
        "us-east-1",
    ])
    .arg("--outputs-file")
    .arg(&outputs)
    .args(args)
    .arg("unmanaged")
    .env("HOME", home)
    .env("AWS_CONFIG_FILE", home.join("config"))
    .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
    .env("AWS_EC2_METADATA_DISABLED", "true");
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ] {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    server.join().unwrap()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn home(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fleet-install-creds-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("credentials"),
        "[ops]\naws_access_key_id = AKIAPROFILEOPS\naws_secret_access_key = secret\n",
    )
    .unwrap();
    std::fs::write(dir.join("config"), "[profile ops]\nregion = us-east-1\n").unwrap();
    dir
}

#[test]
fn environment_credentials_sign_the_requests() {
    let dir = home("env");
    let h = first_request_headers(
        &dir,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAFROMENVIRONMENT"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "session-token-from-env"),
        ],
        &[],
    );
    let auth = header(&h, "authorization").expect("a signed request");
    assert!(auth.contains("Credential=AKIAFROMENVIRONMENT/"), "{auth}");
    assert_eq!(header(&h, "x-amz-security-token"), Some("session-token-from-env"));
    assert_eq!(header(&h, "x-amz-target"), Some("DynamoDB_20120810.Query"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_explicit_profile_wins_over_the_environment() {
    let dir = home("profile");
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIAFROMENVIRONMENT"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
    ];
    let h = first_request_headers(&dir, &env, &["--profile", "ops"]);
    let auth = header(&h, "authorization").expect("a signed request");
    assert!(auth.contains("Credential=AKIAPROFILEOPS/"), "{auth}");
    assert!(header(&h, "x-amz-security-token").is_none());
    // AWS_PROFILE alone is read through the default chain, after the environment's keys.
    let h = first_request_headers(&dir, &[("AWS_PROFILE", "ops")], &[]);
    assert!(header(&h, "authorization")
        .unwrap()
        .contains("Credential=AKIAPROFILEOPS/"));
    let _ = std::fs::remove_dir_all(dir);
}
