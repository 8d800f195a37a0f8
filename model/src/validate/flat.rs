//! The JSON pass's fast path: one scan of a flat object, the shape of nearly every record.
//!
//! [`read_flat_object`] reads an object whose values are all scalars (strings without escapes,
//! numbers, `true`, `false`, `null`) in one pass over the bytes, and gives up (`false`) at the
//! first thing it does not read itself: an escape, a nested value, a syntax error. Validation
//! then runs the full parser, which decides the verdict and the error. So this scan never
//! judges a record; it only accepts what the parser would read to the same [`Slots`], which a
//! property test checks against the parser on mutated records.

use super::{Field, Slots};

/// [`read_flat_object`], returning the slots: for the tests.
#[cfg(test)]
pub(super) fn flat_object(text: &str) -> Option<Slots<'_>> {
    let mut slots = Slots::default();
    read_flat_object(text, &mut slots).then_some(slots)
}

/// Reads the known fields of `text` into `slots` (empty on entry) when it is a flat object
/// this scan reads; `false` when the full parser must decide (`slots` then holds what was read
/// until then). The slots are the caller's: nearly two hundred bytes, returned by value they
/// were copied twice a record.
pub(super) fn read_flat_object<'a>(text: &'a str, slots: &mut Slots<'a>) -> bool {
    read(text, slots).is_some()
}

fn read<'a>(text: &'a str, slots: &mut Slots<'a>) -> Option<()> {
    let b = text.as_bytes();
    slots.unescaped = true;
    let mut i = whitespace(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = whitespace(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let key_end = string(b, i)?;
            let key = &text[i + 1..key_end - 1];
            i = whitespace(b, key_end);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = whitespace(b, i + 1);
            let value_end = scalar(b, i)?;
            if let Some(f) = Field::parse(key) {
                slots.put(f, &text[i..value_end]);
            }
            i = whitespace(b, value_end);
            match b.get(i)? {
                b',' => i = whitespace(b, i + 1),
                b'}' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (whitespace(b, i) == b.len()).then_some(())
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
fn whitespace(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\n' | b'\t' | b'\r')) {
        i += 1;
    }
    i
}

/// The end (after the closing quote) of a string literal at `i` with no escapes and no
/// control characters (which JSON forbids unescaped).
fn string(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    // Eight bytes at a time: the first quote, backslash or control character ends the scan.
    let mut j = i + 1;
    while let Some(word) = b.get(j..j + 8) {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let special = below(w, 0x20) | below(w ^ splat(b'"'), 1) | below(w ^ splat(b'\\'), 1);
        if special != 0 {
            j += special.trailing_zeros() as usize / 8;
            return (b[j] == b'"').then_some(j + 1);
        }
        j += 8;
    }
    loop {
        match *b.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' | 0..=0x1f => return None,
            _ => j += 1,
        }
    }
}

/// `byte` in each byte of a word.
const fn splat(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

/// The high bit of each byte of `w` less than `n` (at most 0x80), read as little-endian: the
/// lowest bit set marks the first such byte. (A borrow may also mark a byte after it, never
/// one before.)
const fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(splat(n)) & !w & splat(0x80)
}

/// The end of a scalar value at `i`: a simple string, a number, or a literal.
fn scalar(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string(b, i),
        b'-' | b'0'..=b'9' => number(b, i),
        _ => ["null", "true", "false"]
            .into_iter()
            .find(|l| b[i..].starts_with(l.as_bytes()))
            .map(|l| i + l.len()),
    }
}

/// The end of a number at `i` in JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)?
/// ([eE] [+-]? [0-9]+)?`. (What follows it is the caller's to check.)
fn number(b: &[u8], i: usize) -> Option<usize> {
    let digits = |mut j: usize| {
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        j
    };
    let mut j = i + usize::from(b[i] == b'-');
    j = match *b.get(j)? {
        b'0' => j + 1,
        b'1'..=b'9' => digits(j + 1),
        _ => return None,
    };
    if b.get(j) == Some(&b'.') {
        let end = digits(j + 1);
        if end == j + 1 {
            return None;
        }
        j = end;
    }
    if matches!(b.get(j), Some(b'e' | b'E')) {
        j += 1;
        j += usize::from(matches!(b.get(j), Some(b'+' | b'-')));
        let end = digits(j);
        if end == j {
            return None;
        }
        j = end;
    }
    Some(j)
}
