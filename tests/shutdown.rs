//! Graceful shutdown: when the shutdown future resolves, every client is told to reconnect
//! (4200) and `serve` returns once they are gone or the shutdown timeout has passed.
//! Rules: protocol-spec/shutdown.md.

mod common;

use std::time::{Duration, Instant};

use common::{Server, test_config};
use tokio::net::TcpStream;

#[tokio::test]
async fn clients_get_4200_and_serve_returns() {
    let mut server = Server::start_default().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    b.subscribe("during-shutdown").await;
    server.trigger_shutdown();
    a.expect_error_then_close(4200).await;
    b.expect_error_then_close(4200).await;
    server.wait_stopped(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn serve_returns_promptly_with_no_connections() {
    let mut server = Server::start_default().await;
    let started = Instant::now();
    server.trigger_shutdown();
    server.wait_stopped(Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "an idle server took {:?} to stop",
        started.elapsed()
    );
}

#[tokio::test]
async fn serve_returns_within_shutdown_timeout_despite_a_client_that_never_reads() {
    let mut config = test_config();
    config.server.shutdown_timeout = Duration::from_secs(1);
    let mut server = Server::start(config).await;
    // Completes the handshake, then never reads again, so never answers the close.
    let _deaf = server.client().await;
    let started = Instant::now();
    server.trigger_shutdown();
    server.wait_stopped(Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?} with shutdown_timeout 1 s",
        started.elapsed()
    );
}

#[tokio::test]
async fn no_new_connections_after_serve_returns() {
    let mut server = Server::start_default().await;
    let addr = server.addr;
    server.trigger_shutdown();
    server.wait_stopped(Duration::from_secs(5)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener still accepts connections after serve returned"
    );
}
