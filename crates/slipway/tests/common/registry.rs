//! A real registry for tests: Debian's `docker-registry` on a free loopback port, with
//! htpasswd auth or TLS (its own CA) when asked; stopped when dropped.

use std::process::{Child, Command, Stdio};

use super::*;

/// A docker-registry on a free loopback port; stopped when dropped.
pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        Registry::start_with(htpasswd, false)
    }

    /// With `tls`, a self-signed certificate for 127.0.0.1 is made with openssl; it is at
    /// `<dir>/cert.pem` (see `ca`).
    pub fn start_with(htpasswd: Option<(&str, &str)>, tls: bool) -> Registry {
        require("docker-registry", "--version");
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, pass)) = htpasswd {
            let file = dir.path().join("htpasswd");
            let out = Command::new("htpasswd").args(["-Bbn", user, pass]).output();
            let out = out
                .ok()
                .filter(|o| o.status.success())
                .expect("`htpasswd` is not available: run `scripts/setup` (Debian's apache2-utils)");
            std::fs::write(&file, &out.stdout).unwrap();
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: slipway-test\n    path: {}\n", file.display()));
        }
        if tls {
            test_ca(dir.path());
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("cert.pem").display(),
                dir.path().join("key.pem").display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let r = Registry { child, addr, _dir: dir };
        // A TLS registry answers plain HTTP with a 400, which is enough to know it is up.
        assert!(wait_http(&r.addr, "/v2/").is_some(), "the registry did not start");
        r
    }
}

impl Registry {
    pub fn ca(&self) -> std::path::PathBuf {
        self._dir.path().join("ca.pem")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 signed by it (`cert.pem`, `key.pem`) in
/// `d`, made with openssl (TLS libraries refuse a self-signed certificate used as its own CA).
pub fn test_ca(d: &std::path::Path) {
    let run = |args: &[&str]| {
        let out =
            Command::new("openssl").args(args).current_dir(d).output().expect("openssl is needed for the TLS test");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=slipway-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "leaf.csr"]);
    std::fs::write(
        d.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "cert.pem",
        "-extfile",
        "ext",
    ]);
}
