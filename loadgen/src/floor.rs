//! The stack's floor: a chat server on the same salvo + socketioxide + tokio stack as
//! Confab, that the load generator can drive, with none of Confab's work: no storage, no
//! password hashing, no JWT, no rate limit, no metrics. `register` hands out the user name
//! as both id and token; `send_message` emits `receive_message` (with a per-receiver
//! position) to the receiver's room and acks. What it costs per message at a given rate is
//! the floor under Confab's figure at that rate on the same machine (BENCHMARKS.md).
//!
//! `confab-floor [PORT] [WORKER_THREADS]` (defaults 3400 and 1, Confab's default on 2 cores).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use salvo::prelude::*;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef};

/// Next stream position per receiver, as Confab's `pos`.
type Positions = Arc<Mutex<HashMap<String, u64>>>;

#[handler]
async fn register(req: &mut Request, res: &mut Response) {
    let body: Value = req.parse_json().await.unwrap_or(Value::Null);
    let name = body["username"].as_str().unwrap_or_default().to_owned();
    res.status_code(StatusCode::CREATED);
    res.render(Json(json!({ "user": { "id": name }, "token": name })));
}

#[handler]
async fn socket_io_goal() {}

fn on_connect(s: SocketRef, Data(auth): Data<Value>, positions: Positions) {
    let Some(user) = auth["token"].as_str().map(str::to_owned) else {
        s.disconnect().ok();
        return;
    };
    s.join(user);
    s.on(
        "send_message",
        move |s: SocketRef, Data(d): Data<Value>, ack: AckSender| async move {
            let receiver = d["receiverId"].as_str().unwrap_or_default().to_owned();
            let pos = {
                let mut p = positions.lock().unwrap();
                let next = p.entry(receiver.clone()).or_insert(0);
                *next += 1;
                *next
            };
            let event = json!({ "message": d["message"], "pos": pos });
            let _ = s.within(receiver).emit("receive_message", &event).await;
            let _ = ack.send(&json!({ "ok": true }));
        },
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3400);
    let workers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // Confab's read buffer; a deeper send buffer than its 128, because the floor has
        // no gap marker and sync to cover what a full buffer drops.
        let (layer, io) = SocketIo::builder()
            .ws_read_buffer_size(1024)
            .max_buffer_size(4096)
            .build_layer();
        let positions = Positions::default();
        io.ns("/", move |s: SocketRef, auth: Data<Value>| {
            let positions = positions.clone();
            async move { on_connect(s, auth, positions) }
        });
        let router = Router::new()
            .push(Router::with_path("auth/register").post(register))
            .push(
                Router::with_path("socket.io/{**rest}")
                    .goal(socket_io_goal)
                    .hoop(layer.compat()),
            );
        let acceptor = TcpListener::new(("127.0.0.1", port)).bind().await;
        println!("confab-floor on 127.0.0.1:{port}, {workers} worker(s)");
        Server::new(acceptor).serve(router).await;
    });
}
