//! A TCP proxy in front of PostgreSQL that a test can cut, to take the
//! database away from a running service and bring it back.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct CuttableProxy {
    pub port: u16,
    up: watch::Sender<bool>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    pub async fn start(upstream: SocketAddr) -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let (up, watcher) = watch::channel(true);
        let watcher = Arc::new(watcher);
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !*watcher.borrow() {
                    drop(client); // Refused while the database is "down".
                    continue;
                }
                let mut state = (*watcher).clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = async { while state.changed().await.is_ok() { if !*state.borrow() { break; } } } => {}
                    }
                });
            }
        });
        CuttableProxy {
            port,
            up,
            accept_task,
        }
    }

    /// Cuts every open connection and refuses new ones (`false`), or lets
    /// them through again (`true`).
    pub fn set_up(&self, up: bool) {
        let _ = self.up.send(up);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// `postgres://user@host:port/db` split into its server address and a
/// rewrite of the URL pointing at `port` on 127.0.0.1 instead.
pub fn upstream_and_rewrite(url: &str, port: u16) -> (SocketAddr, String) {
    let (scheme, rest) = url.split_once("://").expect("url scheme");
    let (userinfo, rest) = match rest.split_once('@') {
        Some((userinfo, rest)) => (format!("{userinfo}@"), rest),
        None => (String::new(), rest),
    };
    let (hostport, path) = rest.split_once('/').expect("url path");
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5432")
    };
    let host = hostport.replace("localhost", "127.0.0.1");
    let upstream: SocketAddr = host.parse().expect("host:port of the test database");
    (
        upstream,
        format!("{scheme}://{userinfo}127.0.0.1:{port}/{path}"),
    )
}
