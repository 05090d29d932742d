use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{Options, Server, message_is};

fn tls_client(server: &Server) -> reqwest::Client {
    let pem = std::fs::read(server.data_dir.join("tls/cert.pem")).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn generated_certificate_verifies_and_negotiates_h2() {
    let server = Server::start(Options::default().https());
    let key = server.data_dir.join("tls/key.pem");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "the private key is readable by cairn only"
    );
    let response = tls_client(&server)
        .get(server.https_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.version(),
        reqwest::Version::HTTP_2,
        "ALPN picks h2"
    );

    // The logged fingerprint is the certificate's SHA-256.
    let pem = std::fs::read_to_string(server.data_dir.join("tls/cert.pem")).unwrap();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
        .unwrap();
    let expected = cairn::http::tls::fingerprint(&der);
    let logged = server
        .logs
        .wait_for(Duration::from_secs(1), |v| {
            message_is(v, "TLS certificate loaded")
        })
        .expect("fingerprint logged");
    assert_eq!(logged["sha256"], expected);

    // HTTP/1.1 over TLS works too.
    let h1 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let response = h1
        .get(server.https_url("/v2/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn certificate_is_kept_across_restarts_and_reload_failure_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(Options::default().https().data_dir(&data));
    let first = std::fs::read(data.join("tls/cert.pem")).unwrap();
    assert!(server.stop().success());
    let server = Server::start(Options::default().https().data_dir(&data));
    assert_eq!(
        std::fs::read(data.join("tls/cert.pem")).unwrap(),
        first,
        "not regenerated"
    );

    // A broken key on SIGHUP is reported and the old certificate stays in use.
    std::fs::write(data.join("tls/key.pem"), "not a key").unwrap();
    server.signal(Signal::SIGHUP);
    let failed = server.logs.wait_for(Duration::from_secs(5), |v| {
        message_is(v, "TLS reload failed; keeping the old certificate")
    });
    assert!(failed.is_some(), "{}", server.logs.text());
    let response = tls_client(&server)
        .get(server.https_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn configured_certificate_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let server = Server::start(
        Options::default()
            .https()
            .env("CAIRN_HTTPS_CERT", cert.to_str().unwrap())
            .env("CAIRN_HTTPS_KEY", key.to_str().unwrap()),
    );
    assert!(
        !server.data_dir.join("tls/cert.pem").exists(),
        "nothing generated"
    );
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(generated.cert.pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    assert_eq!(
        client
            .get(server.https_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
