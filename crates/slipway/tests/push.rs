//! `slipway image push` and `image build --push` against a real registry (Debian's
//! `docker-registry`) started on loopback by the test, with and without htpasswd auth;
//! read back with `skopeo`.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use std::process::{Command, Stdio};

use common::registry::Registry;
use common::*;

fn example_with_image(platforms: &str) -> Repo {
    require_go();
    let r = Repo::new(&[]);
    copy_example(r.path());
    r.commit("hello-service");
    r.git(&["tag", "v3.0.0"]);
    let b = r.slipway(&["go", "build", "--platform", platforms]);
    assert_eq!(b.code, 0, "{}", b.debug());
    let i = r.slipway(&["image", "build"]);
    assert_eq!(i.code, 0, "{}", i.debug());
    r
}

fn json_lines(run: &Run) -> Vec<serde_json::Value> {
    run.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {}", run.debug()))).collect()
}

#[test]
fn push_uploads_once_and_skopeo_reads_it_back() {
    require("skopeo", "--version");
    let reg = Registry::start(None);
    let r = example_with_image("linux/amd64,linux/arm64");
    let reference = format!("{}/team/hello:v3.0.0", reg.addr);
    let first = r.slipway(&["image", "push", "--json", &reference]);
    assert_eq!(first.code, 0, "{}", first.debug());
    let f = &json_lines(&first)[0];
    assert!(f["uploaded"].as_u64().unwrap() >= 4, "{f}");
    // A second push of the unchanged image uploads nothing.
    let second = json_lines(&r.slipway(&["image", "push", "--json", &reference]))[0].clone();
    assert_eq!(second["uploaded"], 0, "{second}");
    assert_eq!(second["digest"], f["digest"]);
    // Regression: a layout holding one image pushes to any tag, as crane and skopeo do.
    let elsewhere = format!("{}/team/hello:stable", reg.addr);
    let moved = r.slipway(&["image", "push", "--json", &elsewhere]);
    assert_eq!(moved.code, 0, "{}", moved.debug());
    assert_eq!(json_lines(&moved)[0]["digest"], f["digest"]);
    // An explicit --tag must be in the layout, and the error says what is.
    let wrong = r.slipway(&["image", "push", "--tag", "v9", &elsewhere]);
    assert_eq!(wrong.code, 2, "{}", wrong.debug());
    assert!(wrong.stderr.contains("no image tagged `v9`") && wrong.stderr.contains("`v3.0.0`"), "{}", wrong.debug());
    // skopeo sees our digest and both platforms.
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Digest"], f["digest"]);
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .unwrap();
    let raw: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 2);
    // The SBOM went along, under the fallback tag (this registry has no referrers API).
    let sbom_tag = f["sbom"].as_str().expect("an SBOM was pushed").to_string();
    assert_eq!(sbom_tag, format!("sha256-{}.sbom", f["digest"].as_str().unwrap().trim_start_matches("sha256:")));
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{}/team/hello:{sbom_tag}", reg.addr)])
        .output()
        .unwrap();
    let art: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(art["artifactType"], "application/spdx+json");
    assert_eq!(art["subject"]["digest"], f["digest"]);
    let layer = art["layers"][0]["digest"].as_str().unwrap();
    let blob = http_get(&reg.addr, &format!("/v2/team/hello/blobs/{layer}")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(blob.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["packages"][0]["name"], "example.com/hello-service");
    // slipway inspects it in the registry the same way as locally.
    let remote = r.slipway(&["image", "inspect", "--json", &reference]);
    assert_eq!(remote.code, 0, "{}", remote.debug());
    let remote: serde_json::Value = serde_json::from_str(&remote.stdout).unwrap();
    let local: serde_json::Value =
        serde_json::from_str(&r.slipway(&["image", "inspect", "--json", "dist/image"]).stdout).unwrap();
    assert_eq!(remote["images"][0]["platforms"], local["images"][0]["platforms"]);
    assert_eq!(local["images"][0]["sbom"], true, "the layout keeps the SBOM beside the image");
    let gone = r.slipway(&["image", "inspect", &format!("{}/team/nothing:v1", reg.addr)]);
    assert_eq!(gone.code, 2, "{}", gone.debug());
    assert!(gone.stderr.contains("does not exist"), "{}", gone.debug());
    // build --push does both at once, under another tag.
    let built =
        r.slipway(&["image", "build", "--json", "--tag", "again", "--push", &format!("{}/team/hello:again", reg.addr)]);
    assert_eq!(built.code, 0, "{}", built.debug());
    let v: serde_json::Value = serde_json::from_str(built.stdout.trim()).unwrap();
    // New: the two configs (their version label changed) and the SBOM (it names the image).
    assert_eq!(v["pushed"][0]["uploaded"], 3, "{v}");
    // The pushed image serves as a base straight from the registry.
    let based =
        r.slipway(&["image", "build", "--base", &reference, "--layout", "based", "--tag", "b1", "--json", "--no-sbom"]);
    assert_eq!(based.code, 0, "{}", based.debug());
    let v: serde_json::Value =
        serde_json::from_str(&r.slipway(&["image", "inspect", "--json", "based"]).stdout).unwrap();
    for p in v["images"][0]["platforms"].as_array().unwrap() {
        assert_eq!(p["layers"], 3, "two base layers and ours: {p}");
    }
    // Tag templates, several tags per push.
    let templated = r.slipway(&[
        "image",
        "build",
        "--json",
        "--push",
        &format!("{}/team/hello:{{{{version}}}}-{{{{commit_short}}}}", reg.addr),
        "--push",
        &format!("{}/team/hello:{{{{branch}}}}", reg.addr),
    ]);
    assert_eq!(templated.code, 0, "{}", templated.debug());
    let v: serde_json::Value = serde_json::from_str(templated.stdout.trim()).unwrap();
    let short = r.git(&["rev-parse", "--short=8", "HEAD"]);
    assert_eq!(v["pushed"][0]["ref"], format!("{}/team/hello:v3.0.0-{short}", reg.addr));
    assert_eq!(v["pushed"][1]["ref"], format!("{}/team/hello:main", reg.addr));
    let bad = r.slipway(&["image", "build", "--push", &format!("{}/team/hello:{{{{nope}}}}", reg.addr)]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("unknown template"), "{}", bad.debug());
}

