//! Signing keys in cosign's format, so that cosign, skopeo and slipway read each other's keys:
//! the private key a PKCS#8 document encrypted as go-securesystemslib does (scrypt N=32768,
//! r=8, p=1 from the passphrase, then NaCl secretbox), as JSON in an `ENCRYPTED SIGSTORE
//! PRIVATE KEY` PEM block; the public key a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
//! Signing is ECDSA P-256 with SHA-256 (cosign's default; P-384 and Ed25519 keys sign too);
//! verifying also takes RSA (PKCS#1 v1.5, SHA-256) keys, as cosign's imported keys are.
//! Signatures are ASN.1 DER for ECDSA — what `cosign sign-blob` writes, base64-encoded.

use base64::Engine as _;
use ring::rand::SecureRandom as _;
use ring::signature::KeyPair as _;

use crate::OciError;

/// What cosign 2 writes; cosign 1 wrote `ENCRYPTED COSIGN PRIVATE KEY` (read too).
pub const PRIVATE_PEM: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
const PRIVATE_PEM_V1: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// go-securesystemslib's defaults, which cosign uses: 2^15 × 8 × 1 (32 MiB, a fraction of a
/// second).
const SCRYPT_LOG_N: u8 = 15;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;

const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ED25519: &str = "1.3.101.112";
const OID_RSA: &str = "1.2.840.113549.1.1.1";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// An algorithm's name for messages, from its object identifier.
fn algorithm_name(oid: &str, curve: Option<&str>) -> String {
    match (oid, curve) {
        (OID_EC, Some(OID_P256)) => "ECDSA P-256".into(),
        (OID_EC, Some(OID_P384)) => "ECDSA P-384".into(),
        (OID_EC, Some(c)) => format!("ECDSA on curve {c}"),
        (OID_EC, None) => "ECDSA".into(),
        (OID_ED25519, _) => "Ed25519".into(),
        (OID_RSA, _) => "RSA".into(),
        ("1.2.840.10040.4.1", _) => "DSA".into(),
        ("1.3.101.110", _) => "X25519".into(),
        ("1.3.101.113", _) => "Ed448".into(),
        (o, _) => format!("the algorithm {o}"),
    }
}

/// A key that signs.
pub struct SigningKey {
    kind: SigningKind,
    /// The public half, as SubjectPublicKeyInfo DER.
    public_der: Vec<u8>,
}

enum SigningKind {
    Ecdsa(ring::signature::EcdsaKeyPair),
    Ed25519(ring::signature::Ed25519KeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("public", &self.public().algorithm).finish_non_exhaustive()
    }
}

/// A key that verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// `ECDSA P-256`, `Ed25519`, `RSA`…
    pub algorithm: String,
    verify: Verify,
    /// The point or key bytes ring takes (the SubjectPublicKeyInfo's bit string).
    key: Vec<u8>,
    /// SubjectPublicKeyInfo DER.
    der: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    P256,
    P384,
    Ed25519,
    Rsa,
}

fn pem_decode(pem: &[u8], what: &str) -> Result<(String, Vec<u8>), OciError> {
    let text = std::str::from_utf8(pem).map_err(|_| OciError::Input(format!("{what}: not a PEM file (not text)")))?;
    // The first PEM block, whatever precedes it (comments, other text).
    let start = text.find("-----BEGIN ").ok_or_else(|| {
        OciError::Input(format!("{what}: no PEM block in it (a key file starts with -----BEGIN …-----)"))
    })?;
    pem_rfc7468::decode_vec(text[start..].trim_end().as_bytes())
        .map(|(label, der)| (label.to_string(), der))
        .map_err(|e| OciError::Input(format!("{what}: a malformed PEM block: {e}")))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der).unwrap_or_default()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Encrypted {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

fn derive(password: &[u8], salt: &[u8], n: u64, r: u32, p: u32) -> Result<[u8; 32], OciError> {
    if !n.is_power_of_two() || !(2..=1 << 22).contains(&n) || r == 0 || r > 64 || p == 0 || p > 16 {
        return Err(OciError::Input(format!("the key's scrypt parameters N={n} r={r} p={p} are out of range")));
    }
    let params = scrypt::Params::new(n.trailing_zeros() as u8, r, p, 32)
        .map_err(|e| OciError::Input(format!("the key's scrypt parameters: {e}")))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut key).map_err(|e| OciError::Input(format!("scrypt: {e}")))?;
    Ok(key)
}

