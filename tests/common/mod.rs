//! What the integration tests share: real servers on 127.0.0.1:0, a real
//! WebSocket client, token minting.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, StatusCode};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const SECRET: &[u8] = b"integration-test-secret-32-bytes!";

/// Serve `router` on a free loopback port.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

/// A refused handshake as the client saw it.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Open `ws://addr{path}` with extra headers. `Ok` with the socket and the
/// handshake response's headers, or `Err` with the refusal.
pub async fn connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Client, HeaderMap), Refused> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => Ok((socket, response.headers().clone())),
        Err(tungstenite::Error::Http(response)) => Err(Refused {
            status: response.status(),
            headers: response.headers().clone(),
            body: response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        }),
        Err(other) => panic!("handshake failed below HTTP: {other}"),
    }
}

/// The status of a handshake that must be refused.
pub async fn refused(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Refused {
    match connect(addr, path, headers).await {
        Ok(_) => panic!("{path} with {headers:?} was accepted"),
        Err(refused) => refused,
    }
}

/// Next text frame as JSON, within 5 s.
pub async fn next_json(socket: &mut Client) -> Value {
    let text = next_text(socket).await;
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// Next text frame, within 5 s.
pub async fn next_text(socket: &mut Client) -> String {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a frame within 5 s")
            .expect("socket open")
            .expect("frame");
        match message {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Send `text`, expect it echoed.
pub async fn assert_echo(socket: &mut Client, text: &str) {
    socket.send(Message::text(text)).await.unwrap();
    assert_eq!(next_text(socket).await, text);
}

/// Wait for the server's close frame; its code, within `within`.
pub async fn close_code(socket: &mut Client, within: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => panic!("no close within {within:?}"),
            Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

pub fn now() -> u64 {
    tower_ws_auth::jwt::now_secs()
}

/// An HS256 token for `claims` signed with `secret`.
pub fn hs256(claims: &Value, secret: &[u8]) -> String {
    tower_ws_auth::jwt::install_crypto_provider().unwrap();
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// An HS256 token for `sub`, valid for `ttl` seconds, with the test secret.
pub fn token(sub: &str, ttl: u64) -> String {
    hs256(
        &serde_json::json!({ "sub": sub, "exp": now() + ttl }),
        SECRET,
    )
}

pub fn key(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// A plain HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTP/1.1 request over a fresh TCP connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let mut parsed_headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut parsed_headers);
    let httparse::Status::Complete(len) = response.parse(&raw).unwrap() else {
        panic!("incomplete response");
    };
    let mut map = HeaderMap::new();
    for h in response.headers.iter() {
        map.append(
            http::HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
            http::HeaderValue::from_bytes(h.value).unwrap(),
        );
    }
    HttpResponse {
        status: StatusCode::from_u16(response.code.unwrap()).unwrap(),
        headers: map,
        body: String::from_utf8_lossy(&raw[len..]).into_owned(),
    }
}

/// Every log line this test binary's tracing subscriber received (installed
/// on first use, capturing every thread).
pub fn captured_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    struct Writer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Writer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Writer(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
    .clone()
}

/// The captured log as text.
pub fn log_text() -> String {
    String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned()
}

/// A `redis-server` process of a test's own.
#[cfg(feature = "redis")]
mod redis_server {
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    /// A `redis-server` of this test's own on a free loopback port.
    pub struct RedisServer {
        pub port: u16,
        child: Option<Child>,
        /// Where an append-only file keeps the data across restarts.
        persist_in: Option<std::path::PathBuf>,
    }

    impl RedisServer {
        pub fn start() -> Self {
            let mut server = Self::start_unstarted();
            server.restart();
            server
        }

        /// A server that writes every change to an append-only file, so that
        /// its data survives a restart.
        pub fn start_persistent() -> Self {
            let mut server = Self::start_unstarted();
            let dir = std::env::temp_dir().join(format!(
                "redis-aof-{}-{}",
                std::process::id(),
                server.port
            ));
            std::fs::create_dir_all(&dir).unwrap();
            server.persist_in = Some(dir);
            server.restart();
            server
        }

        fn start_unstarted() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            Self {
                port,
                child: None,
                persist_in: None,
            }
        }

        pub fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/", self.port)
        }

        pub fn restart(&mut self) {
            let mut command = Command::new("redis-server");
            command.args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ]);
            match &self.persist_in {
                Some(dir) => command
                    .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                    .arg(dir),
                None => command.args(["--appendonly", "no"]),
            };
            let child = command
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("redis-server could not be started ({e}); install it: apt-get install -y redis-server")
                });
            self.child = Some(child);
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("redis-server did not start on port {}", self.port);
        }

        pub fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// The Redis named by `REDIS_URL` (CI starts one), else one of this test's own.
    pub fn shared_redis() -> (String, Option<RedisServer>) {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let server = RedisServer::start();
                (server.url(), Some(server))
            }
        }
    }
}

#[cfg(feature = "redis")]
#[allow(unused_imports)]
pub use redis_server::{shared_redis, RedisServer};

/// `POST /ws-ticket` with `Authorization: Bearer <token>`: the ticket. Asserts
/// the 200 and `Cache-Control: no-store`.
pub async fn issue_ticket(addr: SocketAddr, token: &str) -> String {
    let bearer = format!("Bearer {token}");
    let issued = http(
        addr,
        "POST",
        "/ws-ticket",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(issued.status, StatusCode::OK, "{}", issued.body);
    assert_eq!(issued.headers["cache-control"], "no-store");
    issued.json()["ticket"].as_str().unwrap().to_owned()
}
