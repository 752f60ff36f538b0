//! Which platform an executable was built for, read from its header (ELF, PE, Mach-O), so a
//! wrong-architecture binary is refused before it goes into an image.

/// `(os, arch)` in Go's names, or `None` when the file is not an executable we know.
pub fn platform_of(bytes: &[u8]) -> Option<(&'static str, &'static str)> {
    let u16le = |o: usize| bytes.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32le = |o: usize| bytes.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if bytes.starts_with(b"\x7fELF") {
        let big_endian = bytes.get(5) == Some(&2);
        let machine =
            if big_endian { bytes.get(18..20).map(|b| u16::from_be_bytes([b[0], b[1]]))? } else { u16le(18)? };
        let arch = match machine {
            0x3e => "amd64",
            0xb7 => "arm64",
            0x28 => "arm",
            0x03 => "386",
            0xf3 => "riscv64",
            0x15 if big_endian => "ppc64",
            0x15 => "ppc64le",
            0x16 => "s390x",
            0x102 => "loong64",
            _ => return None,
        };
        return Some(("linux", arch));
    }
    if bytes.starts_with(b"MZ") {
        let pe = u32le(0x3c)? as usize;
        if bytes.get(pe..pe + 4) != Some(b"PE\0\0") {
            return None;
        }
        let arch = match u16le(pe + 4)? {
            0x8664 => "amd64",
            0xaa64 => "arm64",
            0x14c => "386",
            _ => return None,
        };
        return Some(("windows", arch));
    }
    if u32le(0)? == 0xfeed_facf {
        let arch = match u32le(4)? {
            0x0100_0007 => "amd64",
            0x0100_000c => "arm64",
            _ => return None,
        };
        return Some(("darwin", arch));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[5] = 1;
        elf[18] = 0xb7;
        assert_eq!(platform_of(&elf), Some(("linux", "arm64")));
        let mut pe = vec![0u8; 0x100];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        assert_eq!(platform_of(&pe), Some(("windows", "amd64")));
        let mut macho = vec![0u8; 16];
        macho[..4].copy_from_slice(&0xfeed_facfu32.to_le_bytes());
        macho[4..8].copy_from_slice(&0x0100_000cu32.to_le_bytes());
        assert_eq!(platform_of(&macho), Some(("darwin", "arm64")));
        assert_eq!(platform_of(b"#!/bin/sh\n"), None);
        assert_eq!(platform_of(b""), None);
    }
}
