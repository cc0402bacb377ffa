//! The `crier` binary: configuration errors exit with status 2 and name the setting; a good
//! start prints `listening on HOST:PORT`; SIGTERM shuts down gracefully.
//! Rules: protocol-spec/README.md ("Running the binary") and protocol-spec/shutdown.md.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::Client;
use common::binary::{Running, crier, run_to_exit};

/// A config file in the temp directory, removed on drop.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(text: &str) -> TempConfig {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("crier-cli-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write temp config");
        TempConfig(path)
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn assert_config_error(cmd: &mut Command, must_mention: &str) {
    let (code, output) = run_to_exit(cmd);
    assert_eq!(
        code,
        Some(2),
        "exit status for a bad config; output: {output}"
    );
    assert!(
        output.contains(must_mention),
        "the message should name {must_mention:?}; output: {output}"
    );
}

#[test]
fn bad_setting_in_config_file_exits_2_naming_the_setting() {
    let file = TempConfig::new("[server]\nactivity_timeout_secs = 0\n");
    assert_config_error(
        crier().arg("--config").arg(&file.0),
        "server.activity_timeout_secs",
    );
    let file = TempConfig::new("[[apps]]\nid = \"a/b\"\nkey = \"k\"\nsecret = \"s\"\n");
    assert_config_error(crier().arg("--config").arg(&file.0), "apps[0].id");
}

#[test]
fn unknown_or_mistyped_config_field_exits_2_naming_it() {
    let file = TempConfig::new("[server]\nprot = 1\n");
    assert_config_error(crier().arg("--config").arg(&file.0), "prot");
    let file = TempConfig::new("[server]\nport = \"six\"\n");
    assert_config_error(crier().arg("--config").arg(&file.0), "port");
}

#[test]
fn missing_config_file_exits_2_naming_the_path() {
    let path = std::env::temp_dir().join("crier-cli-test-does-not-exist.toml");
    assert_config_error(
        crier().arg("--config").arg(&path),
        &path.display().to_string(),
    );
}

#[test]
fn bad_value_in_environment_variable_exits_2_naming_the_variable() {
    assert_config_error(crier().env("CRIER_PORT", "abc"), "CRIER_PORT=abc");
    let (_, output) = run_to_exit(crier().env("CRIER_PORT", "abc"));
    assert!(
        output.contains("invalid digit"),
        "the reason; output: {output}"
    );
    assert_config_error(
        crier().env("CRIER_APP_CLIENT_EVENTS", "yes"),
        "CRIER_APP_CLIENT_EVENTS=yes",
    );
    // A value that passes parsing but not validation names the variable and the setting.
    let mut cmd = crier();
    cmd.env("CRIER_APP_MAX_PRESENCE_MEMBERS", "0");
    assert_config_error(&mut cmd, "CRIER_APP_MAX_PRESENCE_MEMBERS=0");
    assert_config_error(&mut cmd, "apps[0].max_presence_members");
    // A flag on the command line keeps clap's message, which names the flag.
    assert_config_error(
        crier().env("CRIER_PORT", "abc").args(["--port", "xyz"]),
        "--port",
    );
    // --help and --version still exit 0.
    for flag in ["--help", "--version"] {
        let (code, output) = run_to_exit(crier().env("CRIER_PORT", "abc").arg(flag));
        assert_eq!(code, Some(0), "{flag}; output: {output}");
    }
}

#[test]
fn huge_durations_exit_2_naming_the_setting() {
    assert_config_error(
        crier()
            .args(["--host", "127.0.0.1", "--port", "0"])
            .env("CRIER_WRITE_TIMEOUT", "18446744073709551615"),
        "server.write_timeout_secs",
    );
    let file =
        TempConfig::new("[server]\nhost = \"127.0.0.1\"\nport = 0\npong_timeout_secs = 99999999\n");
    assert_config_error(
        crier().arg("--config").arg(&file.0),
        "server.pong_timeout_secs",
    );
    let file = TempConfig::new(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\n[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\ncache_ttl_secs = 2592001\n",
    );
    assert_config_error(
        crier().arg("--config").arg(&file.0),
        "apps[0].cache_ttl_secs",
    );
}

#[test]
fn port_in_use_exits_2_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("local addr").port();
    let (code, output) =
        run_to_exit(crier().args(["--host", "127.0.0.1", "--port", &port.to_string()]));
    assert_eq!(
        code,
        Some(2),
        "exit status for a port in use; output: {output}"
    );
    assert!(
        output.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "the message should name the address; output: {output}"
    );
}

#[test]
fn bad_host_exits_2_naming_it() {
    for host in ["999.1.1.1", "nonsense.invalid"] {
        let (code, output) = run_to_exit(crier().args(["--host", host, "--port", "0"]));
        assert_eq!(
            code,
            Some(2),
            "exit status for --host {host}; output: {output}"
        );
        assert!(
            output.contains(&format!("cannot listen on {host}:0")),
            "the message should name the address; output: {output}"
        );
    }
}

