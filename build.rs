//! Build script: rebuild when a migration is added to sql/, which `refinery::embed_migrations!`
//! reads at compile time but cargo does not track.

fn main() {
    println!("cargo:rerun-if-changed=sql");
}
