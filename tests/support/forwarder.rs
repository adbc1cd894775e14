//! A TCP forwarder on 127.0.0.1 that a test can cut and restore, to take a real server (the
//! database) away from the code under test and give it back, without touching the server.
//! Cut: live connections are dropped and new ones are accepted and closed at once, as when
//! the server goes down. Restore: connections are relayed again.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Forwarder {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    accept: AbortHandle,
}

#[derive(Default)]
struct Inner {
    cut: bool,
    /// Relays of live connections; dropped on a cut.
    relays: Vec<AbortHandle>,
}

impl Forwarder {
    /// Listen on 127.0.0.1 (port 0) and relay every connection to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind forwarder");
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let state = inner.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { continue };
                // The check and the registration under one lock: a cut cannot miss a relay.
                let mut st = state.lock().unwrap();
                if st.cut {
                    drop(client);
                    continue;
                }
                let relay = tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                st.relays.retain(|r| !r.is_finished());
                st.relays.push(relay.abort_handle());
            }
        })
        .abort_handle();
        Self { addr, inner, accept }
    }

    pub fn cut(&self) {
        let mut st = self.inner.lock().unwrap();
        st.cut = true;
        for r in st.relays.drain(..) {
            r.abort();
        }
    }

    pub fn restore(&self) {
        self.inner.lock().unwrap().cut = false;
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