fn random<const N: usize>() -> Result<[u8; N], OciError> {
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| OciError::Io("the system's random source failed".into()))?;
    Ok(out)
}

/// A new ECDSA P-256 key pair: (`.key` PEM encrypted with `password`, `.pub` PEM).
pub fn generate(password: &[u8]) -> Result<(String, String), OciError> {
    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng)
        .map_err(|_| OciError::Io("generating the key failed".into()))?;
    let key = SigningKey::from_pkcs8(pkcs8.as_ref())?;
    Ok((encrypt(pkcs8.as_ref(), password)?, key.public().to_pem()))
}

/// PKCS#8 DER → the `ENCRYPTED SIGSTORE PRIVATE KEY` PEM, as cosign writes it.
pub fn encrypt(pkcs8: &[u8], password: &[u8]) -> Result<String, OciError> {
    use crypto_secretbox::aead::{Aead as _, KeyInit as _};
    let salt: [u8; 32] = random()?;
    let nonce: [u8; 24] = random()?;
    let key = derive(password, &salt, 1 << SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)?;
    let sealed = crypto_secretbox::XSalsa20Poly1305::new(&key.into())
        .encrypt(&nonce.into(), pkcs8)
        .map_err(|_| OciError::Io("encrypting the key failed".into()))?;
    let doc = Encrypted {
        kdf: Kdf {
            name: "scrypt".into(),
            params: ScryptParams { n: 1 << SCRYPT_LOG_N, r: SCRYPT_R, p: SCRYPT_P },
            salt: b64().encode(salt),
        },
        cipher: Cipher { name: "nacl/secretbox".into(), nonce: b64().encode(nonce) },
        ciphertext: b64().encode(sealed),
    };
    let json = serde_json::to_vec(&doc).map_err(|e| OciError::Io(e.to_string()))?;
    Ok(pem_encode(PRIVATE_PEM, &json))
}

impl SigningKey {
    /// Reads a cosign private key (`what` names it in messages) with its passphrase.
    pub fn from_pem(pem: &[u8], password: &[u8], what: &str) -> Result<SigningKey, OciError> {
        use crypto_secretbox::aead::{Aead as _, KeyInit as _};
        let (label, body) = pem_decode(pem, what)?;
        if label == "PUBLIC KEY" {
            return Err(OciError::Hinted {
                message: format!("{what} is a public key; signing needs the private key"),
                hint: "give the .key file that `slipway sign generate-key` wrote beside the .pub".into(),
            });
        }
        if label != PRIVATE_PEM && label != PRIVATE_PEM_V1 {
            return Err(OciError::Hinted {
                message: format!("{what} holds a PEM `{label}`, not a cosign private key (`{PRIVATE_PEM}`)"),
                hint: "generate one with `slipway sign generate-key` (or `cosign generate-key-pair`; `cosign import-key-pair` converts other PEM keys)".into(),
            });
        }
        let doc: Encrypted = serde_json::from_slice(&body)
            .map_err(|e| OciError::Input(format!("{what}: the encrypted key is not the JSON cosign writes: {e}")))?;
        if doc.kdf.name != "scrypt" || doc.cipher.name != "nacl/secretbox" {
            return Err(OciError::Input(format!(
                "{what}: encrypted with {} and {}; slipway reads scrypt and nacl/secretbox (cosign's)",
                doc.kdf.name, doc.cipher.name
            )));
        }
        let field = |name: &str, v: &str| {
            b64().decode(v).map_err(|e| OciError::Input(format!("{what}: the key's {name} is not base64: {e}")))
        };
        let salt = field("salt", &doc.kdf.salt)?;
        let nonce = field("nonce", &doc.cipher.nonce)?;
        let sealed = field("ciphertext", &doc.ciphertext)?;
        let nonce: [u8; 24] =
            nonce.try_into().map_err(|_| OciError::Input(format!("{what}: the nonce is not 24 bytes")))?;
        let key = derive(password, &salt, doc.kdf.params.n, doc.kdf.params.r, doc.kdf.params.p)?;
        let pkcs8 = crypto_secretbox::XSalsa20Poly1305::new(&key.into())
            .decrypt(&nonce.into(), sealed.as_slice())
            .map_err(|_| OciError::Hinted {
                message: format!("wrong passphrase for {what}: the key does not decrypt with it"),
                hint: "give the passphrase the key was generated with, in SLIPWAY_SIGNING_PASSWORD (or at the prompt)"
                    .into(),
            })?;
        SigningKey::from_pkcs8(&pkcs8).map_err(|e| OciError::Input(format!("{what}: {e}")))
    }

