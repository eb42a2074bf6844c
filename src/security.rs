//! Who may speak to a replica: mutual TLS (rustls over the std sockets) with
//! certificates from one cluster CA, and the certificates themselves (rcgen).
//!
//! Identities are DNS names in the certificates' subject alternative names:
//! replica `i` holds `replica-i.paxos-kv` (and `replica.paxos-kv`, which any
//! replica answers to), a client holds `client.paxos-kv`. A replica accepts a
//! connection only with a certificate that chains to the cluster CA, and a
//! replica hello only if that certificate names the replica id the hello
//! claims; so a client certificate can never speak as a replica. Clients and
//! links check the server's certificate the same way. `--insecure` keeps
//! plain TCP, for teaching and for measuring what TLS costs.

use crate::paxos::NodeId;
use anyhow::{anyhow, bail, ensure, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConnection, RootCertStore, ServerConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const CLIENT_CERT: &str = "client.pem";
pub const CLIENT_KEY: &str = "client.key";
/// The name every replica's certificate carries, for tools that talk to "any replica".
pub const ANY_REPLICA: &str = "replica.paxos-kv";
const CLIENT_NAME: &str = "client.paxos-kv";

pub fn replica_name(id: NodeId) -> String {
    format!("replica-{id}.paxos-kv")
}

pub fn replica_cert_file(id: NodeId) -> String {
    format!("replica-{id}.pem")
}

pub fn replica_key_file(id: NodeId) -> String {
    format!("replica-{id}.key")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.permissions().mode();
        ensure!(mode & 0o077 == 0, "{} is readable by others (mode {:o}); chmod 600 it", path.display(), mode & 0o777);
    }
    PrivateKeyDer::from_pem_file(path).with_context(|| format!("reading the private key {}", path.display()))
}

/// Every CA in `ca.pem` (several during a rotation).
fn roots(dir: &Path) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(&dir.join(CA_CERT))? {
        roots.add(cert).context("adding the cluster CA")?;
    }
    Ok(Arc::new(roots))
}

fn client_config(
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ClientConfig>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("using the certificate as a client certificate")?;
    Ok(Arc::new(config))
}

/// How a client (the stub, tools, tests) connects to replicas.
#[derive(Clone, Default)]
pub enum ClientSecurity {
    /// Plain TCP (`--insecure`).
    #[default]
    Insecure,
    Tls(Arc<rustls::ClientConfig>),
}

impl std::fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientSecurity::Insecure => "Insecure",
            ClientSecurity::Tls(_) => "Tls",
        })
    }
}

impl ClientSecurity {
    /// The client certificate in `dir` (`ca.pem`, `client.pem`, `client.key`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config = client_config(roots(dir)?, load_certs(&dir.join(CLIENT_CERT))?, load_key(&dir.join(CLIENT_KEY))?)?;
        Ok(ClientSecurity::Tls(config))
    }

    /// Connects and completes the handshake with the replica that must answer to `server_name`.
    pub fn wrap(&self, tcp: TcpStream, server_name: &str) -> io::Result<Stream> {
        match self {
            ClientSecurity::Insecure => Ok(Stream::Plain(tcp)),
            ClientSecurity::Tls(config) => {
                let name = ServerName::try_from(server_name.to_string()).map_err(io::Error::other)?;
                let connection = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
                let mut stream = StreamOwned::new(connection, tcp);
                while stream.conn.is_handshaking() {
                    stream.conn.complete_io(&mut stream.sock)?;
                }
                Ok(Stream::Client(Box::new(stream)))
            }
        }
    }
}

/// How a replica accepts connections and connects to its peers.
#[derive(Clone)]
pub enum ServerSecurity {
    Insecure,
    Tls { accept: Arc<rustls::ServerConfig>, connect: ClientSecurity },
}

impl std::fmt::Debug for ServerSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerSecurity::Insecure => "Insecure",
            ServerSecurity::Tls { .. } => "Tls",
        })
    }
}