#[test]
fn auth_is_asked_for_and_used() {
    let reg = Registry::start(Some(("ci", "s3cret-pass")));
    let r = example_with_image("linux/amd64");
    let reference = format!("{}/team/hello:v3.0.0", reg.addr);
    let refused = Command::new(bin())
        .args(["image", "push", &reference])
        .current_dir(r.path())
        .env("HOME", r.path())
        .output()
        .unwrap();
    let refused = Run::from(refused);
    assert_eq!(refused.code, 2, "{}", refused.debug());
    assert!(refused.stderr.contains("wants a user name and password"), "{}", refused.debug());
    let wrong = Command::new(bin())
        .args(["image", "push", &reference])
        .current_dir(r.path())
        .env("SLIPWAY_REGISTRY_USER", "ci")
        .env("SLIPWAY_REGISTRY_PASSWORD", "wrong")
        .output()
        .unwrap();
    let wrong = Run::from(wrong);
    assert_eq!(wrong.code, 2, "{}", wrong.debug());
    assert!(wrong.stderr.contains("refused the credentials"), "{}", wrong.debug());
    let mut ok = Command::new(bin())
        .args(["image", "push", "--json", "--username", "ci", "--password-stdin", &reference])
        .current_dir(r.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    ok.stdin.take().unwrap().write_all(b"s3cret-pass\n").unwrap();
    let ok = Run::from(ok.wait_with_output().unwrap());
    assert_eq!(ok.code, 0, "{}", ok.debug());
    assert!(!ok.stdout.contains("s3cret-pass") && !ok.stderr.contains("s3cret-pass"));
}

#[test]
fn bad_references_and_unreachable_registries() {
    let r = example_with_image("linux/amd64");
    let bad = r.slipway(&["image", "push", "hello:v1"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("not an image reference"), "{}", bad.debug());
    let nobody = free_addr();
    let down = r.slipway(&["image", "push", &format!("{nobody}/team/hello:v3.0.0")]);
    assert_eq!(down.code, 1, "{}", down.debug());
    assert!(down.stderr.contains("after 4 attempts"), "{}", down.debug());
    let missing = r.slipway(&["image", "push", "--tag", "nope", &format!("{nobody}/team/hello:v1")]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("no image tagged `nope`"), "{}", missing.debug());
}

#[test]
fn the_pipeline_builds_and_pushes_the_configured_image() {
    require("skopeo", "--version");
    let reg = Registry::start(None);
    require_go();
    let r = Repo::new(&[]);
    copy_example(r.path());
    assert_eq!(r.slipway(&["init"]).code, 0);
    let mut file = std::fs::read_to_string(r.path().join(".slipway.yml")).unwrap();
    file.push_str(&format!(
        "\nimages:\n  registry: {}/team/hello\n  tags: [\"{{{{commit_short}}}}\", stable]\n  ports: [8080]\n",
        reg.addr
    ));
    std::fs::write(r.path().join(".slipway.yml"), file).unwrap();
    r.commit("pipeline with an image");
    let run = r.slipway(&["run", "--json"]);
    assert_eq!(run.code, 0, "{}", run.debug());
    assert!(run.statuses().contains(&("container".to_string(), "success".to_string())));
    // The pushed digests are an artifact of the pipeline.
    let image: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(r.path().join(".slipway/runs/1/artifacts/container/image.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(image["built"], true);
    let short = r.git(&["rev-parse", "--short=8", "HEAD"]);
    assert_eq!(image["pushed"][0]["ref"], format!("{}/team/hello:{short}", reg.addr));
    assert_eq!(image["pushed"][1]["ref"], format!("{}/team/hello:stable", reg.addr));
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{}/team/hello:stable", reg.addr)])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Digest"], image["digest"]);
}

#[test]
fn https_registries_are_verified() {
    let reg = Registry::start_with(None, true);
    let r = example_with_image("linux/amd64");
    let reference = format!("{}/team/hello:v3.0.0", reg.addr);
    // Not trusted: the certificate error is reported, nothing is pushed.
    let untrusted = r.slipway(&["image", "push", &reference]);
    assert_ne!(untrusted.code, 0, "{}", untrusted.debug());
    assert!(untrusted.stderr.to_ascii_lowercase().contains("certificate"), "{}", untrusted.debug());
    // Trusted with its CA: pushed over HTTPS.
    let ca = reg.ca();
    let ok = r.slipway(&["image", "push", "--json", "--registry-ca", ca.to_str().unwrap(), &reference]);
    assert_eq!(ok.code, 0, "{}", ok.debug());
    let inspect = r.slipway(&["image", "inspect", "--json", "--registry-ca", ca.to_str().unwrap(), &reference]);
    assert_eq!(inspect.code, 0, "{}", inspect.debug());
}

#[test]
fn big_blobs_go_in_chunks_and_other_repositories_mount_them() {
    require("skopeo", "--version");
    let reg = Registry::start(None);
    let r = example_with_image("linux/amd64");
    let a = format!("{}/team/one:v3.0.0", reg.addr);
    let b = format!("{}/team/two:v3.0.0", reg.addr);
    // 1 MiB chunks: the binary's layer goes up in several PATCHes.
    let out = Command::new(bin())
        .args(["image", "push", "--json", &a, &b])
        .current_dir(r.path())
        .env("SLIPWAY_PUSH_CHUNK_SIZE", "1048576")
        .output()
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 0, "{}", run.debug());
    let lines = json_lines(&run);
    assert!(lines[0]["uploaded"].as_u64().unwrap() >= 3, "{}", lines[0]);
    // The second repository gets the layers by mount, not upload.
    assert!(lines[1]["mounted"].as_u64().unwrap() >= 3, "{}", lines[1]);
    assert_eq!(lines[1]["bytes_uploaded"], 0, "{}", lines[1]);
    for reference in [&a, &b] {
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", &format!("docker://{reference}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(info["Digest"], lines[0]["digest"]);
    }
    // And the chunked layer is intact: skopeo copies it back byte for byte.
    let copy = r.path().join("copied");
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", &format!("docker://{a}")])
        .arg(format!("oci:{}:x", copy.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn credentials_come_from_docker_config_and_credential_helpers() {
    let reg = Registry::start(Some(("ci", "s3cret-pass")));
    let r = example_with_image("linux/amd64");
    let reference = format!("{}/team/hello:v3.0.0", reg.addr);
    // docker login's file.
    let docker = r.path().join("dockercfg");
    std::fs::create_dir_all(&docker).unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("ci:s3cret-pass");
    std::fs::write(
        docker.join("config.json"),
        format!("{{\"auths\": {{\"{}\": {{\"auth\": \"{auth}\"}}}}}}", reg.addr),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["image", "push", &reference])
        .current_dir(r.path())
        .env("DOCKER_CONFIG", &docker)
        .output()
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 0, "{}", run.debug());
    // A credential helper speaking docker's protocol (get, host on stdin, JSON out).
    let helpers = r.path().join("helpers");
    std::fs::create_dir_all(&helpers).unwrap();
    let helper = helpers.join("docker-credential-slipwaytest");
    std::fs::write(&helper, "#!/bin/sh\nread host\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"ci\",\"Secret\":\"s3cret-pass\"}' \"$host\"\n").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&helper).unwrap().permissions(), 0o755);
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(docker.join("config.json"), "{\"credsStore\": \"slipwaytest\"}").unwrap();
    let path = format!("{}:{}", helpers.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new(bin())
        .args(["image", "push", "--json", &format!("{}/team/other:v3.0.0", reg.addr)])
        .current_dir(r.path())
        .env("DOCKER_CONFIG", &docker)
        .env("PATH", path)
        .output()
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 0, "{}", run.debug());
}

#[test]
fn latest_is_pushed_from_the_default_branch_only() {
    let reg = Registry::start(None);
    let r = example_with_image("linux/amd64");
    assert_eq!(r.slipway(&["init"]).code, 0);
    let mut file = std::fs::read_to_string(r.path().join(".slipway.yml")).unwrap();
    file.push_str(&format!("\nimages:\n  registry: {}/team/hello\n", reg.addr));
    std::fs::write(r.path().join(".slipway.yml"), file).unwrap();
    r.commit("an image to push");
    let refs = |run: &Run| -> Vec<String> {
        assert_eq!(run.code, 0, "{}", run.debug());
        let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
        v["pushed"].as_array().unwrap().iter().map(|p| p["ref"].as_str().unwrap().to_string()).collect()
    };
    // On main: the version and `latest`.
    let main = r.slipway(&["image", "build", "--json"]);
    assert_eq!(refs(&main), [format!("{}/team/hello:v3.0.0", reg.addr), format!("{}/team/hello:latest", reg.addr)]);
    // On a feature branch: `latest` stays where it was, and the user is told why.
    r.git(&["checkout", "-q", "-b", "feature/x"]);
    let feature = r.slipway(&["image", "build", "--json"]);
    assert_eq!(refs(&feature), [format!("{}/team/hello:v3.0.0", reg.addr)]);
    assert!(feature.stderr.contains("default branch only"), "{}", feature.debug());
}

#[test]
fn a_terminal_shows_a_progress_bar_per_blob() {
    require("script", "--version");
    let reg = Registry::start(None);
    let r = example_with_image("linux/amd64");
    let reference = format!("{}/team/hello:v3.0.0", reg.addr);
    // `script` gives the push a pseudo-terminal, as a user's shell would.
    let on_tty = |what: &str| {
        let cmd = format!("{} image push {reference}", bin().display());
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .current_dir(r.path())
            .env("TERM", "xterm")
            .output()
            .unwrap();
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let first = on_tty("first push");
    assert!(first.contains("/s uploaded"), "a bar per blob, ending in `uploaded`: {first}");
    assert!(first.contains("MiB"), "sizes are shown: {first}");
    let second = on_tty("second push");
    assert!(second.contains(" exists") && !second.contains("/s uploaded"), "{second}");
    // Without a terminal there are no bars.
    let plain = r.slipway(&["image", "push", &reference]);
    assert_eq!(plain.code, 0, "{}", plain.debug());
    assert!(!plain.stderr.contains("exists"), "{}", plain.debug());
}

#[test]
fn a_corrupt_blob_is_refused_and_nothing_is_tagged() {
    require("skopeo", "--version");
    let reg = Registry::start(None);
    let r = example_with_image("linux/amd64");
    // Flip one byte in the middle of the largest blob (the binary's layer).
    let blobs = r.path().join("dist/image/blobs/sha256");
    let largest = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&largest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&largest, bytes).unwrap();
    let reference = format!("{}/team/hello:v3.0.0", reg.addr);
    let push = r.slipway(&["image", "push", &reference]);
    assert_ne!(push.code, 0, "{}", push.debug());
    assert!(
        push.stderr.contains("does not match its digest") && push.stderr.contains("build the image again"),
        "{}",
        push.debug()
    );
    // The tag was never written: the manifest goes last.
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the tag must not exist: {}", String::from_utf8_lossy(&out.stdout));
}
