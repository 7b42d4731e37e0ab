//! The structure of an HPACK header block (RFC 7541 §6), checked before the block reaches
//! the decoder: every integer and string ends inside the block, and dynamic table size
//! updates come only at the start of the block and stay within the size the server allows.
//!
//! The decoder (`fluke-hpack`) would take a size update of any size, letting a client grow
//! its table without bound, and panics on a size update whose integer is cut short; a
//! block that passes this check reaches neither case. Pure: no decoding, no allocation.

use super::h2_authority::Malformed;

/// Continuation octets an integer may have after its prefix: 4 carry up to 2^28, far over
/// any length or size a header block can hold, and no more than the decoder reads.
const MAX_CONTINUATION: usize = 4;

/// An HPACK integer with an `n`-bit prefix at the start of `b` (RFC 7541 §5.1):
/// `(value, octets used)`, or `None` when it does not end within `b` or the limit.
fn integer(b: &[u8], n: u32) -> Option<(usize, usize)> {
    let mask = (1usize << n) - 1;
    let first = usize::from(*b.first()?) & mask;
    if first < mask {
        return Some((first, 1));
    }
    let mut value = mask;
    for (i, &octet) in b.iter().skip(1).take(MAX_CONTINUATION).enumerate() {
        value += usize::from(octet & 0x7f) << (7 * i);
        if octet & 0x80 == 0 {
            return Some((value, i + 2));
        }
    }
    None
}

/// Octets used by the string literal at the start of `b` (RFC 7541 §5.2).
fn string(b: &[u8]) -> Option<usize> {
    let (len, used) = integer(b, 7)?;
    let end = used.checked_add(len)?;
    (end <= b.len()).then_some(end)
}

/// Octets used by a literal field whose name index has an `n`-bit prefix (§6.2): a name
/// index or a name string, then the value string.
fn literal(b: &[u8], n: u32) -> Option<usize> {
    let (index, mut used) = integer(b, n)?;
    if index == 0 {
        used += string(&b[used..])?;
    }
    Some(used + string(&b[used..])?)
}

/// Checks `block` as described in the module documentation; `max_table` is the largest
/// dynamic table size the client may set.
pub fn check_block(block: &[u8], max_table: usize) -> Result<(), Malformed> {
    let cut = || Malformed("HPACK: header block ends inside a field".into());
    let mut at = 0;
    let mut fields = false;
    while let Some(&first) = block.get(at) {
        let rest = &block[at..];
        at += if first & 0x80 != 0 {
            // Indexed field (§6.1).
            fields = true;
            integer(rest, 7).ok_or_else(cut)?.1
        } else if first & 0x40 != 0 {
            // Literal with incremental indexing (§6.2.1).
            fields = true;
            literal(rest, 6).ok_or_else(cut)?
        } else if first & 0x20 != 0 {
            // Dynamic table size update (§6.3).
            if fields {
                return Err(Malformed(
                    "HPACK: table size update after a header field".into(),
                ));
            }
            let (size, used) = integer(rest, 5).ok_or_else(cut)?;
            if size > max_table {
                return Err(Malformed(format!(
                    "HPACK: table size update to {size}, over {max_table}"
                )));
            }
            used
        } else {
            // Literal without indexing or never indexed (§6.2.2, §6.2.3).
            fields = true;
            literal(rest, 4).ok_or_else(cut)?
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_integers_as_rfc_7541_appendix_c1_writes_them() {
        assert_eq!(integer(&[0b0000_1010], 5), Some((10, 1)));
        assert_eq!(
            integer(&[0b0001_1111, 0b1001_1010, 0b0000_1010], 5),
            Some((1337, 3))
        );
        assert_eq!(integer(&[0b0001_1111, 0b1001_1010], 5), None);
        assert_eq!(integer(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x01], 5), None);
    }

    #[test]
    fn accepts_size_updates_first_and_refuses_them_late_large_or_cut() {
        // Size update to 100, then :method GET (index 2), then literal "a: b".
        let good = [0x3f, 0x45, 0x82, 0x00, 0x01, b'a', 0x01, b'b'];
        assert_eq!(check_block(&good, 4096), Ok(()));
        assert!(check_block(&[0x82, 0x3f, 0x45], 4096).is_err());
        // 4097: 31 + 4066 = 0x1f, 0xe2 0x1f.
        assert!(check_block(&[0x3f, 0xe2, 0x1f, 0x82], 4096).is_err());
        assert_eq!(check_block(&[0x3f, 0xe1, 0x1f, 0x82], 4096), Ok(()));
        for cut in [&[0x3f][..], &[0x00, 0x05, b'a'], &[0x40, 0x01, b'a', 0x7f]] {
            assert!(check_block(cut, 4096).is_err(), "{cut:?}");
        }
    }
}