impl ServerSecurity {
    /// Replica `id`'s certificate in `dir` (`ca.pem`, `replica-<id>.pem`, `replica-<id>.key`).
    pub fn from_dir(dir: &Path, id: NodeId) -> Result<Self> {
        let roots = roots(dir)?;
        let chain = load_certs(&dir.join(replica_cert_file(id)))?;
        let key = load_key(&dir.join(replica_key_file(id)))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .context("building the client certificate verifier")?;
        let mut accept = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .context("using the replica certificate")?;
        // Links only write after the handshake: no tickets left unread in their sockets.
        accept.send_tls13_tickets = 0;
        let connect = ClientSecurity::Tls(client_config(roots, chain.clone(), key)?);
        let security = ServerSecurity::Tls { accept: Arc::new(accept), connect };
        security
            .check_names_replica(&chain[0], id)
            .with_context(|| format!("{} does not name replica {id}", dir.join(replica_cert_file(id)).display()))?;
        Ok(security)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, ServerSecurity::Tls { .. })
    }

    pub fn connect(&self) -> ClientSecurity {
        match self {
            ServerSecurity::Insecure => ClientSecurity::Insecure,
            ServerSecurity::Tls { connect, .. } => connect.clone(),
        }
    }

    /// Completes the server side of the handshake by `deadline`, however
    /// slowly the peer sends its bytes.
    pub fn accept(&self, tcp: TcpStream, deadline: Instant) -> io::Result<Stream> {
        match self {
            ServerSecurity::Insecure => Ok(Stream::Plain(tcp)),
            ServerSecurity::Tls { accept, .. } => {
                let connection = ServerConnection::new(accept.clone()).map_err(io::Error::other)?;
                let mut stream = StreamOwned::new(connection, tcp);
                // Driven one socket read at a time (rustls' complete_io would keep
                // reading while bytes trickle in), so the deadline is checked between reads.
                let (conn, sock) = (&mut stream.conn, &mut stream.sock);
                while conn.is_handshaking() {
                    while conn.wants_write() {
                        conn.write_tls(sock)?;
                    }
                    if !conn.is_handshaking() {
                        break;
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake too slow"));
                    }
                    sock.set_read_timeout(Some(left))?;
                    match conn.read_tls(sock) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(_) => {
                            if let Err(e) = conn.process_new_packets() {
                                // Tell the peer why (best effort), then give up.
                                let _ = conn.write_tls(sock);
                                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                            }
                        }
                        Err(e) if crate::wire::is_timeout(&e) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                while conn.wants_write() {
                    conn.write_tls(sock)?;
                }
                Ok(Stream::Server(Box::new(stream)))
            }
        }
    }

    fn check_names_replica(&self, cert: &CertificateDer<'_>, id: NodeId) -> Result<()> {
        let name = ServerName::try_from(replica_name(id)).map_err(|e| anyhow!("{e}"))?;
        let end_entity = webpki::EndEntityCert::try_from(cert).map_err(|e| anyhow!("unreadable certificate: {e}"))?;
        end_entity.verify_is_valid_for_subject_name(&name).map_err(|e| anyhow!("{e}"))
    }

    /// May the peer on `stream` speak as replica `id`? With TLS its (already
    /// verified) certificate must name that replica.
    pub fn may_speak_as_replica(&self, stream: &Stream, id: NodeId) -> Result<()> {
        match (self, stream) {
            (ServerSecurity::Insecure, _) => Ok(()),
            (ServerSecurity::Tls { .. }, Stream::Server(tls)) => {
                let Some(cert) = tls.conn.peer_certificates().and_then(|c| c.first()) else {
                    bail!("no client certificate")
                };
                self.check_names_replica(cert, id)
                    .map_err(|e| anyhow!("its certificate does not name replica {id}: {e}"))
            }
            _ => bail!("not a TLS connection"),
        }
    }
}

/// A connection, plain or TLS, read and written by one thread.
pub enum Stream {
    Plain(TcpStream),
    Server(Box<StreamOwned<ServerConnection, TcpStream>>),
    Client(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Server(tls) => &tls.sock,
            Stream::Client(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Server(s) => s.read(buf),
            Stream::Client(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Server(s) => s.write(buf),
            Stream::Client(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Server(s) => s.flush(),
            Stream::Client(s) => s.flush(),
        }
    }
}

/// What `certs` wrote.
pub struct Issued {
    pub files: Vec<String>,
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::fs::OpenOptions;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

fn ca_params() -> Result<rcgen::CertificateParams> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "paxos-kv cluster CA");
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// Creates (or completes) a certificate directory: the cluster CA (kept if
/// `ca.key` exists), a certificate for each of replicas `1..=replicas` and a
/// client certificate. `hosts` are extra DNS names or IP addresses put in every
/// replica certificate (for operators' tools; replicas check ids, not hosts).
/// Existing leaf certificates are replaced; private keys are written mode 0600.
pub fn issue(dir: &Path, replicas: NodeId, hosts: &[String]) -> Result<Issued> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();
    let ca_key_path = dir.join(CA_KEY);
    let ca_key = if ca_key_path.exists() {
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path)?).context("reading ca.key")?
    } else {
        let key = rcgen::KeyPair::generate()?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        files.push(CA_KEY.to_string());
        key
    };
    // Re-signing the same name with the same key: leaves verify against the
    // ca.pem already distributed.
    let ca = ca_params()?.self_signed(&ca_key)?;
    if !dir.join(CA_CERT).exists() {
        std::fs::write(dir.join(CA_CERT), ca.pem())?;
        files.push(CA_CERT.to_string());
    }
    let leaf = |names: Vec<String>, common_name: &str| -> Result<(String, String)> {
        let mut params = rcgen::CertificateParams::new(names)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    for id in 1..=replicas {
        let mut names = vec![replica_name(id), ANY_REPLICA.to_string()];
        names.extend(hosts.iter().cloned());
        let (cert, key) = leaf(names, &format!("paxos-kv replica {id}"))?;
        std::fs::write(dir.join(replica_cert_file(id)), cert)?;
        write_private(&dir.join(replica_key_file(id)), &key)?;
        files.extend([replica_cert_file(id), replica_key_file(id)]);
    }
    let (cert, key) = leaf(vec![CLIENT_NAME.to_string()], "paxos-kv client")?;
    std::fs::write(dir.join(CLIENT_CERT), cert)?;
    write_private(&dir.join(CLIENT_KEY), &key)?;
    files.extend([CLIENT_CERT.to_string(), CLIENT_KEY.to_string()]);
    Ok(Issued { files })
}
