//! HTTPS on the node's listener, with a test CA, fed by an ffmpeg publisher over RTMPS: curl negotiates HTTP/2 by ALPN (and speaks
//! HTTP/1.1 when asked), ffprobe and `steadycast verify` play the channel over HTTPS trusting
//! only that CA, and a renewed certificate written over the files is served to new
//! connections while an open one goes on. The node's pipelines deliver to its packager over
//! HTTPS too, trusting the same CA (`trust_ca`).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A CA, and a certificate for 127.0.0.1 it signs, written as PEM into `dir`.
struct TestCa {
    params: CertificateParams,
    key: KeyPair,
}

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Names apart from the server's: OpenSSL takes a certificate whose issuer is its own
        // subject for a self-signed one.
        params
            .distinguished_name
            .push(DnType::CommonName, "steadycast test CA");
        Self {
            params,
            key: KeyPair::generate().unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.params.clone().self_signed(&self.key).unwrap().pem()
    }

    /// Writes a new server certificate and key over `dir/cert.pem` and `dir/key.pem`;
    /// returns the certificate's DER.
    fn issue(&self, dir: &Path) -> Vec<u8> {
        let ca = self.params.clone().self_signed(&self.key).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "steadycast test node");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca, &self.key).unwrap();
        // The key first: a reload that sees the new certificate then finds its key.
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        cert.der().to_vec()
    }
}

/// The certificate a new TLS connection to `addr` is given, trusting `ca_pem` only.
async fn served_certificate(addr: std::net::SocketAddr, ca_pem: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
    roots.add(ca).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let stream = connector.connect(name, socket).await.unwrap();
    let (_, session) = stream.get_ref();
    session.peer_certificates().unwrap()[0].to_vec()
}

async fn curl(args: &[&str]) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_http2_plays_and_renews_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let ca_file = dir.path().join("ca.pem");
    let ca_pem = ca.pem();
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let first = ca.issue(dir.path());
    let rtmps = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let server = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}\ntrust_ca = \"{}\"\nrtmps_listen = \"{rtmps}\"\n\
         admin_token = \"{ADMIN_TOKEN}\"",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display(),
        ca_file.display()
    );
    let input = "[channels.inputs.main]\ntype = \"rtmp\"\nstream_key = \"secure-key\"";
    let channel = light_channel_with("secure", "15", input);
    let node = TestNode::spawn(dir.path(), &server, &channel);
    // The contribution comes over RTMPS, checked against the same CA.
    let url = format!("rtmps://{rtmps}/live/secure-key");
    let ca_arg = ca_file.to_str().unwrap();
    let extra = ["-tls_verify", "1", "-ca_file", ca_arg];
    let _publisher = wait_for("the RTMPS listener", Duration::from_secs(20), || async {
        std::net::TcpStream::connect(rtmps).ok()?;
        Some(publish_source(
            "flv",
            &url,
            true,
            "testsrc2=size=160x90:rate=15",
            &extra,
        ))
    })
    .await;
    let base = format!("https://127.0.0.1:{}", node.http.port());
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .https_only(true)
        .build()
        .unwrap();
    let playlist = format!("{base}/live/secure/90p.m3u8");
    wait_for("segments over HTTPS", Duration::from_secs(60), || async {
        let response = client.get(&playlist).send().await.ok()?;
        let body = response.text().await.ok()?;
        (body.matches(".m4s").count() >= 2).then_some(())
    })
    .await;

    // ALPN: HTTP/2 unless the client asks for HTTP/1.1; the CA alone is trusted.
    let healthz = format!("{base}/healthz");
    let version = [
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        "--cacert",
        ca_arg,
    ];
    assert_eq!(
        curl(&[&version[..], &[healthz.as_str()]].concat()).await,
        "2"
    );
    let http1 = [&version[..], &["--http1.1", healthz.as_str()]].concat();
    assert_eq!(curl(&http1).await, "1.1");
    let untrusted = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", &healthz])
        .output()
        .await
        .unwrap();
    assert!(
        !untrusted.status.success(),
        "a certificate of an unknown CA was trusted"
    );

    // Players over HTTPS, trusting the test CA.
    let main = format!("{base}/live/secure/main.m3u8");
    let probe = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-tls_verify", "1", "-ca_file", ca_arg])
        .args([
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            &main,
        ])
        .output()
        .await
        .unwrap();
    let codecs = String::from_utf8_lossy(&probe.stdout);
    assert!(
        codecs.contains("h264") && codecs.contains("aac"),
        "ffprobe over HTTPS: {codecs}\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let (ok, report, stderr) = verify(&main, &["--seconds", "6", "--ca-file", ca_arg]).await;
    assert!(ok, "{report:#}\n{stderr}");

    // A renewal written over the files reaches new connections; an open one goes on.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], node.http.port()));
    assert_eq!(served_certificate(addr, &ca_pem).await, first);
    let renewed = ca.issue(dir.path());
    assert_ne!(renewed, first);
    wait_for(
        "the renewed certificate",
        Duration::from_secs(20),
        || async { (served_certificate(addr, &ca_pem).await == renewed).then_some(()) },
    )
    .await;
    let again = client.get(&healthz).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert!(node.log().contains("TLS certificate reloaded"));
}
