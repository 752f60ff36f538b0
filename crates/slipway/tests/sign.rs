//! Signing against real third parties: cosign (Debian's package) signs with slipway's keys
//! and verifies slipway's signatures — blobs and images, in a real registry on loopback — and
//! slipway verifies cosign's; skopeo (Debian's 1.9, whose own sigstore code Debian disabled)
//! reads slipway's attachments and copies them. Bad input: wrong passphrases, keys of other
//! algorithms, signatures for another digest or repository, a tag moved after signing.

#![allow(clippy::disallowed_methods, reason = "tests start the real programs they check")]

mod common;

use std::path::Path;
use std::process::Command;

use common::registry::Registry;
use common::*;

const PASS: &str = "correct horse";

fn sw(dir: &Path, args: &[&str]) -> Run {
    sw_pass(dir, args, PASS)
}

/// `sw` with another passphrase in `SLIPWAY_SIGNING_PASSWORD`.
fn sw_pass(dir: &Path, args: &[&str], pass: &str) -> Run {
    let out = Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("SLIPWAY_SIGNING_PASSWORD", pass)
        .env_remove("SLIPWAY_SIGNING_KEY")
        .env_remove("COSIGN_PASSWORD")
        .output()
        .unwrap();
    Run::from(out)
}

fn cosign(dir: &Path, args: &[&str]) -> Run {
    require("cosign", "version");
    let out = Command::new("cosign")
        .args(args)
        .current_dir(dir)
        .env("COSIGN_PASSWORD", PASS)
        .env("COSIGN_YES", "true")
        .env("SIGSTORE_NO_CACHE", "1")
        .env("TUF_ROOT", dir.join(".sigstore"))
        .output()
        .unwrap();
    Run::from(out)
}

/// `cosign verify-blob` of `file` against `file.sig` with the public key `key`.
fn cosign_verify_blob(dir: &Path, key: &str, file: &str) -> Run {
    let sig = format!("{file}.sig");
    cosign(dir, &["verify-blob", "--key", key, "--signature", &sig, "--insecure-ignore-tlog=true", file])
}

/// `slipway sign generate-key` into `dir` (PREFIX.key, PREFIX.pub).
fn keypair(dir: &Path, prefix: &str) {
    let r = sw(dir, &["sign", "generate-key", "--output", prefix]);
    assert_eq!(r.code, 0, "{}", r.debug());
}

