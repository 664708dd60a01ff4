//! Chunk planning: cut data extents into op-sized pieces. Pure, so it is property-tested.

use std::collections::VecDeque;

/// Splits each `(offset, len)` extent into chunks of at most `chunk` bytes. With `align` > 1
/// (O_DIRECT), chunk boundaries stay on multiples of `align` relative to the file.
pub fn plan_chunks(extents: &[(u64, u64)], chunk: usize, align: usize) -> VecDeque<(u64, u64)> {
    let chunk = chunk.max(1) as u64;
    let align = align.max(1) as u64;
    let mut out = VecDeque::new();
    for &(off, len) in extents {
        let end = off + len;
        let mut pos = off;
        while pos < end {
            // First chunk of an unaligned extent ends on the next aligned boundary.
            let mut next = (pos + chunk).min(end);
            if align > 1 && next < end {
                next = (next / align * align).max(pos + align.min(end - pos));
            }
            out.push_back((pos, next - pos));
            pos = next;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn chunks_cover_extents_exactly(
            ext in proptest::collection::vec((0u64..1<<20, 0u64..1<<20), 0..8),
            chunk in 1usize..300_000,
            align_pow in 0u32..13,
        ) {
            // Make extents disjoint and ordered.
            let mut pos = 0u64;
            let mut extents = Vec::new();
            for (gap, len) in ext {
                pos += gap;
                extents.push((pos, len));
                pos += len;
            }
            let align = 1usize << align_pow;
            let chunks = plan_chunks(&extents, chunk, align);
            let total: u64 = extents.iter().map(|e| e.1).sum();
            prop_assert_eq!(chunks.iter().map(|c| c.1).sum::<u64>(), total);
            let mut it = chunks.iter();
            for &(off, len) in &extents {
                let mut p = off;
                while p < off + len {
                    let c = it.next().unwrap();
                    prop_assert_eq!(c.0, p);
                    prop_assert!(c.1 > 0);
                    prop_assert!(c.1 <= (chunk as u64).max(align as u64));
                    p += c.1;
                }
                prop_assert_eq!(p, off + len);
            }
            prop_assert!(it.next().is_none());
        }
    }

    #[test]
    fn aligned_chunks_stay_aligned() {
        let c = plan_chunks(&[(0, 10_000)], 4096, 4096);
        assert_eq!(Vec::from(c), vec![(0, 4096), (4096, 4096), (8192, 1808)]);
    }
}