#[test]
fn bad_new_settings_exit_2_naming_the_setting() {
    let file = TempConfig::new("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"not-an-ip\"]\n");
    let mut cmd = crier();
    cmd.arg("--config").arg(&file.0);
    assert_config_error(&mut cmd, "invalid setting `server.trusted_proxies`");
    assert_config_error(&mut cmd, "not-an-ip");
    assert_config_error(
        crier().env("CRIER_TRUSTED_PROXIES", "10.0.0.0/33"),
        "CRIER_TRUSTED_PROXIES=10.0.0.0/33",
    );
    let file = TempConfig::new(
        "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nmax_subscriptions_per_connection = 0\n",
    );
    assert_config_error(
        crier().arg("--config").arg(&file.0),
        "invalid setting `apps[0].max_subscriptions_per_connection`",
    );
    assert_config_error(
        crier().env("CRIER_MAX_HTTP_CONNECTIONS", "0"),
        "server.max_http_connections",
    );
}

#[tokio::test]
async fn port_0_prints_the_listening_line_and_serves() {
    let running = Running::start(crier().args(["--host", "127.0.0.1", "--port", "0"]));
    let addr = running.listening_addr();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "the real port must be printed");
    let mut client = Client::connect(addr).await;
    client.assert_alive().await;
}

#[tokio::test]
async fn environment_variables_set_host_and_port() {
    let running = Running::start(
        crier()
            .env("CRIER_HOST", "127.0.0.1")
            .env("CRIER_PORT", "0"),
    );
    let addr = running.listening_addr();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    Client::connect(addr).await;
}

#[tokio::test]
async fn config_file_apps_are_served() {
    let file = TempConfig::new(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\n\n[[apps]]\nid = \"42\"\nkey = \"file-key\"\nsecret = \"file-secret\"\n",
    );
    let running = Running::start(crier().arg("--config").arg(&file.0));
    let addr = running.listening_addr();
    let mut client = Client::connect_app(addr, "file-key", "file-secret").await;
    client.subscribe_private("private-from-file").await;
    // The file's apps replace the built-in one.
    let mut old = Client::open(addr, "/app/app-key?protocol=7", None).await;
    old.expect_error_then_close(4001).await;
}

#[tokio::test]
async fn sigterm_closes_clients_with_4200_and_exits_0() {
    let mut running = Running::start(crier().args(["--host", "127.0.0.1", "--port", "0"]));
    let addr = running.listening_addr();
    let mut client = Client::connect(addr).await;
    let closing = tokio::spawn(async move {
        client.expect_error_then_close(4200).await;
    });
    let code = tokio::task::spawn_blocking(move || running.terminate(Duration::from_secs(10)))
        .await
        .expect("terminate");
    assert_eq!(code, Some(0), "exit status after SIGTERM");
    closing.await.expect("client saw 4200");
}

#[tokio::test]
async fn logs_to_a_pipe_have_no_ansi_escapes() {
    let mut running = Running::start(
        crier()
            .args(["--host", "127.0.0.1", "--port", "0"])
            .env("CRIER_LOG", "debug"),
    );
    let addr = running.listening_addr();
    Client::connect(addr).await;
    let code = running.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "exit status after SIGTERM");
    let lines = running.remaining_lines();
    assert!(
        lines.iter().any(|l| l.contains("SIGTERM received")),
        "the shutdown is logged on stderr; output: {lines:?}"
    );
    assert!(
        lines.iter().all(|l| !l.contains("\x1b[")),
        "no ANSI escapes when stderr is a pipe; output: {lines:?}"
    );
}

#[tokio::test]
async fn example_config_file_is_valid_and_served() {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crier.example.toml");
    let running = Running::start(crier().arg("--config").arg(&example).args([
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ]));
    let addr = running.listening_addr();
    Client::connect(addr).await;
}

#[tokio::test]
async fn soketi_names_configure_the_default_app_and_crier_names_win() {
    let running = Running::start(
        crier()
            .args(["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"])
            .env("SOKETI_DEFAULT_APP_ID", "soketi-id")
            .env("SOKETI_DEFAULT_APP_KEY", "soketi-key")
            .env("SOKETI_DEFAULT_APP_SECRET", "soketi-secret")
            .env("SOKETI_DEFAULT_APP_MAX_CONNS", "-1")
            .env("SOKETI_PORT", "1"),
    );
    let addr = running.listening_addr();
    let mut client = Client::connect_app(addr, "soketi-key", "soketi-secret").await;
    client.subscribe_private("private-from-soketi-env").await;
    let api = common::Api::for_app(addr, "soketi-id", "soketi-key", "soketi-secret");
    api.publish("private-from-soketi-env", "e", "moved").await;
    assert_eq!(client.recv_json().await["data"], "moved");
    drop(running);

    let running = Running::start(
        crier()
            .args(["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"])
            .env("SOKETI_DEFAULT_APP_KEY", "soketi-key")
            .env("CRIER_APP_KEY", "crier-key"),
    );
    let addr = running.listening_addr();
    Client::connect_app(addr, "crier-key", common::APP_SECRET).await;
    let mut refused = Client::open(addr, "/app/soketi-key?protocol=7", None).await;
    refused.expect_error_then_close(4001).await;
}

