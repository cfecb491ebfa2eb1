//! Certificates made for one test by rcgen, written as PEM files to a directory of their own: a CA,
//! a server certificate it signed for 127.0.0.1, a client certificate it signed, and a second CA
//! that signed nothing, to stand for the wrong one.

use std::fs;
use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// The PEM files of one test; removed when dropped.
pub struct TestCerts {
    dir: TempDir,
}

impl TestCerts {
    /// Generates every certificate and key and writes them.
    pub fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cohort-certs-")
            .tempdir()
            .expect("a temporary directory for certificates");
        let ca = certificate_authority("Cohort test CA");
        let other_ca = certificate_authority("Some other CA");
        let (server_cert, server_key) = leaf(
            &ca,
            "127.0.0.1",
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            &ca,
            "cohort-instance",
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let files = [
            ("ca.pem", ca.pem()),
            ("other-ca.pem", other_ca.pem()),
            ("server.pem", server_cert),
            ("server-key.pem", server_key),
            ("client.pem", client_cert),
            ("client-key.pem", client_key),
        ];
        for (name, pem) in files {
            fs::write(dir.path().join(name), pem).expect("the PEM file is written");
        }
        TestCerts { dir }
    }

    /// The CA that signed the server's and the client's certificates.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }
    /// A CA that signed neither.
    pub fn other_ca(&self) -> PathBuf {
        self.path("other-ca.pem")
    }
    /// The server's certificate, for 127.0.0.1 and localhost.
    pub fn server_cert(&self) -> PathBuf {
        self.path("server.pem")
    }
    /// The server's private key.
    pub fn server_key(&self) -> PathBuf {
        self.path("server-key.pem")
    }
    /// A client certificate for mutual TLS.
    pub fn client_cert(&self) -> PathBuf {
        self.path("client.pem")
    }
    /// The client certificate's private key.
    pub fn client_key(&self) -> PathBuf {
        self.path("client-key.pem")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("a CA key");
    CertifiedIssuer::self_signed(params, key).expect("a self-signed CA")
}

/// A certificate `issuer` signed for `names`, and its key, as PEM.
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    common_name: &str,
    names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(names).expect("certificate parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("a key");
    let cert = params
        .signed_by(&key, issuer)
        .expect("a signed certificate");
    (cert.pem(), key.serialize_pem())
}