#[test]
fn keys_and_blob_signatures_interoperate_with_cosign_both_ways() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    keypair(p, "slipway");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p.join("slipway.key")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // An existing key is not overwritten.
    let again = sw(p, &["sign", "generate-key"]);
    assert_eq!(again.code, 2, "{}", again.debug());
    assert!(again.stderr.contains("slipway.key exists"), "{}", again.stderr);
    std::fs::write(p.join("SHA256SUMS"), "0123  app_linux_amd64\n").unwrap();
    // cosign signs with slipway's key; slipway verifies.
    let c = cosign(
        p,
        &[
            "sign-blob",
            "--key",
            "slipway.key",
            "--tlog-upload=false",
            "--output-signature",
            "SHA256SUMS.sig",
            "SHA256SUMS",
        ],
    );
    assert_eq!(c.code, 0, "{}", c.debug());
    let v = sw(p, &["sign", "verify-blob", "--key", "slipway.pub", "SHA256SUMS"]);
    assert_eq!(v.code, 0, "{}", v.debug());
    // slipway signs; cosign verifies.
    let s = sw(p, &["sign", "blob", "--key", "slipway.key", "SHA256SUMS"]);
    assert_eq!(s.code, 0, "{}", s.debug());
    let c = cosign_verify_blob(p, "slipway.pub", "SHA256SUMS");
    assert_eq!(c.code, 0, "{}", c.debug());
    // A key cosign generated signs with slipway.
    let c = cosign(p, &["generate-key-pair", "--output-key-prefix", "cosign"]);
    assert_eq!(c.code, 0, "{}", c.debug());
    let s = sw(p, &["sign", "blob", "--key", "cosign.key", "SHA256SUMS"]);
    assert_eq!(s.code, 0, "{}", s.debug());
    let c = cosign_verify_blob(p, "cosign.pub", "SHA256SUMS");
    assert_eq!(c.code, 0, "{}", c.debug());
    // A changed file, and another key: exit 1, with the reason.
    std::fs::write(p.join("SHA256SUMS"), "4567  app_linux_amd64\n").unwrap();
    let v = sw(p, &["sign", "verify-blob", "--key", "cosign.pub", "SHA256SUMS"]);
    assert_eq!(v.code, 1, "{}", v.debug());
    assert!(v.stderr.contains("does not verify with any trusted key (cosign.pub)"), "{}", v.stderr);

    // Bad input, each named.
    let wrong = sw_pass(p, &["sign", "blob", "--key", "slipway.key", "SHA256SUMS"], "wrong");
    assert_eq!(wrong.code, 2, "{}", wrong.debug());
    assert!(wrong.stderr.contains("wrong passphrase for slipway.key"), "{}", wrong.stderr);
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "x25519", "-out", "x.pem"])
        .current_dir(p)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new("openssl")
        .args(["pkey", "-in", "x.pem", "-pubout", "-out", "x.pub"])
        .current_dir(p)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = sw(p, &["sign", "verify-blob", "--key", "x.pub", "SHA256SUMS"]);
    assert_eq!(v.code, 2, "{}", v.debug());
    assert!(v.stderr.contains("x.pub: a public key of X25519"), "{}", v.stderr);
    let v = sw(p, &["sign", "blob", "--key", "x.pem", "SHA256SUMS"]);
    assert_eq!(v.code, 2, "{}", v.debug());
    assert!(v.stderr.contains("x.pem holds a PEM `PRIVATE KEY`, not a cosign private key"), "{}", v.stderr);
    let v = sw(p, &["sign", "blob", "--key", "slipway.pub", "SHA256SUMS"]);
    assert!(v.code == 2 && v.stderr.contains("slipway.pub is a public key"), "{}", v.debug());
}

/// The example service built for two platforms, pushed and signed by `slipway image build`.
fn signed_example(reg: &Registry, repo: &str) -> (Repo, String) {
    require_go();
    let r = Repo::new(&[]);
    copy_example(r.path());
    r.commit("hello-service");
    r.git(&["tag", "v1.0.0"]);
    keypair(r.path(), "release");
    let b = sw(r.path(), &["go", "build", "--platform", "linux/amd64,linux/arm64"]);
    assert_eq!(b.code, 0, "{}", b.debug());
    let reference = format!("{}/{repo}:v1.0.0", reg.addr);
    let i = sw(
        r.path(),
        &[
            "image",
            "build",
            "--json",
            "--push",
            &reference,
            "--sign",
            "--key",
            "release.key",
            "--annotation",
            "team=payments",
        ],
    );
    assert_eq!(i.code, 0, "{}", i.debug());
    let v: serde_json::Value = serde_json::from_str(i.stdout.trim()).unwrap();
    let signed = v["pushed"][0]["signed"].as_array().unwrap();
    // The index and both platform manifests.
    assert_eq!(signed.len(), 3, "{v}");
    assert_eq!(signed[0]["digest"], v["digest"]);
    (r, reference)
}

