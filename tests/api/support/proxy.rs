//! A TCP proxy the test can cut: what a node behind it sees when its network to a
//! backend fails while the other nodes still reach it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    /// Bumped by `cut`: every connection made before it ends.
    cuts: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards connections to `target` from a fresh port on 127.0.0.1.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let cuts = watch::Sender::new(0u64);
        let accept = tokio::spawn({
            let (open, cuts) = (open.clone(), cuts.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if !open.load(Ordering::Acquire) {
                        continue; // dropped: the connection is refused in effect
                    }
                    let mut cut = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(target).await else {
                            return;
                        };
                        let (mut client, mut server) = (client, server);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            }
        });
        Proxy {
            addr,
            open,
            cuts,
            accept,
        }
    }

    /// Ends every connection through the proxy and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.open.store(false, Ordering::Release);
        self.cuts.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cuts.send_modify(|n| *n += 1);
    }
}
