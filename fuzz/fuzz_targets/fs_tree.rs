//! `open_tree` and a walk of every file on any sparse device image (see
//! `cowd_fuzz::fuzz_fs_tree`): partition tables, the ext2/3/4 and NTFS readers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cowd_fuzz::fuzz_fs_tree(data));
