//! `slipway image build|inspect` without a Docker daemon, checked with the real `skopeo`
//! and `umoci` (Debian packages installed by scripts/setup), and by running the unpacked
//! binary.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// The example service, committed, with `slipway go build` run for two platforms.
fn built_example(platforms: &str) -> Repo {
    require("go", "version");
    let r = Repo::new(&[]);
    copy_example(r.path());
    r.commit("hello-service");
    r.git(&["tag", "v2.0.0"]);
    let b = r.slipway(&["go", "build", "--platform", platforms]);
    assert_eq!(b.code, 0, "{}", b.debug());
    r
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", run.debug()))
}

#[test]
fn multi_platform_images_are_reproducible_and_readable_by_skopeo() {
    require("skopeo", "--version");
    let r = built_example("linux/amd64,linux/arm64");
    let first = r.slipway(&["image", "build", "--json", "--port", "8080"]);
    assert_eq!(first.code, 0, "{}", first.debug());
    let v = json(&first);
    assert_eq!(v["tag"], "v2.0.0");
    assert_eq!(v["platforms"].as_array().unwrap().len(), 2);
    // Same inputs, same digest — even from a fresh layout directory, and more than a second
    // later (a time taken from the clock would show).
    std::fs::remove_dir_all(r.path().join("dist/image")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = json(&r.slipway(&["image", "build", "--json", "--port", "8080"]));
    assert_eq!(v["digest"], again["digest"], "{v}\n{again}");
    // SOURCE_DATE_EPOCH, when set, is the time instead of the commit's.
    let epoch = Command::new(bin())
        .args(["image", "build", "--json", "--port", "8080", "--layout", "dist/epoch"])
        .current_dir(r.path())
        .env("NO_COLOR", "1")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(epoch.status.success(), "{}", String::from_utf8_lossy(&epoch.stderr));
    let created_of = |layout: &str| -> i64 {
        let out = Command::new("skopeo")
            .args(["inspect", "--override-arch", "amd64", "--config", &format!("oci:{layout}:v2.0.0")])
            .current_dir(r.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let t: jiff::Timestamp = cfg["created"].as_str().unwrap().parse().unwrap();
        assert!(cfg["history"].as_array().unwrap().iter().all(|h| h["created"] == cfg["created"]), "{cfg}");
        t.as_second()
    };
    let commit_time: i64 = r.git(&["log", "-1", "--format=%ct"]).trim().parse().unwrap();
    assert_eq!(created_of("dist/image"), commit_time, "`created` is the commit's time");
    assert_eq!(created_of("dist/epoch"), 1_700_000_000, "`created` is SOURCE_DATE_EPOCH");

    let out = Command::new("skopeo")
        .args(["inspect", "--override-arch", "arm64", "--config", "oci:dist/image:v2.0.0"])
        .current_dir(r.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["architecture"], "arm64");
    assert_eq!(cfg["config"]["User"], "65532:65532");
    assert_eq!(cfg["config"]["Entrypoint"], serde_json::json!(["/usr/local/bin/hello-service"]));
    assert_eq!(cfg["config"]["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(cfg["config"]["Labels"]["org.opencontainers.image.revision"], r.git(&["rev-parse", "HEAD"]));
    assert_eq!(cfg["config"]["Labels"]["org.opencontainers.image.version"], "v2.0.0");
    // skopeo sees the digest we printed (the index's), and our per-platform manifests in it.
    let out = Command::new("skopeo").args(["inspect", "oci:dist/image:v2.0.0"]).current_dir(r.path()).output().unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Digest"], v["digest"]);
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "oci:dist/image:v2.0.0"])
        .current_dir(r.path())
        .output()
        .unwrap();
    let raw = String::from_utf8_lossy(&out.stdout);
    for p in v["platforms"].as_array().unwrap() {
        assert!(raw.contains(p["digest"].as_str().unwrap()), "{raw}");
    }
    // skopeo copies it to another layout with the same digests.
    let copy = r.path().join("copy");
    let out = Command::new("skopeo")
        .args(["copy", "--all", "oci:dist/image:v2.0.0"])
        .arg(format!("oci:{}:v2.0.0", copy.display()))
        .current_dir(r.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let copied = json(&r.slipway(&["image", "inspect", "--json", "copy"]));
    assert_eq!(copied["images"][0]["digest"], v["digest"]);
}

#[test]
fn the_unpacked_image_holds_a_working_service() {
    require("umoci", "--version");
    let r = built_example("linux/amd64");
    // Extra files (ko's kodata): a directory with a nested file and an executable script.
    std::fs::create_dir_all(r.path().join("kodata/static")).unwrap();
    std::fs::write(r.path().join("kodata/static/index.html"), "<h1>hi</h1>").unwrap();
    std::fs::write(r.path().join("kodata/run.sh"), "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(r.path().join("kodata/run.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let run = r.slipway(&[
        "image",
        "build",
        "--layout",
        "img",
        "--tarball",
        "img.tar",
        "--tag",
        "t1",
        "--file",
        "kodata:/var/run/ko",
    ]);
    assert_eq!(run.code, 0, "{}", run.debug());
    let bundle = r.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image", "img:t1"])
        .arg(&bundle)
        .current_dir(r.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rootfs = bundle.join("rootfs");
    let bin = rootfs.join("usr/local/bin/hello-service");
    assert_eq!(std::fs::read_to_string(rootfs.join("var/run/ko/static/index.html")).unwrap(), "<h1>hi</h1>");
    let script = std::fs::metadata(rootfs.join("var/run/ko/run.sh")).unwrap();
    assert_eq!(script.permissions().mode() & 0o777, 0o755, "executable, readable by the non-root user");
    assert_eq!(std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777, 0o755);
    assert!(std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap().contains("nonroot:x:65532:65532"));
    if Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
        assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file());
    }
    // The binary from the image serves.
    let addr = free_addr();
    let mut child = Command::new(&bin).arg("-addr").arg(&addr).spawn().unwrap();
    let body = wait_http(&addr, "/healthz");
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.expect("the service answered").starts_with("HTTP/1.0 200"));
    // The archive is a docker archive too.
    require("skopeo", "--version");
    let out =
        Command::new("skopeo").args(["inspect", "docker-archive:img.tar"]).current_dir(r.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Architecture"], "amd64");
    let inspect = r.slipway(&["image", "inspect", "img.tar"]);
    assert_eq!(inspect.code, 0, "{}", inspect.debug());
    assert!(inspect.stdout.contains("linux/amd64"), "{}", inspect.stdout);
}

#[test]
fn bad_image_input_is_refused() {
    let r = built_example("linux/amd64");
    let wrong = r.slipway(&["image", "build", "--binary", "linux/arm64=dist/hello-service_linux_amd64"]);
    assert_eq!(wrong.code, 2, "{}", wrong.debug());
    assert!(wrong.stderr.contains("is a linux/amd64 executable, not linux/arm64"), "{}", wrong.debug());
    let missing = r.slipway(&["image", "build", "--file", "kodata:/var/run/ko"]);
    assert_eq!(missing.code, 2, "{}", missing.debug());
    assert!(missing.stderr.contains("kodata does not exist"), "{}", missing.debug());
    let relative = r.slipway(&["image", "build", "--file", "go.mod:etc/go.mod"]);
    assert_eq!(relative.code, 2, "{}", relative.debug());
    assert!(relative.stderr.contains("must be an absolute path in the image"), "{}", relative.debug());
    let not_exe = r.slipway(&["image", "build", "--binary", "linux/amd64=go.mod"]);
    assert_eq!(not_exe.code, 2);
    assert!(not_exe.stderr.contains("not an executable"), "{}", not_exe.debug());
    let bad_tag = r.slipway(&["image", "build", "--tag=bad:tag"]);
    assert_eq!(bad_tag.code, 2);
    assert!(bad_tag.stderr.contains("not a valid image tag"), "{}", bad_tag.debug());
    std::fs::remove_dir_all(r.path().join("dist")).unwrap();
    let none = r.slipway(&["image", "build"]);
    assert_eq!(none.code, 2);
    assert!(none.stderr.contains("slipway go build"), "{}", none.debug());
    std::fs::write(r.path().join("junk.tar"), b"not a tar").unwrap();
    let junk = r.slipway(&["image", "inspect", "junk.tar"]);
    assert_eq!(junk.code, 2, "{}", junk.debug());
}

#[test]
fn the_archive_loads_into_docker_and_the_container_serves() {
    require("docker", "--version");
    let info = Command::new("docker").arg("info").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(info, "no Docker Engine answers: run `scripts/dockerd` (scripts/test does)");
    let r = built_example("linux/amd64");
    let tag = format!("t{}", std::process::id());
    // Plain tar layers, as Docker keeps them (the busybox-base test loads gzip layers).
    let run = r.slipway(&["image", "build", "--tarball", "img.tar", "--tag", &tag, "--compression", "none"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    let inspect = json(&r.slipway(&["image", "inspect", "--json", "img.tar"]));
    let binary = std::fs::metadata(r.path().join("dist/hello-service_linux_amd64")).unwrap().len();
    assert!(inspect["images"][0]["platforms"][0]["size"].as_u64().unwrap() > binary, "uncompressed: {inspect}");
    let load = Command::new("docker").args(["load", "-i", "img.tar"]).current_dir(r.path()).output().unwrap();
    assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
    let image = format!("hello-service:{tag}");
    let addr = free_addr();
    let name = format!("slipway-test-{tag}");
    let started = Command::new("docker")
        .args(["run", "-d", "--rm", "--network", "host", "--name", &name, &image, "-addr", &addr])
        .output()
        .unwrap();
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let body = wait_http(&addr, "/version");
    let user = Command::new("docker").args(["inspect", "-f", "{{.Config.User}}", &image]).output().unwrap();
    let _ = Command::new("docker").args(["rm", "-f", &name]).output();
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    let body = body.expect("the container answered");
    assert!(body.starts_with("HTTP/1.0 200") && body.contains("\"version\":\"v2.0.0\""), "{body}");
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "65532:65532");
}

#[test]
fn a_base_image_from_docker_save_or_a_layout() {
    require("docker", "--version");
    assert!(
        Command::new("docker").arg("info").output().map(|o| o.status.success()).unwrap_or(false),
        "run scripts/dockerd"
    );
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.is_file(), "busybox is not installed: run scripts/setup (Debian's busybox-static)");
    let r = built_example("linux/amd64");
    // A base made without any registry: a busybox rootfs, docker import, docker save.
    let root = r.path().join("baseroot");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/ls")).unwrap();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["-cf", "base-rootfs.tar", "."])
        .current_dir(r.path())
        .status()
        .unwrap();
    assert!(tar.success());
    let tag = format!("slipway-test-base:{}", std::process::id());
    let import = Command::new("docker")
        .args(["import", "-c", "ENV PATH=/usr/local/bin:/bin", "base-rootfs.tar", &tag])
        .current_dir(r.path())
        .output()
        .unwrap();
    assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));
    let save = Command::new("docker").args(["save", "-o", "base.tar", &tag]).current_dir(r.path()).output().unwrap();
    assert!(save.status.success(), "{}", String::from_utf8_lossy(&save.stderr));
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();

    let image_tag = format!("b{}", std::process::id());
    let run = r.slipway(&[
        "image",
        "build",
        "--base",
        "base.tar",
        "--tarball",
        "img.tar",
        "--layout",
        "img",
        "--tag",
        &image_tag,
    ]);
    assert_eq!(run.code, 0, "{}", run.debug());
    let load = Command::new("docker").args(["load", "-i", "img.tar"]).current_dir(r.path()).output().unwrap();
    assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
    let image = format!("hello-service:{image_tag}");
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "host", "--entrypoint", "/bin/sh", &image, "-c", "ls /usr/local/bin; id -u"])
        .output()
        .unwrap();
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello-service\n65532\n", "the base's shell sees our binary");

    // That image, as an OCI layout, is itself a base: its layers come first.
    let stacked = r.slipway(&[
        "image",
        "build",
        "--base",
        &format!("img:{image_tag}"),
        "--layout",
        "stacked",
        "--tag",
        "s1",
        "--json",
    ]);
    assert_eq!(stacked.code, 0, "{}", stacked.debug());
    let v: serde_json::Value =
        serde_json::from_str(&r.slipway(&["image", "inspect", "--json", "stacked"]).stdout).unwrap();
    assert_eq!(v["images"][0]["platforms"][0]["layers"], 3);
    let missing = r.slipway(&["image", "build", "--base", "img:nope"]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("no image tagged `nope`"), "{}", missing.debug());
}

