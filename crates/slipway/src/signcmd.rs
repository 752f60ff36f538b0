//! `slipway sign generate-key|blob|verify-blob`, and the key loading that `image sign|verify`,
//! `image build --sign` and `go build --sign` share: cosign-format keys (`slipway_oci::keys`),
//! the passphrase from SLIPWAY_SIGNING_PASSWORD (or COSIGN_PASSWORD, or a prompt), keys given
//! as a file, as PEM text, or as `env://NAME`.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;
use slipway_oci::keys::{PublicKey, SigningKey};
use slipway_oci::signature::TrustedKey;

use crate::ui::{Ui, UserError, exit};

#[derive(Subcommand)]
pub enum SignCommand {
    /// Write a new key pair in cosign's format: PREFIX.key (encrypted with the passphrase from
    /// SLIPWAY_SIGNING_PASSWORD, else asked twice) and PREFIX.pub.
    GenerateKey {
        /// Where to write: PREFIX.key and PREFIX.pub.
        #[arg(long, value_name = "PREFIX", default_value = "slipway")]
        output: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Sign files: FILE.sig beside each, base64 as `cosign sign-blob` writes it.
    Blob {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        key: KeyArg,
        #[arg(long)]
        json: bool,
    },
    /// Check files against their FILE.sig with trusted public keys (exit 0 valid, 1 not).
    VerifyBlob {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// A trusted public key (repeatable; a file, PEM text or env://NAME).
        #[arg(long, required = true, value_name = "PUB")]
        key: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

/// The private key to sign with.
#[derive(clap::Args, Clone, Debug)]
pub struct KeyArg {
    /// The private key: a file, PEM text, or env://NAME (default SLIPWAY_SIGNING_KEY).
    #[arg(long, value_name = "KEY", env = "SLIPWAY_SIGNING_KEY", hide_env_values = true)]
    pub key: Option<String>,
}

/// What a key argument holds: the PEM bytes and a name for messages (never the PEM).
fn key_material(spec: &str, flag: &str) -> Result<(Vec<u8>, String)> {
    if let Some(name) = spec.strip_prefix("env://") {
        let v = std::env::var(name)
            .map_err(|_| UserError::new(format!("{flag} env://{name}: the environment variable {name} is not set")))?;
        return Ok((v.into_bytes(), format!("env://{name}")));
    }
    if spec.trim_start().starts_with("-----BEGIN ") {
        return Ok((spec.as_bytes().to_vec(), format!("the PEM given to {flag}")));
    }
    let bytes = std::fs::read(spec).map_err(|e| {
        UserError::new(format!("{flag} {spec}: {e}"))
            .hint("give a key file (`slipway sign generate-key` writes slipway.key and slipway.pub)")
    })?;
    Ok((bytes, spec.to_string()))
}

/// The passphrase of a private key: SLIPWAY_SIGNING_PASSWORD, COSIGN_PASSWORD, else asked.
fn passphrase(what: &str, confirm: bool) -> Result<String> {
    for var in ["SLIPWAY_SIGNING_PASSWORD", "COSIGN_PASSWORD"] {
        if let Ok(p) = std::env::var(var) {
            return Ok(p);
        }
    }
    if !std::io::stdin().is_terminal() {
        return Err(UserError::new(format!("no passphrase for {what}, and no terminal to ask for it"))
            .hint("set SLIPWAY_SIGNING_PASSWORD (a masked secret in CI)")
            .into());
    }
    let p = rpassword::prompt_password(format!("passphrase for {what}: "))?;
    if confirm && rpassword::prompt_password("again: ")? != p {
        return Err(UserError::new("the passphrases differ").into());
    }
    Ok(p)
}

/// Opens the private key `key` (or SLIPWAY_SIGNING_KEY) names.
pub fn signing_key(key: &KeyArg) -> Result<SigningKey> {
    let spec = key.key.as_deref().ok_or_else(|| {
        UserError::new("no signing key")
            .hint("give --key FILE (or SLIPWAY_SIGNING_KEY; `slipway sign generate-key` makes one)")
    })?;
    let (pem, what) = key_material(spec, "--key")?;
    let password = passphrase(&what, false)?;
    SigningKey::from_pem(&pem, password.as_bytes(), &what).map_err(crate::imagecmd::oci_error)
}

/// The trusted public keys `specs` name.
pub fn trusted_keys(specs: &[String]) -> Result<Vec<TrustedKey>> {
    let mut out = Vec::new();
    for s in specs {
        let (pem, what) = key_material(s, "--key")?;
        let key = PublicKey::from_pem(&pem, &what).map_err(crate::imagecmd::oci_error)?;
        out.push(TrustedKey { name: what, key });
    }
    Ok(out)
}

/// What a signature says about its origin: the commit, the pipeline and the builder, from
/// the pipeline's variables when in a job, else git; plus `extra` KEY=VALUE pairs.
pub fn annotations(root: &Path, extra: &[String]) -> Result<BTreeMap<String, String>> {
    let mut a = BTreeMap::new();
    let commit = std::env::var("CI_COMMIT_SHA")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| Some(slipway_git::Checkout::read(root)).filter(|c| c.is_repo && !c.sha.is_empty()).map(|c| c.sha));
    if let Some(c) = commit {
        a.insert("commit".to_string(), c);
    }
    if let Ok(p) = std::env::var("CI_PIPELINE_ID")
        && !p.is_empty()
    {
        a.insert("pipeline".to_string(), p);
    }
    a.insert("builder".to_string(), concat!("slipway/", env!("CARGO_PKG_VERSION")).to_string());
    for kv in extra {
        let (k, v) =
            kv.split_once('=').ok_or_else(|| UserError::new(format!("--annotation `{kv}`: write KEY=VALUE")))?;
        a.insert(k.to_string(), v.to_string());
    }
    Ok(a)
}

pub fn run(cmd: SignCommand, ui: &Ui) -> Result<i32> {
    match cmd {
        SignCommand::GenerateKey { output, force, json } => generate(&output, force, json, ui),
        SignCommand::Blob { files, key, json } => {
            let k = signing_key(&key)?;
            for f in &files {
                let bytes = std::fs::read(f).map_err(|e| UserError::new(format!("{}: {e}", f.display())))?;
                let sig = slipway_oci::signature::sign_blob(&k, &bytes).map_err(crate::imagecmd::oci_error)?;
                let out = sig_path(f);
                std::fs::write(&out, sig)?;
                if json {
                    println!("{}", serde_json::json!({"file": f, "signature": out}));
                } else {
                    println!("{} {} → {}", ui.paint("32", "signed"), f.display(), out.display());
                }
            }
            Ok(exit::OK)
        }
        SignCommand::VerifyBlob { files, key, json } => {
            let keys = trusted_keys(&key)?;
            let mut code = exit::OK;
            for f in &files {
                let result = verify_file(&keys, f);
                match &result {
                    Ok(k) if json => println!("{}", serde_json::json!({"file": f, "valid": true, "key": k})),
                    Ok(k) => println!("{} {} (signed by {k})", ui.paint("32", "valid"), f.display()),
                    Err(why) if json => {
                        println!("{}", serde_json::json!({"file": f, "valid": false, "reason": why}))
                    }
                    Err(why) => eprintln!("{} {}: {why}", ui.paint("31;1", "invalid"), f.display()),
                }
                if result.is_err() {
                    code = exit::FAILED;
                }
            }
            Ok(code)
        }
    }
}

/// `FILE.sig`.
pub fn sig_path(f: &Path) -> PathBuf {
    let mut s = f.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// Checks `f` against `f.sig`; the signing key's name, or why not.
pub fn verify_file(keys: &[TrustedKey], f: &Path) -> Result<String, String> {
    let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
    let sig_file = sig_path(f);
    let sig = std::fs::read_to_string(&sig_file)
        .map_err(|e| format!("{} is not signed: {}: {e}", f.display(), sig_file.display()))?;
    slipway_oci::signature::verify_blob(keys, &bytes, &sig, &sig_file.display().to_string()).map(|k| k.name.clone())
}

fn generate(prefix: &Path, force: bool, json: bool, ui: &Ui) -> Result<i32> {
    let with = |ext: &str| {
        let mut s = prefix.as_os_str().to_owned();
        s.push(ext);
        PathBuf::from(s)
    };
    let (key_path, pub_path) = (with(".key"), with(".pub"));
    for p in [&key_path, &pub_path] {
        if p.exists() && !force {
            return Err(UserError::new(format!("{} exists: not overwriting a key", p.display()))
                .hint("choose another --output PREFIX, or pass --force")
                .into());
        }
    }
    let password = passphrase(&key_path.display().to_string(), true)?;
    let (key, public) = slipway_oci::keys::generate(password.as_bytes()).map_err(crate::imagecmd::oci_error)?;
    let fingerprint =
        PublicKey::from_pem(public.as_bytes(), "the new key").map_err(crate::imagecmd::oci_error)?.fingerprint();
    write_private(&key_path, key.as_bytes())?;
    std::fs::write(&pub_path, public)?;
    if json {
        println!("{}", serde_json::json!({"key": key_path, "pub": pub_path, "fingerprint": fingerprint}));
    } else {
        println!("{} {} (private, 0600) and {}", ui.paint("32", "wrote"), key_path.display(), pub_path.display());
        println!("  fingerprint {fingerprint}");
        println!(
            "{}",
            ui.paint(
                "2",
                "keep the .key secret (on a server: `slipway secret set SIGNING_KEY < slipway.key`); hand out the .pub"
            )
        );
    }
    Ok(exit::OK)
}

/// Writes a private key readable by its owner only, replacing any file atomically.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = sig_path(path).with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
