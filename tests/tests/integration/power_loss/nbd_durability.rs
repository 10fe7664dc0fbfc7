//! NBD writes acknowledged before an acknowledged FLUSH, or written with FUA, survive a power
//! cut anywhere in a sequence of writes, FUA writes and flushes (the image on lazyfs).

use cowd_tests::power::PowerRig;

use super::*;

/// The requests, each write to its own range; `durable(acked)` says which must survive.
fn requests() -> Vec<NbdOp> {
    let w = |k: u64, len: u64| (k * MIB + 4 * KIB * k, pattern(500 + k, len as usize));
    let (a, b, c, d, e, f) = (
        w(1, 64 * KIB),
        w(2, 256 * KIB),
        w(3, 64 * KIB),
        w(4, 128 * KIB),
        w(5, 4 * KIB),
        w(6, 64 * KIB),
    );
    vec![
        NbdOp::write(a.0, &a.1),
        NbdOp::write(b.0, &b.1),
        NbdOp::Flush,
        NbdOp::fua(c.0, &c.1),
        NbdOp::write(d.0, &d.1),
        NbdOp::fua(e.0, &e.1),
        NbdOp::write(f.0, &f.1),
        NbdOp::Flush,
    ]
}

/// Indexes of the writes that must have survived when the first `acked` were acknowledged.
fn durable(ops: &[NbdOp], acked: usize) -> Vec<usize> {
    let last_flush = ops[..acked]
        .iter()
        .rposition(|o| matches!(o, NbdOp::Flush))
        .unwrap_or(0);
    (0..acked)
        .filter(|&i| match &ops[i] {
            NbdOp::Write { fua, .. } => *fua || i < last_flush,
            NbdOp::Flush => false,
        })
        .collect()
}

fn setup() -> (PowerRig, Vec<u8>) {
    let rig = PowerRig::new(SIZE);
    let v1 = content(1);
    write_image(&rig, &vec![0; SIZE as usize], &v1);
    (rig, v1)
}

#[test]
fn flushed_and_fua_writes_survive() {
    let ops = requests();
    let total = setup().0.count(|r| {
        assert_eq!(r.nbd(&ops), ops.len());
    });
    // Few operations: cut after each one.
    let points: Vec<u64> = (0..=total).collect();
    println!("NBD writes: {total} operations, cuts after {points:?}");
    for n in points {
        let (mut rig, _) = setup();
        rig.arm(Some(n));
        let acked = rig.nbd(&ops);
        rig.power_cycle();
        let image = std::fs::read(rig.image()).unwrap();
        for i in durable(&ops, acked) {
            let NbdOp::Write { offset, data, .. } = &ops[i] else {
                unreachable!()
            };
            let at = *offset as usize;
            assert!(
                image[at..at + data.len()] == data[..],
                "cut after {n} of {total} operations, {acked} requests acknowledged: \
                 write {i} is lost"
            );
        }
    }
}
