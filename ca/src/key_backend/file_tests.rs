use super::*;

#[test]
fn generated_key_file_is_owner_only_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileKeyStore::new(dir.path(), None);
    let k = store.generate("root-1", KeyAlgorithm::EcP256).unwrap();
    let path = dir.path().join("root-1.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("BEGIN PRIVATE KEY"));
    let again = store.load("root-1", KeyAlgorithm::EcP256).unwrap();
    assert_eq!(k.public_key_raw(), again.public_key_raw());
}

#[test]
fn never_overwrites_an_existing_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileKeyStore::new(dir.path(), None);
    store.generate("k", KeyAlgorithm::EcP256).unwrap();
    assert!(store.generate("k", KeyAlgorithm::EcP256).is_err());
}

#[test]
fn encrypted_key_needs_the_right_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileKeyStore::new(dir.path(), Passphrase::new("correct horse"));
    let k = store.generate("k", KeyAlgorithm::EcP384).unwrap();
    let text = std::fs::read_to_string(dir.path().join("k.pem")).unwrap();
    assert!(text.contains("BEGIN ENCRYPTED PRIVATE KEY"));

    let reloaded = store.load("k", KeyAlgorithm::EcP384).unwrap();
    assert_eq!(k.public_key_raw(), reloaded.public_key_raw());

    let wrong = FileKeyStore::new(dir.path(), Passphrase::new("battery staple"));
    let err = wrong.load("k", KeyAlgorithm::EcP384).err().unwrap();
    assert!(err.to_string().contains("wrong passphrase"), "{err}");

    let none = FileKeyStore::new(dir.path(), None);
    let err = none.load("k", KeyAlgorithm::EcP384).err().unwrap();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[test]
fn signatures_verify_with_ring() {
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1};
    for (alg, verify) in [
        (KeyAlgorithm::EcP256, &ECDSA_P256_SHA256_ASN1),
        (KeyAlgorithm::EcP384, &ECDSA_P384_SHA384_ASN1),
    ] {
        let der = generate_pkcs8(alg).unwrap();
        let k = FileKey::from_pkcs8("k", alg, &der).unwrap();
        let sig = k.sign(b"hello").unwrap();
        UnparsedPublicKey::new(verify, k.public_key_raw())
            .verify(b"hello", &sig)
            .unwrap();
    }
}

#[test]
fn loading_a_key_as_the_wrong_algorithm_fails() {
    let der = generate_pkcs8(KeyAlgorithm::EcP256).unwrap();
    assert!(FileKey::from_pkcs8("k", KeyAlgorithm::EcP384, &der).is_err());
    assert_eq!(
        FileKey::detect("k", &der).unwrap().algorithm(),
        KeyAlgorithm::EcP256
    );
    assert!(FileKey::detect("k", b"not a key").is_err());
}

#[test]
fn garbage_key_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k.pem"), "hello").unwrap();
    let store = FileKeyStore::new(dir.path(), None);
    let err = store.load("k", KeyAlgorithm::EcP256).err().unwrap();
    assert!(err.to_string().contains("not a PEM private key"), "{err}");
}

#[test]
fn refuses_key_ids_that_escape_the_directory() {
    let store = FileKeyStore::new("/tmp", None);
    assert!(store.generate("../x", KeyAlgorithm::EcP256).is_err());
    assert!(store.generate("", KeyAlgorithm::EcP256).is_err());
}

#[test]
fn passphrase_debug_hides_the_secret() {
    let p = Passphrase::new("s3cret").unwrap();
    assert!(!format!("{p:?}").contains("s3cret"));
    assert!(Passphrase::new("").is_none());
}
