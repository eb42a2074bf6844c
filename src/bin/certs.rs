//! Creates a cluster's certificates: a CA, one certificate per replica (its
//! identity names the replica id) and a client certificate.

use anyhow::Result;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Create (or complete) a paxos-kv certificate directory: ca.pem/ca.key, replica-<id>.pem/.key, \
             client.pem/.key. An existing ca.key is kept, so new certificates verify against the ca.pem \
             already distributed; leaf certificates are replaced. Private keys are written mode 0600."
)]
struct Args {
    /// Where to write the certificates.
    #[arg(long)]
    out: PathBuf,
    /// How many replicas (ids 1..=N) get a certificate.
    #[arg(long, default_value_t = 5)]
    replicas: u32,
    /// Extra host names or IP addresses to put in every replica certificate (repeatable).
    #[arg(long = "host")]
    hosts: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let issued = paxos_kv::security::issue(&args.out, args.replicas, &args.hosts)?;
    println!("wrote {} in {}", issued.files.join(", "), args.out.display());
    Ok(())
}
