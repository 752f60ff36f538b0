//! Health probes, the same for every target: an HTTP GET of a path that passes on 2xx or 3xx,
//! or a TCP connect. Each failure says what was tried and what came back.

use std::time::Duration;

use hyper::Method;

/// `GET path` on `host:port`; 2xx and 3xx pass.
pub async fn http(host: &str, port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    match crate::tcp(host, port, Method::GET, path, timeout).await {
        Ok(r) if (200..400).contains(&r.status) => Ok(()),
        Ok(r) => Err(format!(
            "GET {path}: {} {}",
            r.status,
            hyper::StatusCode::from_u16(r.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("")
        )
        .trim_end()
        .to_string()),
        Err(crate::Error::TimedOut(d)) => Err(format!("GET {path} timed out after {d:?}")),
        Err(e) => Err(format!("GET {path}: {e}")),
    }
}

/// A TCP connection to `host:port` is accepted.
pub async fn tcp(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("TCP connect: {e}")),
        Err(_) => Err(format!("TCP connect timed out after {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn probes_say_what_failed() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = super::http("127.0.0.1", port, "/healthz", Duration::from_secs(1)).await.unwrap_err();
        assert!(e.starts_with("GET /healthz: ") && e.contains("refused"), "{e}");
        let e = super::tcp("127.0.0.1", port, Duration::from_secs(1)).await.unwrap_err();
        assert!(e.starts_with("TCP connect: "), "{e}");
        // A server that answers 503.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
            }
        });
        assert_eq!(
            super::http("127.0.0.1", port, "/", Duration::from_secs(1)).await,
            Err("GET /: 503 Service Unavailable".into())
        );
        assert_eq!(super::tcp("127.0.0.1", port, Duration::from_secs(1)).await, Ok(()));
    }
}
