//! The ceiling for the hit path on this machine: bare hyper answering every
//! request with the same 20 KB body from RAM (no key, no lookup, no cache
//! headers), on the same runtime and HTTP/1.1 settings as bigcache's
//! listener. `bench/run.sh hot` and `callgrind` run it beside bigcache and
//! nginx (`cargo run --release --example ceiling -- <port> [size]`).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(8099);
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20480);
    let body = Bytes::from(vec![b'x'; size]);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
            println!("ceiling listening on 127.0.0.1:{port}");
            loop {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                let body = body.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let body = body.clone();
                        async move {
                            let mut res = Response::new(Full::new(body));
                            res.headers_mut().insert(
                                "content-type",
                                "text/html; charset=utf-8".parse().unwrap(),
                            );
                            Ok::<_, Infallible>(res)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        })
}
