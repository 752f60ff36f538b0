//! Socket queries that std and tokio do not offer.

use std::os::fd::RawFd;

/// Bytes received on a socket that nobody has read yet (`FIONREAD`); 0 when it cannot tell.
pub fn unread(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through a valid pointer; a stale fd only fails.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } != 0 {
        return 0;
    }
    n.max(0) as usize
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn counts_what_was_sent_and_not_read() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert_eq!(super::unread(s.as_raw_fd()), 0);
        c.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let t = std::time::Instant::now();
        while super::unread(s.as_raw_fd()) < 16 {
            assert!(t.elapsed() < std::time::Duration::from_secs(5));
            std::thread::yield_now();
        }
        assert_eq!(super::unread(s.as_raw_fd()), 16);
        assert_eq!(super::unread(-1), 0);
    }
}