    /// A PKCS#8 private key (unencrypted DER).
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, OciError> {
        use pkcs8::der::Decode as _;
        let info = pkcs8::PrivateKeyInfo::from_der(der)
            .map_err(|e| OciError::Input(format!("the private key is not PKCS#8: {e}")))?;
        let oid = info.algorithm.oid.to_string();
        let curve = info.algorithm.parameters_oid().ok().map(|o| o.to_string());
        let rng = ring::rand::SystemRandom::new();
        let rejected = |e: ring::error::KeyRejected| OciError::Input(format!("the private key is not usable: {e}"));
        let kind = match (oid.as_str(), curve.as_deref()) {
            (OID_EC, Some(OID_P256)) => SigningKind::Ecdsa(
                ring::signature::EcdsaKeyPair::from_pkcs8(&ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
                    .map_err(rejected)?,
            ),
            (OID_EC, Some(OID_P384)) => SigningKind::Ecdsa(
                ring::signature::EcdsaKeyPair::from_pkcs8(&ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING, der, &rng)
                    .map_err(rejected)?,
            ),
            (OID_ED25519, _) => SigningKind::Ed25519(
                ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(rejected)?,
            ),
            (o, c) => {
                return Err(OciError::Input(format!(
                    "{} keys do not sign here: slipway signs with ECDSA P-256 (cosign's default), P-384 or Ed25519 keys",
                    algorithm_name(o, c)
                )));
            }
        };
        let public_der = match &kind {
            SigningKind::Ecdsa(k) => spki_der(OID_EC, curve.as_deref(), k.public_key().as_ref()),
            SigningKind::Ed25519(k) => spki_der(OID_ED25519, None, k.public_key().as_ref()),
        }?;
        Ok(SigningKey { kind, public_der })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::from_der(&self.public_der).expect("our own public key parses")
    }

    /// Signs `message` (ECDSA over its SHA-256/384, DER; Ed25519 raw).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, OciError> {
        match &self.kind {
            SigningKind::Ecdsa(k) => k
                .sign(&ring::rand::SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| OciError::Io("signing failed".into())),
            SigningKind::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
        }
    }
}

/// SubjectPublicKeyInfo DER for a key ring gave us.
fn spki_der(oid: &str, curve: Option<&str>, key: &[u8]) -> Result<Vec<u8>, OciError> {
    use pkcs8::der::Encode as _;
    use pkcs8::der::asn1::{BitStringRef, ObjectIdentifier};
    let bad = |e: pkcs8::der::Error| OciError::Io(format!("encoding the public key: {e}"));
    let oid = ObjectIdentifier::new(oid).map_err(|e| OciError::Io(e.to_string()))?;
    let curve = curve.map(ObjectIdentifier::new).transpose().map_err(|e| OciError::Io(e.to_string()))?;
    let algorithm = pkcs8::spki::AlgorithmIdentifier { oid, parameters: curve };
    let info = pkcs8::spki::SubjectPublicKeyInfo {
        algorithm,
        subject_public_key: BitStringRef::from_bytes(key).map_err(bad)?,
    };
    info.to_der().map_err(bad)
}

impl PublicKey {
    /// Reads a PEM public key (`what` names it in messages).
    pub fn from_pem(pem: &[u8], what: &str) -> Result<PublicKey, OciError> {
        let (label, der) = pem_decode(pem, what)?;
        if label.contains("PRIVATE KEY") {
            return Err(OciError::Hinted {
                message: format!("{what} is a private key; verifying takes the public key"),
                hint: "give the .pub file beside it (never hand out the .key)".into(),
            });
        }
        if label != "PUBLIC KEY" {
            return Err(OciError::Input(format!("{what} holds a PEM `{label}`, not a `PUBLIC KEY`")));
        }
        PublicKey::from_der(&der).map_err(|e| OciError::Input(format!("{what}: {e}")))
    }

