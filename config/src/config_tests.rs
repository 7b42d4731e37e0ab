use super::*;
use crate::key_backends::KeyBackendKind;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

#[test]
fn the_file_init_writes_parses_to_the_documented_defaults() {
    let text = default_toml(&td(), KeyAlgorithm::EcP256, "file", "file");
    let c = Config::parse(&text, "/d".into(), &env(&[])).unwrap();
    assert_eq!(c.trust_domain.as_str(), "example.org");
    assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9190");
    assert_eq!(c.ca.svid_default_ttl, time::Duration::hours(1));
    assert_eq!(c.ca.intermediate_ttl, time::Duration::days(7));
    assert_eq!(c.ca.key_backends.root, KeyBackendKind::File);
    assert_eq!(c.ca.key_backends.signing, KeyBackendKind::File);
    assert_eq!(c.ca_dir(), PathBuf::from("/d/ca"));
    assert_eq!(c.audit.url, "sqlite:///d/audit.db");
    assert_eq!(c.audit.on_full, esm_audit::writer::OnFull::Block);
    assert_eq!(c.audit.checkpoint_every, 10_000);
    assert_eq!(c.audit.writer_nice, 10);
}

#[test]
fn audit_numbers_and_urls_come_from_file_or_environment() {
    let text = default_toml(&td(), KeyAlgorithm::EcP256, "file", "file");
    let c = Config::parse(
        &text,
        "/d".into(),
        &env(&[
            ("ESM_AUDIT_QUEUE_CAPACITY", "128"),
            ("ESM_AUDIT_URL", "postgres://u@127.0.0.1/test"),
            ("ESM_AUDIT_QUEUE_FULL", "drop"),
            ("ESM_AUDIT_WRITER_NICE", "0"),
        ]),
    )
    .unwrap();
    assert_eq!(c.audit.writer_nice, 0);
    assert_eq!(c.audit.queue_capacity, 128);
    assert_eq!(c.audit.url, "postgres://u@127.0.0.1/test");
    assert_eq!(c.audit.on_full, esm_audit::writer::OnFull::Drop);
    for (var, value) in [
        ("ESM_AUDIT_QUEUE_CAPACITY", "lots"),
        ("ESM_AUDIT_URL", "mysql://x"),
        ("ESM_AUDIT_QUEUE_FULL", "sometimes"),
        ("ESM_AUDIT_CHECKPOINT_EVERY", "0"),
        ("ESM_AUDIT_WRITER_NICE", "20"),
        ("ESM_AUDIT_WRITER_NICE", "-5"),
    ] {
        let err = Config::parse(&text, "/d".into(), &env(&[(var, value)])).unwrap_err();
        let err = err.chain();
        assert!(err.contains("audit"), "{var}: {err}");
    }
}

