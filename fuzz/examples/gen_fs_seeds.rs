//! Writes the seeds of the `fs_tree` target to `fuzz/seeds/fs_tree/` (run from `fuzz/`:
//! `cargo run --example gen_fs_seeds`), from small filesystems made by the real tools:
//! mke2fs (ext2, ext4 with a tree of files, inline data), sfdisk (MBR and GPT in front of an
//! ext4), mkntfs. Each image is stored as its non-zero sectors (`cowd_fuzz::fs_tree::encode`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small tree: files (one inline-sized), a directory, a symlink, a hard link.
fn tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("d/e")).unwrap();
    std::fs::write(src.join("tiny"), b"hi").unwrap();
    std::fs::write(src.join("d/file"), vec![7u8; 5000]).unwrap();
    std::fs::write(src.join("d/e/more"), b"more data\n").unwrap();
    std::os::unix::fs::symlink("d/file", src.join("link")).unwrap();
    std::fs::hard_link(src.join("tiny"), src.join("hard")).unwrap();
    src
}

fn image(path: &Path, size: u64) {
    let _ = std::fs::remove_file(path);
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

fn main() {
    let work = std::env::temp_dir().join(format!("gen_fs_seeds.{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let src = tree(&work);
    let img = work.join("fs.img");
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();

    image(&img, 256 << 10);
    run("mke2fs", &["-q", "-F", "-t", "ext2", "-b", "1024", "-d", s(&src), s(&img)]);
    seeds.push(("ext2", std::fs::read(&img).unwrap()));

    image(&img, 512 << 10);
    let features = "-O inline_data,metadata_csum,64bit";
    run(
        "mke2fs",
        &["-q", "-F", "-t", "ext4", "-b", "1024", "-N", "64", "-J", "size=1"]
            .into_iter()
            .chain(features.split(' '))
            .chain(["-d", s(&src), s(&img)])
            .collect::<Vec<_>>(),
    );
    let ext4 = std::fs::read(&img).unwrap();
    seeds.push(("ext4", ext4.clone()));

    for (name, label) in [("mbr-ext4", "dos"), ("gpt-ext4", "gpt")] {
        let disk = work.join(format!("{name}.img"));
        image(&disk, 1 << 20);
        let script = work.join("sfdisk.txt");
        std::fs::write(&script, format!("label: {label}\nstart=128, size=1024\n")).unwrap();
        let out = Command::new("sfdisk")
            .arg("-q")
            .arg(&disk)
            .stdin(std::fs::File::open(&script).unwrap())
            .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
            .output()
            .unwrap();
        assert!(out.status.success(), "sfdisk: {}", String::from_utf8_lossy(&out.stderr));
        let mut bytes = std::fs::read(&disk).unwrap();
        bytes[128 * 512..128 * 512 + ext4.len()].copy_from_slice(&ext4);
        seeds.push((name, bytes));
    }

    image(&img, 2 << 20);
    run("mkntfs", &["-q", "-F", "-f", "-s", "512", "-c", "512", s(&img)]);
    seeds.push(("ntfs", std::fs::read(&img).unwrap()));

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/fs_tree");
    std::fs::create_dir_all(&root).unwrap();
    for (name, bytes) in seeds {
        let encoded = cowd_fuzz::fs_tree::encode(&bytes);
        // The seed must describe the same device.
        let dev = cowd_fuzz::fs_tree::device(&encoded);
        let mut back = vec![0u8; bytes.len()];
        cowd::device::BlockDevice::read_at(dev.as_ref(), &mut back, 0).unwrap();
        assert!(back == bytes, "{name}: the encoding does not round-trip");
        let opened = cowd::fs::open::open_tree(dev, None)
            .map(|o| o.tree.filesystem())
            .map_err(|e| e.to_string());
        println!("fs_tree/{name}: opens as {opened:?}");
        std::fs::write(root.join(name), &encoded).unwrap();
        println!("fs_tree/{name}: {} bytes", encoded.len());
    }
    std::fs::remove_dir_all(&work).unwrap();
}