#[test]
fn images_signed_by_slipway_verify_with_cosign_and_skopeo_carries_the_signatures() {
    require("skopeo", "--version");
    let reg = Registry::start(None);
    let (r, reference) = signed_example(&reg, "team/hello");
    let p = r.path();
    let v = sw(p, &["image", "verify", "--json", "--key", "release.pub", &reference]);
    assert_eq!(v.code, 0, "{}", v.debug());
    let j: serde_json::Value = serde_json::from_str(v.stdout.trim()).unwrap();
    assert_eq!(j["signatures"].as_array().unwrap().len(), 3, "{j}");
    let notes = &j["signatures"][0]["annotations"];
    assert_eq!(notes["team"], "payments", "{j}");
    assert_eq!(notes["commit"].as_str().unwrap(), r.git(&["rev-parse", "HEAD"]).trim(), "{j}");
    assert!(notes["builder"].as_str().unwrap().starts_with("slipway/"), "{j}");
    // cosign verifies the index and each platform manifest.
    let index_digest = j["digest"].as_str().unwrap().to_string();
    for s in j["signatures"].as_array().unwrap() {
        let at = format!("{}/team/hello@{}", reg.addr, s["digest"].as_str().unwrap());
        let c = cosign(
            p,
            &["verify", "--key", "release.pub", "--insecure-ignore-tlog=true", "--allow-insecure-registry", &at],
        );
        assert_eq!(c.code, 0, "{at}: {}", c.debug());
        assert!(c.stdout.contains("cosign container image signature"), "{}", c.stdout);
    }
    // skopeo reads slipway's attachments and copies them along (Debian's skopeo 1.9 cannot
    // check sigstore signatures itself: "Debian-local change: sigstore disabled").
    let rd = p.join("registries.d");
    std::fs::create_dir_all(&rd).unwrap();
    std::fs::write(rd.join("local.yaml"), format!("docker:\n  {}:\n    use-sigstore-attachments: true\n", reg.addr))
        .unwrap();
    std::fs::write(p.join("policy.json"), r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    let copied = format!("{}/mirror/hello:v1.0.0", reg.addr);
    let out = Command::new("skopeo")
        .args([
            "--policy",
            "policy.json",
            "--registries.d",
            "registries.d",
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{reference}"))
        .arg(format!("docker://{copied}"))
        .current_dir(p)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Storing signatures"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The copy has the signature — for the repository it was signed in, not this one.
    let v = sw(p, &["image", "verify", "--key", "release.pub", &copied]);
    assert_eq!(v.code, 1, "{}", v.debug());
    assert!(
        v.stderr.contains(&format!(
            "names another repository: {}/team/hello, the image is in {}/mirror/hello",
            reg.addr, reg.addr
        )),
        "{}",
        v.stderr
    );

    // Another key: invalid, named.
    keypair(p, "other");
    let v = sw(p, &["image", "verify", "--key", "other.pub", &reference]);
    assert_eq!(v.code, 1, "{}", v.debug());
    assert!(v.stderr.contains("is not by any trusted key (other.pub)"), "{}", v.stderr);

    // A signature for another digest: the index's signature put under a platform's tag.
    let platform = j["signatures"][1]["digest"].as_str().unwrap().to_string();
    let sig_of = |d: &str| format!("sha256-{}.sig", d.trim_start_matches("sha256:"));
    let manifest = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/team/hello:{}", reg.addr, sig_of(&index_digest)))
        .output()
        .unwrap();
    assert!(manifest.status.success());
    let m = p.join("sig.json");
    std::fs::write(&m, &manifest.stdout).unwrap();
    let put = Command::new("curl")
        .args(["-sf", "-X", "PUT", "-H", "Content-Type: application/vnd.oci.image.manifest.v1+json", "--data-binary"])
        .arg(format!("@{}", m.display()))
        .arg(format!("http://{}/v2/team/hello/manifests/{}", reg.addr, sig_of(&platform)))
        .output()
        .unwrap();
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let v = sw(p, &["image", "verify", "--key", "release.pub", &reference]);
    assert_eq!(v.code, 1, "{}", v.debug());
    assert!(
        v.stderr.contains(&format!("is for another digest: its payload names {index_digest}, the image is {platform}")),
        "{}",
        v.stderr
    );

    // A tag moved after signing: another build pushed to it.
    let b = sw(p, &["image", "build", "--push", &reference, "--env", "MOVED=1"]);
    assert_eq!(b.code, 0, "{}", b.debug());
    let at = format!("{reference}@{index_digest}");
    let v = sw(p, &["image", "verify", "--key", "release.pub", &at]);
    assert_eq!(v.code, 1, "{}", v.debug());
    assert!(v.stderr.contains("the tag `v1.0.0` was moved: it points at sha256:"), "{}", v.stderr);
    assert!(v.stderr.contains(&format!("not at the signed {index_digest}")), "{}", v.stderr);
    let v = sw(p, &["image", "verify", "--key", "release.pub", &reference]);
    assert_eq!(v.code, 1, "{}", v.debug());
    assert!(v.stderr.contains("is not signed"), "{}", v.stderr);
}

#[test]
fn cosign_signed_images_verify_with_slipway() {
    let reg = Registry::start(None);
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    keypair(p, "slipway");
    // An image from slipway's builder, pushed unsigned.
    require_go();
    let r = Repo::new(&[]);
    copy_example(r.path());
    r.commit("hello-service");
    let b = sw(r.path(), &["go", "build"]);
    assert_eq!(b.code, 0, "{}", b.debug());
    let reference = format!("{}/team/app:v2", reg.addr);
    let i = sw(r.path(), &["image", "build", "--push", &reference]);
    assert_eq!(i.code, 0, "{}", i.debug());
    let v = sw(p, &["image", "verify", "--key", "slipway.pub", &reference]);
    assert_eq!(v.code, 1, "{}", v.debug());
    assert!(v.stderr.contains("is not signed: no signature under the `sha256-"), "{}", v.stderr);
    // cosign signs with the slipway-generated key; slipway verifies; a slipway signature by
    // another key is added beside cosign's, and both hold.
    let c =
        cosign(p, &["sign", "--key", "slipway.key", "--tlog-upload=false", "--allow-insecure-registry", &reference]);
    assert_eq!(c.code, 0, "{}", c.debug());
    let v = sw(p, &["image", "verify", "--key", "slipway.pub", &reference]);
    assert_eq!(v.code, 0, "{}", v.debug());
    keypair(p, "second");
    let s = sw(p, &["image", "sign", "--key", "second.key", &reference]);
    assert_eq!(s.code, 0, "{}", s.debug());
    for key in ["slipway.pub", "second.pub"] {
        let v = sw(p, &["image", "verify", "--key", key, &reference]);
        assert_eq!(v.code, 0, "{key}: {}", v.debug());
        let c = cosign(
            p,
            &["verify", "--key", key, "--insecure-ignore-tlog=true", "--allow-insecure-registry", &reference],
        );
        assert_eq!(c.code, 0, "{key}: {}", c.debug());
    }
}

#[test]
fn go_build_signs_its_sums_and_manifest() {
    require_go();
    let r = Repo::new(&[]);
    copy_example(r.path());
    r.commit("hello-service");
    keypair(r.path(), "release");
    let b = sw(r.path(), &["go", "build", "--sign", "--key", "release.key"]);
    assert_eq!(b.code, 0, "{}", b.debug());
    assert!(b.stdout.contains("(signed)"), "{}", b.stdout);
    let dist = r.path().join("dist");
    for f in ["SHA256SUMS", "manifest.json"] {
        let c = cosign_verify_blob(&dist, "../release.pub", f);
        assert_eq!(c.code, 0, "{f}: {}", c.debug());
    }
    // An unsigned build leaves no stale signature behind.
    let b = sw(r.path(), &["go", "build"]);
    assert_eq!(b.code, 0, "{}", b.debug());
    assert!(!dist.join("SHA256SUMS.sig").exists() && !dist.join("manifest.json.sig").exists());
    // A wrong passphrase fails before anything is built.
    let run = sw_pass(r.path(), &["go", "build", "--sign", "--key", "release.key"], "nope");
    assert_eq!(run.code, 2, "{}", run.debug());
    assert!(run.stderr.contains("wrong passphrase for release.key"), "{}", run.stderr);
}