#[test]
fn the_log_says_which_soketi_names_it_took() {
    // A bad setting ends the run right after the settings are read, with the log written.
    let (code, output) = run_to_exit(
        crier()
            .args(["--activity-timeout", "0"])
            .env("SOKETI_DEFAULT_APP_KEY", "soketi-key")
            .env("SOKETI_PORT", "not-a-port"),
    );
    assert_eq!(code, Some(2), "{output}");
    assert!(
        output.contains("using SOKETI_DEFAULT_APP_KEY as CRIER_APP_KEY"),
        "{output}"
    );
    assert!(
        output.contains("ignoring SOKETI_PORT=not-a-port"),
        "{output}"
    );
}

#[test]
fn an_unknown_log_format_exits_2_naming_the_variable() {
    let (code, output) = run_to_exit(crier().env("CRIER_LOG_FORMAT", "yaml").args([
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ]));
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("CRIER_LOG_FORMAT=yaml"), "{output}");
}

#[tokio::test]
async fn json_log_lines_are_json_objects() {
    let mut running = Running::start(
        crier()
            .args(["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"])
            .env("CRIER_LOG_FORMAT", "json"),
    );
    running.listening_addr();
    let _ = running.terminate(Duration::from_secs(10));
    let lines = running.remaining_lines();
    let logged: Vec<&String> = lines.iter().filter(|l| l.starts_with('{')).collect();
    assert!(!logged.is_empty(), "{lines:?}");
    for line in logged {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
}

#[tokio::test]
async fn sigterm_drains_ready_turns_503_and_a_second_sigterm_closes_the_rest() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut running = Running::start(crier().args([
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        &metrics_port.to_string(),
        "--drain-secs",
        "600",
    ]));
    let addr = running.listening_addr();
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while common::probe(metrics, "/ready").await != Some(200) {
        assert!(
            std::time::Instant::now() < deadline,
            "metrics port never ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut clients = Vec::new();
    for _ in 0..300 {
        clients.push(common::RawWs::connect_app(addr).await);
    }
    let pid = running.child.id().to_string();
    let term = || {
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    term();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while common::http_request(metrics, "GET", "/ready", Vec::new())
        .await
        .status
        != 503
    {
        assert!(
            std::time::Instant::now() < deadline,
            "/ready never turned 503"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Over 600 s, 300 connections close one every 2 s: nearly all are still open now.
    term();
    for mut client in clients {
        client.expect_close(4200, Duration::from_secs(10)).await;
    }
    let code = tokio::task::spawn_blocking(move || running.wait_exit(Duration::from_secs(10)))
        .await
        .expect("wait");
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn sighup_reloads_the_apps_keeping_open_connections_and_a_bad_file_keeps_the_old_ones() {
    let app = |id: &str, key: &str, secret: &str| {
        format!("[[apps]]\nid = \"{id}\"\nkey = \"{key}\"\nsecret = \"{secret}\"\n")
    };
    let head = "[server]\nhost = \"127.0.0.1\"\nport = 0\nmetrics_port = 0\n\n";
    let file = TempConfig::new(&format!("{head}{}", app("a", "a-key", "a-secret")));
    let running = Running::start(crier().arg("--config").arg(&file.0));
    let addr = running.listening_addr();
    let mut subscriber = Client::connect_app(addr, "a-key", "a-secret").await;
    subscriber.subscribe("reloaded-room").await;

    // A new secret for `a`, and a new app `b`.
    std::fs::write(
        &file.0,
        format!(
            "{head}{}\n{}",
            app("a", "a-key", "a-new-secret"),
            app("b", "b-key", "b-secret")
        ),
    )
    .expect("rewrite the config");
    running.signal("HUP");
    let line = running.wait_for_line("apps reloaded");
    assert!(line.contains("\"b\"") && line.contains("\"a\""), "{line}");

    Client::connect_app(addr, "b-key", "b-secret").await;
    let old = common::Api::for_app(addr, "a", "a-key", "a-secret");
    old.post(
        "/events",
        &serde_json::json!({"name": "e", "data": "x", "channels": ["reloaded-room"]}),
    )
    .await
    .assert_error(401);
    let new = common::Api::for_app(addr, "a", "a-key", "a-new-secret");
    new.publish("reloaded-room", "e", "after-reload").await;
    // The connection opened before the reload still gets what the new settings publish.
    assert_eq!(subscriber.recv_json().await["data"], "after-reload");

    std::fs::write(&file.0, "[server]\nport = \"not a number\"\n").expect("break the config");
    running.signal("HUP");
    let line = running.wait_for_line("not reloaded");
    assert!(line.contains("TOML parse error"), "{line}");
    new.publish("reloaded-room", "e", "still-served").await;
    assert_eq!(subscriber.recv_json().await["data"], "still-served");
}