#[test]
fn environment_overrides_any_key() {
    let text = default_toml(&td(), KeyAlgorithm::EcP256, "file", "file");
    let c = Config::parse(
        &text,
        "/d".into(),
        &env(&[
            ("ESM_CA_SVID_MAX_TTL", "12h"),
            ("ESM_ADMIN_LISTEN", "127.0.0.1:9999"),
            ("ESM_TRUST_DOMAIN", "other.org"),
            ("ESM_CA_KEY_PASSPHRASE", "not a key"),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(c.ca.svid_max_ttl, time::Duration::hours(12));
    assert_eq!(c.admin_listen.port(), 9999);
    assert_eq!(c.trust_domain.as_str(), "other.org");
}

#[test]
fn bad_values_name_the_key() {
    let base = default_toml(&td(), KeyAlgorithm::EcP256, "file", "file");
    for (var, value, needle) in [
        ("ESM_CA_SVID_MAX_TTL", "soon", "ca.svid_max_ttl"),
        ("ESM_CA_KEY_ALGORITHM", "dsa", "ca.key_algorithm"),
        ("ESM_ADMIN_LISTEN", "nowhere", "admin.listen"),
        ("ESM_TRUST_DOMAIN", "Bad.Org", "trust_domain"),
        ("ESM_CA_KEY_BACKEND", "floppy", "ca.key_backend"),
        ("ESM_CA_SVID_DEFAULT_TTL", "48h", "svid_default_ttl"),
        ("ESM_CA_TYPO", "x", "typo"),
    ] {
        let err = Config::parse(&base, "/d".into(), &env(&[(var, value)])).unwrap_err();
        let err = err.chain();
        assert!(err.contains(needle), "{var}: {err}");
    }
}

#[test]
fn unknown_keys_and_broken_toml_are_refused() {
    assert!(Config::parse("trust_domain = \"a\"\nbogus = 1", "/d".into(), &env(&[])).is_err());
    assert!(Config::parse("trust_domain = ", "/d".into(), &env(&[])).is_err());
    assert!(Config::parse("", "/d".into(), &env(&[])).is_err());
    assert!(Config::parse("trust_domain = \"a\"", "/d".into(), &env(&[])).is_ok());
}

#[test]
fn durations_take_the_documented_forms() {
    assert_eq!(duration("x", "90s").unwrap(), time::Duration::seconds(90));
    assert_eq!(duration("x", "7d").unwrap(), time::Duration::days(7));
    assert!(duration("x", "0s").is_err());
    assert!(duration("x", "-1h").is_err());
}

#[test]
fn authz_policy_sets_each_carry_their_own_dry_run_and_source() {
    let text = default_toml(&td(), KeyAlgorithm::EcP256, "file", "file")
        + "\n[authz.sets.canary]\npolicy_dir = \"next.tar.gz\"\ndry_run = true\n";
    let c = Config::parse(
        &text,
        "/d".into(),
        &env(&[("ESM_AUTHZ_LISTEN_UNIX", "authz.sock")]),
    )
    .unwrap();
    let sets = &c.authz.sets;
    assert_eq!(sets.len(), 2);
    assert_eq!((sets[0].name.as_str(), sets[0].dry_run), ("default", false));
    assert_eq!((sets[1].name.as_str(), sets[1].dry_run), ("canary", true));
    assert!(matches!(
        &sets[1].source,
        esm_authz::source::PolicySource::Bundle { keys: None, .. }
    ));
    assert_eq!(c.authz.listen_unix, Some(PathBuf::from("/d/authz.sock")));
}

#[test]
fn authz_set_mistakes_are_refused() {
    let base = default_toml(&td(), KeyAlgorithm::EcP256, "file", "file");
    for (extra, want) in [
        ("[authz.sets.x]\ncolour = 1\n", "colour"),
        ("[authz.sets.x]\nrule = \"allow\"\n", "authz.sets.x.rule"),
        ("[authz.sets.x]\nbundle_key = \"k.pem\"\n", "k.pem"),
        ("[authz.sets.default]\n", "reserved"),
    ] {
        let e = Config::parse(&format!("{base}\n{extra}"), "/d".into(), &env(&[]))
            .unwrap_err()
            .chain();
        assert!(e.contains(want), "{extra}: {e}");
    }
}

#[test]
fn the_pkcs11_pin_variable_is_not_read_as_a_config_key() {
    // Before: ESM_PKCS11_PIN became a top-level `pkcs11_pin` key and every command, even
    // with the file backend, failed with "unknown field".
    let text = default_toml(&td(), KeyAlgorithm::EcP256, "file", "file");
    let c = Config::parse(&text, "/d".into(), &env(&[("ESM_PKCS11_PIN", "1234")])).unwrap();
    assert_eq!(c.ca.key_backends.root, KeyBackendKind::File);
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("1234"),
        "the PIN must not end up in the config"
    );
}

#[test]
fn init_with_pkcs11_writes_a_config_that_names_module_and_token() {
    let text = default_toml(&td(), KeyAlgorithm::EcP256, "pkcs11", "file")
        + &crate::key_backends::pkcs11_toml(
            std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so"),
            "esm-ca",
            None,
        );
    let c = Config::parse(&text, "/d".into(), &env(&[])).unwrap();
    assert_eq!(c.ca.key_backends.root, KeyBackendKind::Pkcs11);
    let p = c.ca.key_backends.pkcs11.unwrap();
    assert_eq!(p.token_label, "esm-ca");
    let signing_file = text.replace(
        "signing_key_backend = \"\"",
        "signing_key_backend = \"file\"",
    );
    let c = Config::parse(&signing_file, "/d".into(), &env(&[])).unwrap();
    assert_eq!(c.ca.key_backends.signing, KeyBackendKind::File);
}

#[test]
fn body_parsing_options_come_from_the_authz_section_and_a_bad_descriptor_names_its_key() {
    let base = default_toml(&td(), KeyAlgorithm::EcP256, "file", "file");
    let c = Config::parse(
        &base,
        "/d".into(),
        &env(&[("ESM_AUTHZ_SKIP_REQUEST_BODY_PARSE", "true")]),
    )
    .unwrap();
    assert!(c.authz.input.skip_request_body_parse);
    assert_eq!(c.authz.input.proto_descriptor, None);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.pb"), b"not a descriptor set").unwrap();
    for (file, want) in [
        ("missing.pb", "missing.pb"),
        ("api.pb", "FileDescriptorSet"),
    ] {
        let e = Config::parse(
            &base,
            dir.path().into(),
            &env(&[("ESM_AUTHZ_PROTO_DESCRIPTOR", file)]),
        )
        .unwrap_err()
        .chain();
        assert!(
            e.contains("authz.proto_descriptor") && e.contains(want),
            "{file}: {e}"
        );
    }
}

#[test]
fn log_format_is_text_by_default_and_json_when_asked() {
    let text = default_toml(&td(), KeyAlgorithm::EcP256, "file", "file");
    let c = Config::parse(&text, "/d".into(), &env(&[])).unwrap();
    assert_eq!(c.telemetry.log_format, crate::telemetry::LogFormat::Text);
    let json = text.replace("log_format = \"text\"", "log_format = \"json\"");
    let c = Config::parse(&json, "/d".into(), &env(&[])).unwrap();
    assert_eq!(c.telemetry.log_format, crate::telemetry::LogFormat::Json);
    let by_env = Config::parse(
        &text,
        "/d".into(),
        &env(&[("ESM_TELEMETRY_LOG_FORMAT", "json")]),
    )
    .unwrap();
    assert_eq!(
        by_env.telemetry.log_format,
        crate::telemetry::LogFormat::Json
    );
}

#[test]
fn rejects_an_unknown_log_format_or_telemetry_key() {
    let text = default_toml(&td(), KeyAlgorithm::EcP256, "file", "file");
    for (from, to) in [
        ("log_format = \"text\"", "log_format = \"JSON\""),
        ("log_format = \"text\"", "log_format = \"\""),
        ("log_format = \"text\"", "log_format = \"xml\\u0000\""),
        ("log_format = \"text\"", "log_format = 1"),
        ("log_format = \"text\"", "log_fromat = \"json\""),
    ] {
        let bad = text.replace(from, to);
        let e = Config::parse(&bad, "/d".into(), &env(&[])).unwrap_err();
        let e = e.chain();
        assert!(e.contains("log_f"), "{to}: {e}");
    }
    let long = text.replace(
        "log_format = \"text\"",
        &format!("log_format = \"{}\"", "j".repeat(100_000)),
    );
    assert!(Config::parse(&long, "/d".into(), &env(&[])).is_err());
}

#[test]
fn otlp_export_is_off_by_default_and_takes_a_plain_http_endpoint() {
    let text = default_toml(&td(), KeyAlgorithm::EcP256, "file", "file");
    let c = Config::parse(&text, "/d".into(), &env(&[])).unwrap();
    assert_eq!(c.telemetry.otlp_endpoint, None);
    for (given, want) in [
        ("http://127.0.0.1:4317", "http://127.0.0.1:4317"),
        (
            "http://collector.local:4317/",
            "http://collector.local:4317",
        ),
        ("http://[::1]:4317", "http://[::1]:4317"),
    ] {
        let on = text.replace(
            "otlp_endpoint = \"\"",
            &format!("otlp_endpoint = {given:?}"),
        );
        let c = Config::parse(&on, "/d".into(), &env(&[])).unwrap();
        assert_eq!(c.telemetry.otlp_endpoint.as_deref(), Some(want));
    }
}

#[test]
fn rejects_an_otlp_endpoint_that_is_not_http_host_port() {
    let text = default_toml(&td(), KeyAlgorithm::EcP256, "file", "file");
    for bad in [
        "https://collector:4317",
        "127.0.0.1:4317",
        "http://127.0.0.1",
        "http://:4317",
        "http://127.0.0.1:0",
        "http://127.0.0.1:99999",
        "http://user@host:4317",
        "http://host:4317/v1/traces",
        "grpc://host:4317",
    ] {
        let on = text.replace("otlp_endpoint = \"\"", &format!("otlp_endpoint = {bad:?}"));
        let e = Config::parse(&on, "/d".into(), &env(&[])).unwrap_err();
        assert!(
            format!("{e:#}").contains("telemetry.otlp_endpoint"),
            "{bad}: {e:#}"
        );
    }
}

#[test]
fn a_bundle_server_set_serves_its_persisted_copy() {
    let text = default_toml(&td(), KeyAlgorithm::EcP256, "file", "file")
        + "\n[authz.sets.plant]\nbundle_url = \"https://bundles.example/p.tar.gz\"\n\
           bundle_poll_min = \"5s\"\nbundle_poll_max = \"10s\"\n";
    let c = Config::parse(&text, "/d".into(), &env(&[])).unwrap();
    let set = &c.authz.sets[1];
    let remote = set.remote.as_ref().unwrap();
    assert_eq!(remote.persisted, PathBuf::from("/d/bundles/plant.tar.gz"));
    assert_eq!(set.source.path(), remote.persisted);
    assert_eq!(remote.poll_min, std::time::Duration::from_secs(5));
    assert_eq!(remote.poll_max, std::time::Duration::from_secs(10));
    assert!(c.authz.sets[0].remote.is_none());
}

#[test]
fn bundle_server_mistakes_are_refused_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.pem"), "no certificates here\n").unwrap();
    std::fs::write(dir.path().join("token"), "\n").unwrap();
    let base = default_toml(&td(), KeyAlgorithm::EcP256, "file", "file");
    for (extra, want) in [
        (
            "bundle_url = \"ftp://h/b.tar.gz\"",
            "authz.sets.x.bundle_url",
        ),
        ("bundle_url = \"https://\"", "authz.sets.x.bundle_url"),
        ("bundle_url = \"http://h/b.tar.gz\"", "bundle_key"),
        (
            "bundle_url = \"https://h/b\"\nbundle_poll_min = \"2m\"\nbundle_poll_max = \"1m\"",
            "authz.sets.x.bundle_poll_max",
        ),
        (
            "bundle_url = \"https://h/b\"\nbundle_ca = \"empty.pem\"",
            "authz.sets.x.bundle_ca",
        ),
        (
            "bundle_url = \"https://h/b\"\nbundle_token = \"token\"",
            "authz.sets.x.bundle_token",
        ),
        (
            "bundle_url = \"https://h/b\"\nbundle_token = \"missing\"",
            "missing",
        ),
    ] {
        let text = format!("{base}\n[authz.sets.x]\n{extra}\n");
        let e = Config::parse(&text, dir.path().into(), &env(&[]))
            .unwrap_err()
            .chain();
        assert!(e.contains(want), "{extra}: {e}");
    }
    let text = format!("{base}\n[authz.sets.\"../up\"]\nbundle_url = \"https://h/b\"\n");
    let e = Config::parse(&text, dir.path().into(), &env(&[]))
        .unwrap_err()
        .chain();
    assert!(e.contains("needs a name of letters"), "{e}");
}
