//! Creates a cluster's certificates: a CA, one certificate per replica (its
//! identity names the replica id) and a client certificate.

use anyhow::Result;
use clap::Parser;
use paxos_kv::args::CertsArgs;

fn main() -> Result<()> {
    let args = CertsArgs::parse();
    let issued = paxos_kv::security::issue(&args.out, args.replicas, &args.hosts)?;
    println!("wrote {} in {}", issued.files.join(", "), args.out.display());
    Ok(())
}
