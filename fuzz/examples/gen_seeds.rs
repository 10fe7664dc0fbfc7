//! Writes the seed corpus to `fuzz/seeds/<target>/<name>` (run from `fuzz/`:
//! `cargo run --example gen_seeds`). Files it does not generate, such as regression inputs
//! kept from crashes, are left alone.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (target, name, bytes) in cowd_fuzz::seeds() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), &bytes)?;
        println!("{target}/{name}: {} bytes", bytes.len());
    }
    Ok(())
}