    pub fn from_der(der: &[u8]) -> Result<PublicKey, OciError> {
        use pkcs8::der::Decode as _;
        let info = pkcs8::spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| OciError::Input(format!("not a SubjectPublicKeyInfo: {e}")))?;
        let oid = info.algorithm.oid.to_string();
        let curve = info.algorithm.parameters_oid().ok().map(|o| o.to_string());
        let algorithm = algorithm_name(&oid, curve.as_deref());
        let verify = match (oid.as_str(), curve.as_deref()) {
            (OID_EC, Some(OID_P256)) => Verify::P256,
            (OID_EC, Some(OID_P384)) => Verify::P384,
            (OID_ED25519, _) => Verify::Ed25519,
            (OID_RSA, _) => Verify::Rsa,
            _ => {
                return Err(OciError::Input(format!(
                    "a public key of {algorithm}: slipway verifies ECDSA P-256/P-384, Ed25519 and RSA signatures"
                )));
            }
        };
        let key = info
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| OciError::Input("the public key's bit string is not whole bytes".into()))?
            .to_vec();
        Ok(PublicKey { algorithm, verify, key, der: der.to_vec() })
    }

    pub fn to_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &self.der)
    }

    /// `sha256:<hex>` of the SubjectPublicKeyInfo DER: names the key in records and messages.
    pub fn fingerprint(&self) -> String {
        crate::build::sha256(&self.der)
    }

    /// Whether `signature` is this key's over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature as s;
        let alg: &dyn s::VerificationAlgorithm = match self.verify {
            Verify::P256 => &s::ECDSA_P256_SHA256_ASN1,
            Verify::P384 => &s::ECDSA_P384_SHA384_ASN1,
            Verify::Ed25519 => &s::ED25519,
            Verify::Rsa => &s::RSA_PKCS1_2048_8192_SHA256,
        };
        s::UnparsedPublicKey::new(alg, &self.key).verify(message, signature).is_ok()
    }
}

/// A detached signature file's text, as `cosign sign-blob` writes it: base64, no newline.
pub fn encode_signature(signature: &[u8]) -> String {
    b64().encode(signature)
}

/// The bytes of a base64 signature (whitespace around it ignored).
pub fn decode_signature(text: &str, what: &str) -> Result<Vec<u8>, OciError> {
    b64().decode(text.trim()).map_err(|e| OciError::Input(format!("{what} is not a base64 signature: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_verify_and_only_open_with_their_passphrase() {
        let (key, public) = generate(b"secret").unwrap();
        assert!(key.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"), "{key}");
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{public}");
        let k = SigningKey::from_pem(key.as_bytes(), b"secret", "k.key").unwrap();
        let p = PublicKey::from_pem(public.as_bytes(), "k.pub").unwrap();
        assert_eq!(p.algorithm, "ECDSA P-256");
        assert_eq!(k.public(), p);
        let sig = k.sign(b"payload").unwrap();
        assert!(p.verifies(b"payload", &sig));
        assert!(!p.verifies(b"payloae", &sig));
        let e = SigningKey::from_pem(key.as_bytes(), b"wrong", "k.key").unwrap_err();
        assert!(
            matches!(&e, OciError::Hinted { message, .. } if message.contains("wrong passphrase for k.key")),
            "{e:?}"
        );
        let e = SigningKey::from_pem(public.as_bytes(), b"secret", "k.pub").unwrap_err();
        assert!(matches!(&e, OciError::Hinted { message, .. } if message.contains("is a public key")), "{e:?}");
        let e = PublicKey::from_pem(key.as_bytes(), "k.key").unwrap_err();
        assert!(matches!(&e, OciError::Hinted { message, .. } if message.contains("is a private key")), "{e:?}");
    }

    #[test]
    fn other_algorithms_are_named() {
        // An X25519 public key (RFC 8410's example).
        let pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VuAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        let e = PublicKey::from_pem(pem.as_bytes(), "x.pub").unwrap_err().to_string();
        assert!(e.contains("x.pub: a public key of X25519"), "{e}");
        let e = PublicKey::from_pem(b"hello", "y.pub").unwrap_err().to_string();
        assert!(e.contains("y.pub: no PEM block"), "{e}");
    }
}
