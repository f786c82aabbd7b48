//! Certificates generated at test time with rcgen (never checked in): a CA, server
//! certificates for 127.0.0.1 and localhost, client certificates (valid, expired, issued by
//! another CA) and CRLs, written as PEM files into a temporary directory; and rustls client
//! configurations that trust them.

use std::{path::PathBuf, sync::Arc};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, RootCertStore,
};
use tempfile::TempDir;

/// A client certificate and its key, as files and as rustls values.
pub struct ClientIdentity {
    /// PEM certificate file.
    pub cert_file: PathBuf,
    /// PEM key file.
    pub key_file: PathBuf,
    /// Serial number, for CRLs.
    pub serial: u64,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl ClientIdentity {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }
}

/// How a client certificate is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// Signed by the test CA, valid now.
    Valid,
    /// Signed by the test CA, expired in 2001.
    Expired,
    /// Signed by a CA the broker does not trust.
    OtherCa,
}

/// A test PKI in a temporary directory.
pub struct TestPki {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    other_ca: CertifiedIssuer<'static, KeyPair>,
    next_serial: u64,
    /// DER of the server certificate last written.
    pub server_der: CertificateDer<'static>,
    /// PKCS#8 DER of its key.
    server_key_der: Vec<u8>,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

impl TestPki {
    /// Creates the CAs and writes `ca.pem`, `server.pem` and `server.key`.
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("create a PKI directory");
        let ca = new_ca("Starling Test CA");
        let other_ca = new_ca("Untrusted Test CA");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca.pem");
        let mut pki = TestPki {
            dir,
            ca,
            other_ca,
            next_serial: 1000,
            server_der: CertificateDer::from(Vec::new()),
            server_key_der: Vec::new(),
        };
        pki.write_server_certificate("starling-test-server");
        pki
    }

    /// Returns the path of a file in the PKI directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    /// Writes a new server certificate (for 127.0.0.1 and localhost, named `common_name`)
    /// and its key to `server.pem` and `server.key`, each replaced atomically.
    pub fn write_server_certificate(&mut self, common_name: &str) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(SerialNumber::from(self.serial()));
        let key = KeyPair::generate().expect("server key");
        let certificate = params
            .signed_by(&key, &self.ca)
            .expect("server certificate");
        self.server_der = certificate.der().clone();
        self.server_key_der = key.serialize_der();
        self.replace_file("server.key", &key.serialize_pem());
        self.replace_file("server.pem", &certificate.pem());
    }

    /// Returns a rustls server configuration (ring) serving the current server certificate,
    /// for test servers other than the broker (an HTTPS auth hook, say).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![self.server_der.clone()],
            PrivateKeyDer::Pkcs8(self.server_key_der.clone().into()),
        )
        .expect("server certificate and key");
        Arc::new(config)
    }

    /// Replaces a file of the PKI directory atomically (write, then rename).
    pub fn replace_file(&self, name: &str, contents: &str) {
        let temporary = self.path(&format!(".{name}.tmp"));
        std::fs::write(&temporary, contents).expect("write a PKI file");
        std::fs::rename(&temporary, self.path(name)).expect("rename a PKI file");
    }

    /// Creates a client certificate named `common_name` (also its DNS subject alternative
    /// name `<common_name>.clients.test`) and writes `<common_name>.pem` and `.key`.
    pub fn client(&mut self, common_name: &str, kind: ClientKind) -> ClientIdentity {
        let mut params = CertificateParams::new(vec![format!("{common_name}.clients.test")])
            .expect("client params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let serial = self.serial();
        params.serial_number = Some(SerialNumber::from(serial));
        if kind == ClientKind::Expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().expect("client key");
        let issuer = match kind {
            ClientKind::OtherCa => &self.other_ca,
            ClientKind::Valid | ClientKind::Expired => &self.ca,
        };
        let certificate = params.signed_by(&key, issuer).expect("client certificate");
        let cert_file = self.path(&format!("{common_name}.pem"));
        let key_file = self.path(&format!("{common_name}.key"));
        std::fs::write(&cert_file, certificate.pem()).expect("write a client certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write a client key");
        ClientIdentity {
            cert_file,
            key_file,
            serial,
            der: certificate.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// Writes `crl.pem`, a CRL of the test CA revoking `serials`.
    pub fn write_crl(&self, serials: &[u64]) {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2090, 1, 1),
            crl_number: SerialNumber::from(serials.len() as u64 + 1),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: rcgen::date_time_ymd(2020, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.ca).expect("sign the CRL");
        self.replace_file("crl.pem", &crl.pem().expect("CRL as PEM"));
    }

    /// Returns a rustls client configuration (ring) trusting the test CA, presenting
    /// `client` if given.
    pub fn client_config(&self, client: Option<&ClientIdentity>) -> Arc<ClientConfig> {
        self.client_config_with_versions(client, rustls::DEFAULT_VERSIONS)
    }

    /// Like [`TestPki::client_config`], limited to `versions`.
    pub fn client_config_with_versions(
        &self,
        client: Option<&ClientIdentity>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("trust the test CA");
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .expect("protocol versions")
                .with_root_certificates(roots);
        let config = match client {
            Some(client) => builder
                .with_client_auth_cert(vec![client.der.clone()], client.key())
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }
}

/// The name the broker's test certificate is valid for.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from("127.0.0.1").expect("an IP address is a server name")
}

/// Returns the TOML of a TLS listener named `name` on port 0 using the PKI's files; `extra`
/// holds more keys (e.g. `client_ca_file`).
pub fn tls_listener_toml(pki: &TestPki, name: &str, protocol: &str, extra: &str) -> String {
    format!(
        "[listeners.{name}]\nprotocol = \"{protocol}\"\nbind = \"127.0.0.1:0\"\ncert_file = {:?}\nkey_file = {:?}\n{extra}\n",
        pki.path("server.pem").display().to_string(),
        pki.path("server.key").display().to_string(),
    )
}

/// The keys of a listener requiring client certificates of the test CA (and the CRL, if
/// `crl`).
pub fn mutual_tls_toml(pki: &TestPki, crl: bool) -> String {
    let mut toml = format!(
        "client_ca_file = {:?}\nclient_auth = \"required\"\n",
        pki.path("ca.pem").display().to_string()
    );
    if crl {
        toml.push_str(&format!(
            "crl_file = {:?}\n",
            pki.path("crl.pem").display().to_string()
        ));
    }
    toml
}
