//! Key slots: known answers computed by independent implementations (Python's `cryptography`
//! for Argon2id and AES-256-GCM, `b3sum --derive-key` for BLAKE3), wrong secrets, tampered and
//! moved slots, the last slot kept.

use super::*;
use std::fs;

const REPO: &str = "00112233445566778899aabbccddeeff";
const SLOT: &str = "0a0b0c0d";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn salt() -> String {
    B64.encode((0u8..32).collect::<Vec<_>>())
}

fn master() -> MasterKey {
    MasterKey::from_bytes(&(64u8..128).collect::<Vec<_>>().try_into().unwrap())
}

fn wrap_with_nonce(kdf: &Kdf, secret: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let kek = kdf.derive(secret).unwrap();
    let mut out = Vec::new();
    Sealer::new(&kek).seal_with_nonce(
        &(100u8..112).collect::<Vec<_>>().try_into().unwrap(),
        &aad(REPO, SLOT),
        master().bytes(),
        &mut out,
    );
    (kek.to_vec(), out)
}

#[test]
fn passphrase_wrapping_known_answer() {
    // Argon2id(v=19, m=256 KiB, t=2, p=2, salt 00..1f, 32 bytes) of the passphrase, then
    // AES-256-GCM with nonce 64..6f, as computed by Python's `cryptography` 48.
    let kdf = Kdf::Argon2id {
        version: 0x13,
        memory_kib: 256,
        iterations: 2,
        parallelism: 2,
        salt: salt(),
    };
    let (kek, wrapped) = wrap_with_nonce(&kdf, b"correct horse battery staple");
    assert_eq!(
        kek,
        unhex("6a713793e9bbb202788e117eb7d01c4c5bd1f04637b2fad90118019b5f3d405f")
    );
    assert_eq!(
        wrapped,
        unhex(
            "6465666768696a6b6c6d6e6f666529db89cdc79e4aa8b9bbb7cabd2939d25fa1c0b13d31707c7f6b3b\
             67c7ac002063f0f15c9c75bb8e3565e988a053983e2e8ed34225c57276a6c55b06e82741d8af7151f7\
             c7f762ab009531eeaabd"
        )
    );
}

#[test]
fn key_file_wrapping_known_answer() {
    // `b3sum --derive-key "cowd-repo 2026-12-05 key-file wrapping key"` of salt ‖ secret.
    let kdf = Kdf::Blake3 { salt: salt() };
    let (kek, wrapped) = wrap_with_nonce(&kdf, &[b'k'; 40]);
    assert_eq!(
        kek,
        unhex("f57deffba28e530ead50e388860b7233b2a13c70cb3d3e698333f682c2b08293")
    );
    assert_eq!(
        wrapped,
        unhex(
            "6465666768696a6b6c6d6e6f32ff464b411ea88f49eb49a6cc54b59c35945aed9bcf5f31fe0e19ff2a\
             c7852c762d94550b7ab0f69e6f132553b3f4af95543b54df92e18f10eab0f60e8970165d4911a2553b\
             1c4355afd2be2a41f27e"
        )
    );
}

const CHEAP: KdfCost = KdfCost {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

fn pass(p: &str) -> Secret {
    Secret::Passphrase(Zeroizing::new(p.as_bytes().to_vec()))
}

#[test]
fn slots_unlock_with_their_secret_only() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let key = MasterKey::generate();
    let a = add_slot(root, REPO, &key, &pass("first"), "root@a", CHEAP).unwrap();
    let file = Secret::KeyFile(Zeroizing::new(vec![7u8; 32]));
    let b = add_slot(root, REPO, &key, &file, "robot", CHEAP).unwrap();
    assert_eq!(slots(root).unwrap().len(), 2);

    let (k, used) = unwrap_key(root, REPO, &pass("first")).unwrap();
    assert_eq!((k.bytes(), used.as_str()), (key.bytes(), a.id.as_str()));
    let (k, used) = unwrap_key(root, REPO, &file).unwrap();
    assert_eq!((k.bytes(), used), (key.bytes(), b.id.clone()));

    let e = unwrap_key(root, REPO, &pass("First")).unwrap_err();
    assert!(matches!(e, RepoError::WrongKey(_)), "{e}");
    assert!(
        e.to_string()
            .contains("no key slot opens with this passphrase"),
        "{e}"
    );
    // A slot bound to another repository id does not open here.
    assert!(matches!(
        unwrap_key(root, "ffeeddccbbaa99887766554433221100", &pass("first")),
        Err(RepoError::WrongKey(_))
    ));
    for bad in [pass(""), Secret::KeyFile(Zeroizing::new(vec![1; 31]))] {
        let e = unwrap_key(root, REPO, &bad).unwrap_err().to_string();
        assert!(
            e.contains("empty") || e.contains("at least 32 bytes"),
            "{e}"
        );
    }

    // One changed byte of the wrapped key: refused, not misread.
    let path = keys_dir(root).join(format!("{}.json", a.id));
    let mut slot: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let mut w = B64.decode(slot["wrapped"].as_str().unwrap()).unwrap();
    w[30] ^= 0x80;
    slot["wrapped"] = B64.encode(&w).into();
    fs::write(&path, serde_json::to_vec(&slot).unwrap()).unwrap();
    assert!(matches!(
        unwrap_key(root, REPO, &pass("first")),
        Err(RepoError::WrongKey(_))
    ));
    // A slot file under another name is reported as damaged.
    fs::rename(&path, keys_dir(root).join("99999999.json")).unwrap();
    let e = slots(root).unwrap_err().to_string();
    assert!(e.contains("names itself"), "{e}");
}

#[test]
fn a_slot_asking_for_unbounded_memory_is_refused_before_any_allocation() {
    let kdf = Kdf::Argon2id {
        version: 0x13,
        memory_kib: u32::MAX,
        iterations: 3,
        parallelism: 4,
        salt: salt(),
    };
    let e = kdf.derive(b"pw").unwrap_err();
    assert!(e.contains("beyond"), "{e}");
    let d = tempfile::tempdir().unwrap();
    let key = MasterKey::generate();
    let e = add_slot(
        d.path(),
        REPO,
        &key,
        &pass("pw"),
        "",
        KdfCost {
            memory_kib: 2 << 20,
            ..CHEAP
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("beyond"), "{e}");
}

#[test]
fn the_last_slot_stays() {
    let d = tempfile::tempdir().unwrap();
    let key = MasterKey::generate();
    let a = add_slot(d.path(), REPO, &key, &pass("one"), "", CHEAP).unwrap();
    let b = add_slot(d.path(), REPO, &key, &pass("two"), "", CHEAP).unwrap();
    remove_slot(d.path(), &a.id).unwrap();
    let e = remove_slot(d.path(), &b.id).unwrap_err().to_string();
    assert!(e.contains("last"), "{e}");
    let e = remove_slot(d.path(), "nope").unwrap_err().to_string();
    assert!(e.contains("no key slot"), "{e}");
    assert!(unwrap_key(d.path(), REPO, &pass("one")).is_err());
    assert!(unwrap_key(d.path(), REPO, &pass("two")).is_ok());
}

#[test]
fn unlocked_keys_are_per_repository() {
    let k = MasterKey::generate();
    remember("test-unlocked-a", k.clone());
    assert_eq!(
        unlocked("test-unlocked-a").map(|x| *x.bytes()),
        Some(*k.bytes())
    );
    assert!(unlocked("test-unlocked-b").is_none());
    assert!(forget("test-unlocked-a"));
    assert!(!forget("test-unlocked-a"));
    assert!(unlocked("test-unlocked-a").is_none());
}
