//! TLS for client connections (rustls, with the `ring` provider): the
//! certificates come from PEM files (a wildcard `*.{domain}` and the API's
//! host, for example), are picked by the client's SNI, and are reloaded in
//! place ([`TlsAcceptor::reload`]: new handshakes use the new files, live
//! connections keep theirs). The handshake runs on the core like any other
//! I/O; a [`TlsStream`] then serves the relays as a [`Stream`] whose bytes
//! pass through user space (no splice: they are encrypted).

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};
use warren_runtime::{Socket, Stream};

/// One certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why certificates cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// No certificate was given.
    #[error("no TLS certificate configured")]
    NoCertificate,
    /// A file cannot be read or holds no usable PEM.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A loaded certificate and the names it covers.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    leaf: CertificateDer<'static>,
}

impl Loaded {
    fn covers(&self, name: &str) -> bool {
        let Ok(name) = ServerName::try_from(name) else {
            return false;
        };
        webpki::EndEntityCert::try_from(&self.leaf)
            .and_then(|cert| cert.verify_is_valid_for_subject_name(&name))
            .is_ok()
    }
}

/// Picks the first certificate that covers the client's SNI name (wildcards
/// included), else the first one.
#[derive(Debug)]
struct BySni(Vec<Loaded>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello
            .server_name()
            .and_then(|name| self.0.iter().find(|c| c.covers(name)))
            .or_else(|| self.0.first());
        chosen.map(|c| Arc::clone(&c.key))
    }
}

/// rustls on `ring`: it builds with a C compiler alone (aws-lc-rs needs
/// more tooling and much longer builds). `ring` offers no post-quantum key
/// exchange, which is why rustls marks its default provider deprecated.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &std::path::Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn load(files: &CertFiles, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_error(&files.cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(&files.cert, e))?;
    let leaf = chain
        .first()
        .cloned()
        .ok_or_else(|| file_error(&files.cert, "no certificate in the file"))?;
    let der = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| file_error(&files.key, e))?;
    Ok(Loaded {
        key: Arc::new(CertifiedKey::new(chain, signing)),
        leaf,
    })
}

fn server_config(files: &[CertFiles]) -> Result<Arc<ServerConfig>, TlsError> {
    if files.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let provider = provider();
    let loaded = files
        .iter()
        .map(|f| load(f, &provider))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni(loaded)));
    // Relays speak HTTP/1.1 to both sides.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TLS on client connections with certificates reloaded in place.
#[derive(Debug)]
pub struct TlsAcceptor {
    files: Vec<CertFiles>,
    config: ArcSwap<ServerConfig>,
}

impl TlsAcceptor {
    /// Loads `files`; fails when any is unusable.
    pub fn new(files: Vec<CertFiles>) -> Result<Self, TlsError> {
        let config = server_config(&files)?;
        Ok(Self {
            files,
            config: ArcSwap::new(config),
        })
    }

    /// The files it serves.
    pub fn files(&self) -> &[CertFiles] {
        &self.files
    }

    /// Reads the files again; on error the previous certificates stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.config.store(server_config(&self.files)?);
        Ok(())
    }

    /// Runs the server handshake on `socket` (bound by the caller's timeout).
    pub async fn accept(&self, socket: Socket) -> io::Result<TlsStream> {
        let conn = ServerConnection::new(self.config.load_full()).map_err(io::Error::other)?;
        let stream = TlsStream {
            socket,
            conn: RefCell::new(conn),
        };
        loop {
            stream.flush().await?;
            if !stream.conn.borrow().is_handshaking() {
                return Ok(stream);
            }
            match stream.read_records()? {
                Some(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Some(_) => {}
                None => stream.socket.readable().await?,
            }
        }
    }
}

/// Notices when certificate files change on disk (their modification time
/// or size), so an edge can reload them without a signal.
#[derive(Debug)]
pub struct CertWatch {
    files: Vec<PathBuf>,
    seen: Vec<Option<(std::time::SystemTime, u64)>>,
}

impl CertWatch {
    /// Watches every file of `certs`.
    pub fn new(certs: &[CertFiles]) -> Self {
        let files: Vec<PathBuf> = certs
            .iter()
            .flat_map(|c| [c.cert.clone(), c.key.clone()])
            .collect();
        let seen = files.iter().map(|f| Self::stamp(f)).collect();
        Self { files, seen }
    }

    fn stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    }

    /// True once after any file changed since the last call.
    pub fn changed(&mut self) -> bool {
        let now: Vec<_> = self.files.iter().map(|f| Self::stamp(f)).collect();
        let changed = now != self.seen;
        self.seen = now;
        changed
    }
}

/// The socket as `io::Read`/`io::Write` without blocking (`WouldBlock`
/// when the kernel has nothing or no room).
struct NonBlocking<'a>(&'a Socket);

impl Read for NonBlocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .try_recv(buf)?
            .ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }
}

impl Write for NonBlocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .try_send(buf)?
            .ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A client connection after its TLS handshake.
pub struct TlsStream {
    socket: Socket,
    conn: RefCell<ServerConnection>,
}

impl TlsStream {
    /// Reads TLS records waiting on the socket into the session: `None`
    /// when none are, `Some(0)` at end of stream.
    fn read_records(&self) -> io::Result<Option<usize>> {
        let mut conn = self.conn.borrow_mut();
        match conn.read_tls(&mut NonBlocking(&self.socket)) {
            Ok(0) => Ok(Some(0)),
            Ok(n) => {
                conn.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends every TLS record the session holds.
    async fn flush(&self) -> io::Result<()> {
        loop {
            let wrote = {
                let mut conn = self.conn.borrow_mut();
                if !conn.wants_write() {
                    return Ok(());
                }
                conn.write_tls(&mut NonBlocking(&self.socket))
            };
            match wrote {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.socket.writable().await?,
                Err(e) => return Err(e),
            }
        }
    }

    fn has_plaintext(&self) -> bool {
        self.conn
            .borrow_mut()
            .process_new_packets()
            .is_ok_and(|state| state.plaintext_bytes_to_read() > 0 || state.peer_has_closed())
    }
}

impl Stream for TlsStream {
    fn fd(&self) -> &Rc<OwnedFd> {
        self.socket.fd()
    }

    fn plain(&self) -> Option<&Socket> {
        None
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match self.conn.borrow_mut().reader().read(buf) {
                // Ok(0) is the peer's close_notify: end of stream.
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: end of stream all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Some(0)),
                Err(e) => return Err(e),
            }
            match self.read_records()? {
                None => return Ok(None),
                Some(0) => return Ok(Some(0)),
                Some(_) => {}
            }
        }
    }

    async fn readable(&self) -> io::Result<()> {
        if self.has_plaintext() {
            return Ok(());
        }
        self.socket.readable().await
    }

    async fn send_all(&self, mut buf: &[u8]) -> io::Result<()> {
        // The session buffers a bounded amount: hand it what it takes, send
        // that, repeat.
        while !buf.is_empty() {
            let n = self.conn.borrow_mut().writer().write(buf)?;
            buf = &buf[n..];
            self.flush().await?;
        }
        Ok(())
    }

    async fn shutdown_write(&self) {
        self.conn.borrow_mut().send_close_notify();
        let _ = self.flush().await;
        self.socket.shutdown_write();
    }
}
