//! See `aerobridge_proto::fuzzing::tls_session`. The certificate is made once per process.
#![no_main]

use std::sync::{Arc, OnceLock};

type Configs = (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>);

fn configs() -> &'static Configs {
    static CONFIGS: OnceLock<Configs> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        aerobridge_proto::fuzzing::tls_configs(
            Arc::new(rustls::crypto::ring::default_provider()),
            cert.cert.der().to_vec(),
            cert.signing_key.serialize_der(),
        )
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (server, client) = configs();
    aerobridge_proto::fuzzing::tls_session(data, Arc::clone(server), Arc::clone(client))
});
