//! The examples run as a user would run them. `notify_from_job` broadcasts from a background
//! job through the remote client to a user signed in on a Crier started here. (`chat` is run
//! by compat-tests/browser/examples.test.mjs, in Chromium with pusher-js and Echo.)
//! Rules: protocol-spec/rust-api.md.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::json;

/// `target/<profile>/examples/<name>`, next to this test's own `deps/` directory; cargo
/// builds the examples before it runs the tests.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    profile.join("examples").join(name)
}

#[tokio::test]
async fn notify_from_job_reaches_the_signed_in_user_on_both_channels() {
    let server = Server::start_default().await;
    let mut user = server.client().await;
    user.signin_as("42").await;
    user.subscribe_private("private-user.42").await;
    let mut other = server.client().await;
    other.signin_as("7").await;

    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(example("notify_from_job"))
            .env(
                "PUSHER_URL",
                format!(
                    "http://{APP_KEY}:{APP_SECRET}@{}/apps/{APP_ID}",
                    server.addr
                ),
            )
            .env("USER_ID", "42")
            .env("JOBS", "3")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("the example finishes")
    .expect("the example runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).lines().count(),
        3,
        "one line per job"
    );
    for job in 1..=3 {
        user.expect_json(&json!({
            "event": "JobFinished",
            "channel": "#server-to-user-42",
            "data": json!({"job": job}).to_string()
        }))
        .await;
        user.expect_json(&json!({
            "event": "report.ready",
            "channel": "private-user.42",
            "data": json!({"job": job, "url": format!("/reports/{job}.pdf")}).to_string()
        }))
        .await;
    }
    other.expect_no_message(QUIET).await;
}

#[tokio::test]
async fn notify_from_job_fails_loudly_on_a_bad_url() {
    let output = tokio::process::Command::new(example("notify_from_job"))
        .env("PUSHER_URL", "not a url")
        .output()
        .await
        .expect("the example runs");
    assert!(!output.status.success());
    assert!(!output.stderr.is_empty(), "it says why");
}