#[test]
fn unchanged_layers_come_from_the_cache_with_the_same_digest() {
    let r = built_example("linux/amd64");
    let fresh = json(&r.slipway(&["image", "build", "--json", "--no-cache", "--layout", "a"]));
    let cache = r.path().join(".slipway/cache/layers");
    assert!(!cache.exists() || std::fs::read_dir(&cache).unwrap().count() == 0, "--no-cache writes nothing");
    let first = json(&r.slipway(&["image", "build", "--json", "--layout", "b"]));
    let entries: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 2, "the base and the binary layers: {entries:?}");
    let second = json(&r.slipway(&["image", "build", "--json", "--layout", "c"]));
    assert_eq!(fresh["digest"], first["digest"]);
    assert_eq!(first["digest"], second["digest"]);
    // A damaged entry is noticed (its bytes no longer match the digest in its name) and replaced.
    let biggest = entries.iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    std::fs::write(biggest, b"not gzip").unwrap();
    let third = json(&r.slipway(&["image", "build", "--json", "--layout", "d"]));
    assert_eq!(third["digest"], fresh["digest"]);
    assert!(std::fs::metadata(biggest).unwrap().len() > 1000, "rewritten");
    // The cache stays out of git.
    assert_eq!(r.git(&["status", "--porcelain", "--", ".slipway"]), "");
}
