//! `cowctl verify --image PATH`: checks a raw image backup against the checksum cowd wrote
//! beside it (`PATH.sha256`, in sha256sum's format), here, without the daemon.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::Outcome;

fn checksum_path(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_owned();
    s.push(".sha256");
    s.into()
}

/// The hex digest of the first line of a sha256sum file (`<hex>  <name>`).
pub fn expected(text: &str) -> Option<String> {
    let hex = text.lines().next()?.split_whitespace().next()?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let mut hex = String::with_capacity(64);
    for b in h.finalize() {
        let _ = write!(hex, "{b:02x}");
    }
    Ok(hex)
}

/// Verifies `image`; the text to print and the outcome.
pub fn verify(image: &Path) -> (String, Outcome) {
    let sums = checksum_path(image);
    let shown = image.display();
    let text = match std::fs::read_to_string(&sums) {
        Ok(t) => t,
        Err(e) => {
            let why = format!(
                "{}: {e} (cowd writes it beside a complete image)",
                sums.display()
            );
            return (String::new(), Outcome::Failed(why));
        }
    };
    let Some(want) = expected(&text) else {
        let why = format!("{}: not a sha256sum line", sums.display());
        return (String::new(), Outcome::Failed(why));
    };
    match sha256_file(image) {
        Ok(got) if got == want => (format!("{shown}: OK (sha256 {got})\n"), Outcome::Success),
        Ok(got) => (
            format!("{shown}: FAILED\n  expected sha256 {want}\n  read     sha256 {got}\n"),
            Outcome::Failed(format!("{shown}: the image differs from its checksum")),
        ),
        Err(e) => (String::new(), Outcome::Failed(format!("{shown}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_checked_against_its_sha256sum_line() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("b.img");
        std::fs::write(&img, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        std::fs::write(checksum_path(&img), format!("{abc}  b.img\n")).unwrap();
        let (text, outcome) = verify(&img);
        assert_eq!(outcome, Outcome::Success, "{text}");
        assert!(text.ends_with(&format!("OK (sha256 {abc})\n")), "{text}");
        std::fs::write(&img, b"abd").unwrap();
        let (text, outcome) = verify(&img);
        assert!(matches!(outcome, Outcome::Failed(_)), "{text}");
        assert!(text.contains("FAILED"), "{text}");
        std::fs::remove_file(checksum_path(&img)).unwrap();
        assert!(matches!(verify(&img).1, Outcome::Failed(w) if w.contains("b.img.sha256")));
        assert_eq!(expected("nonsense  x"), None);
    }
}
