//! A client connection, plaintext or TLS (`--tls`): the socket and, for TLS, a rustls client
//! whose records are read and written with compio's owned buffers. Everything above reads and
//! writes plaintext through [`Conn`].

use compio::buf::BufResult;
use compio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use rustls::pki_types::ServerName;
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::sync::Arc;

/// How a TLS read ended.
enum TlsRead {
    /// The stream goes on.
    More,
    /// EOF or close_notify.
    End,
}

/// The socket, and the TLS client when the run speaks TLS.
pub struct Conn {
    pub stream: TcpStream,
    tls: Option<RefCell<Tls>>,
}

struct Tls {
    conn: rustls::ClientConnection,
    /// Ciphertext read buffer (kept: a client reads every frame through it).
    cipher: Vec<u8>,
}

impl Conn {
    /// A plaintext connection.
    pub fn plain(stream: TcpStream) -> Conn {
        Conn { stream, tls: None }
    }

    /// Runs the TLS handshake on `stream` (SNI `localhost` for loopback addresses).
    pub async fn tls(
        stream: TcpStream,
        config: &Arc<rustls::ClientConfig>,
        host: &str,
    ) -> io::Result<Conn> {
        let name =
            ServerName::try_from(host.to_string()).map_err(|e| io::Error::other(e.to_string()))?;
        let mut conn =
            rustls::ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
        // Frames are drained after every read; no need for rustls' 64 KiB plaintext cap.
        conn.set_buffer_limit(None);
        let c = Conn {
            stream,
            tls: Some(RefCell::new(Tls {
                conn,
                cipher: Vec::with_capacity(32 * 1024),
            })),
        };
        loop {
            c.flush_tls().await?;
            let handshaking = c.tls.as_ref().expect("tls").borrow().conn.is_handshaking();
            if !handshaking {
                return Ok(c);
            }
            let mut early = Vec::new();
            if let TlsRead::End = c.read_tls(32 * 1024, &mut early).await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Connects to `addr` over `config` when given, plaintext otherwise.
    pub async fn wrap(
        stream: TcpStream,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> io::Result<Conn> {
        match tls {
            None => Ok(Conn::plain(stream)),
            Some(config) => Conn::tls(stream, config, "localhost").await,
        }
    }

    /// Writes all of `bytes` (sealed first on TLS).
    pub async fn write_all(&self, bytes: Vec<u8>) -> io::Result<()> {
        match &self.tls {
            None => {
                let mut s = &self.stream;
                s.write_all(bytes).await.0
            }
            Some(tls) => {
                tls.borrow_mut().conn.writer().write_all(&bytes)?;
                self.flush_tls().await
            }
        }
    }

    /// Appends what arrives to `buf` (plaintext). `Ok(0)` is the end of the stream. On TLS at
    /// most `max_cipher` bytes are read from the socket (slow readers stay slow).
    pub async fn append(&self, buf: Vec<u8>, max_cipher: usize) -> (io::Result<usize>, Vec<u8>) {
        if self.tls.is_none() {
            let mut s = &self.stream;
            let BufResult(res, buf) = s.append(buf).await;
            return (res, buf);
        }
        let mut buf = buf;
        loop {
            let before = buf.len();
            let read = match self.read_tls(max_cipher, &mut buf).await {
                Ok(read) => read,
                Err(e) => return (Err(e), buf),
            };
            // A KeyUpdate answer or an alert may be due.
            if let Err(e) = self.flush_tls().await {
                return (Err(e), buf);
            }
            match read {
                // The peer's close_notify, or EOF.
                TlsRead::End if buf.len() == before => return (Ok(0), buf),
                _ if buf.len() > before => return (Ok(buf.len() - before), buf),
                _ => {} // a partial record: read on
            }
        }
    }

    /// Reads up to `max` ciphertext bytes, hands them to rustls and appends the plaintext to
    /// `plain` record by record (rustls holds at most 16 KiB of it).
    async fn read_tls(&self, max: usize, plain: &mut Vec<u8>) -> io::Result<TlsRead> {
        let tls = self.tls.as_ref().expect("tls");
        let mut cipher = std::mem::take(&mut tls.borrow_mut().cipher);
        cipher.clear();
        if cipher.capacity() != max.max(1) {
            // A read fills the spare capacity: exactly `max` of it.
            cipher = Vec::with_capacity(max.max(1));
        }
        let mut s = &self.stream;
        let BufResult(res, cipher) = s.read(cipher).await;
        let n = res?;
        let mut t = tls.borrow_mut();
        let mut slice = &cipher[..n];
        let mut end = n == 0;
        loop {
            match t.conn.reader().read_to_end(plain) {
                Ok(_) => end = true, // close_notify
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if slice.is_empty() {
                break;
            }
            if t.conn.read_tls(&mut slice)? == 0 {
                // After the server's close_notify rustls takes nothing more.
                end = true;
                break;
            }
            t.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
        t.cipher = cipher;
        Ok(if end { TlsRead::End } else { TlsRead::More })
    }

    /// Sends whatever TLS records wait.
    async fn flush_tls(&self) -> io::Result<()> {
        let Some(tls) = &self.tls else {
            return Ok(());
        };
        loop {
            let mut out = Vec::new();
            {
                let mut t = tls.borrow_mut();
                while t.conn.wants_write() {
                    t.conn.write_tls(&mut out)?;
                }
            }
            if out.is_empty() {
                return Ok(());
            }
            let mut s = &self.stream;
            s.write_all(out).await.0?;
        }
    }
}
