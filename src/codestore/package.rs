//! Code zip checks and unpacking. Blocking: call from `spawn_blocking`.
//!
//! A zip's central directory declares each entry's size, but a hostile zip can lie, so the
//! declared total is checked up front (cheap refusal) and the bytes actually written are
//! counted again while unpacking (the real guard against zip bombs).

use std::io::{Cursor, Read, Write};
use std::path::Path;

use crc::{CRC_64_XZ, Crc};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_zip_bytes: u64,
    pub max_unzipped_bytes: u64,
    pub max_entries: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("code.zipFile is not valid base64")]
    NotBase64,
    #[error("code is not a valid zip file: {0}")]
    NotZip(String),
    #[error("code zip is {size} bytes, larger than the limit of {limit}")]
    ZipTooLarge { size: u64, limit: u64 },
    #[error("code unzips to more than {limit} bytes")]
    UnzippedTooLarge { limit: u64 },
    #[error("code zip has more than {limit} entries")]
    TooManyEntries { limit: usize },
    #[error("code zip entry '{0}' would be written outside the code directory")]
    UnsafePath(String),
    #[error("code checksum mismatch: the zip's CRC-64 is {actual}, the request says {given}")]
    ChecksumMismatch { given: String, actual: String },
    #[error("unpacking code: {0}")]
    Io(#[from] std::io::Error),
}

/// FC's code checksum: CRC-64/XZ (ECMA-182, as OSS's x-oss-hash-crc64ecma) in decimal.
pub fn checksum(bytes: &[u8]) -> String {
    Crc::<u64>::new(&CRC_64_XZ).checksum(bytes).to_string()
}

fn entry_name(e: &zip::read::ZipFile<'_, impl Read>) -> String {
    e.name().map(|n| n.chars().take(200).collect()).unwrap_or_default()
}

/// Check a zip without unpacking it: size, entry count, declared total, paths.
pub fn inspect(bytes: &[u8], limits: Limits) -> Result<(), PackageError> {
    if bytes.len() as u64 > limits.max_zip_bytes {
        return Err(PackageError::ZipTooLarge { size: bytes.len() as u64, limit: limits.max_zip_bytes });
    }
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| PackageError::NotZip(e.to_string()))?;
    if zip.len() > limits.max_entries {
        return Err(PackageError::TooManyEntries { limit: limits.max_entries });
    }
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(|e| PackageError::NotZip(e.to_string()))?;
        if entry.enclosed_name().is_none() {
            return Err(PackageError::UnsafePath(entry_name(&entry)));
        }
        total = total.saturating_add(entry.size());
        if total > limits.max_unzipped_bytes {
            return Err(PackageError::UnzippedTooLarge { limit: limits.max_unzipped_bytes });
        }
    }
    Ok(())
}

/// Unpack into `dest` (which must not exist yet: callers unpack to a temp dir and rename, so a
/// half-unpacked tree is never visible). Files become world-readable so the non-root instance
/// user can read them; entries marked executable (or named `bootstrap`) stay executable.
pub fn unpack(bytes: &[u8], dest: &Path, limits: Limits) -> Result<(), PackageError> {
    use std::os::unix::fs::PermissionsExt;
    inspect(bytes, limits)?;
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| PackageError::NotZip(e.to_string()))?;
    std::fs::create_dir_all(dest)?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))?;
    let mut budget = limits.max_unzipped_bytes;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| PackageError::NotZip(e.to_string()))?;
        let rel = entry.enclosed_name().ok_or_else(|| PackageError::UnsafePath(entry_name(&entry)))?;
        let path = dest.join(&rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            continue;
        }
        if entry.is_symlink() {
            // A link could point anywhere on the host once mounted; packages keep files only.
            tracing::warn!(entry = %rel.display(), "skipping symlink in code package");
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))?;
        }
        let executable = entry.unix_mode().is_some_and(|m| m & 0o111 != 0)
            || rel.file_name().is_some_and(|n| n == "bootstrap");
        let mut out = std::fs::File::create(&path)?;
        let written = std::io::copy(&mut (&mut entry).take(budget + 1), &mut out)?;
        if written > budget {
            return Err(PackageError::UnzippedTooLarge { limit: limits.max_unzipped_bytes });
        }
        budget -= written;
        out.flush()?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(if executable { 0o755 } else { 0o644 }))?;
    }
    Ok(())
}

/// Build a zip from (path, content, mode) entries; used by tests and the CLI.
pub fn build_zip(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        for (name, content, mode) in files {
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(*mode);
            w.start_file(*name, opts).expect("in-memory zip write");
            w.write_all(content).expect("in-memory zip write");
        }
        w.finish().expect("in-memory zip finish");
    }
    buf.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_zip_bytes: 1 << 20, max_unzipped_bytes: 1 << 20, max_entries: 100 };

    #[test]
    fn checksum_is_crc64_xz_decimal() {
        // The CRC-64/XZ check value of "123456789".
        assert_eq!(checksum(b"123456789"), 0x995dc9bbdf1939fa_u64.to_string());
    }

    #[test]
    fn unpacks_with_modes_and_refuses_bombs() {
        let zip = build_zip(&[("index.py", b"x = 1\n", 0o600), ("bin/bootstrap", b"#!/bin/sh\n", 0o600)]);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("code");
        unpack(&zip, &dest, LIMITS).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| std::fs::metadata(dest.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("index.py"), 0o644);
        assert_eq!(mode("bin/bootstrap"), 0o755);

        let big = vec![0u8; 2 << 20];
        let bomb = build_zip(&[("zeros", &big, 0o644)]);
        assert!(bomb.len() < 64 << 10, "deflate squeezes zeros");
        assert!(matches!(inspect(&bomb, LIMITS), Err(PackageError::UnzippedTooLarge { .. })));
        assert!(matches!(inspect(b"not a zip", LIMITS), Err(PackageError::NotZip(_))));
        let evil = build_zip(&[("../evil", b"x", 0o644)]);
        assert!(matches!(inspect(&evil, LIMITS), Err(PackageError::UnsafePath(_))));
        let many: Vec<(String, Vec<u8>)> = (0..101).map(|i| (format!("f{i}"), vec![])).collect();
        let entries: Vec<(&str, &[u8], u32)> = many.iter().map(|(n, c)| (n.as_str(), c.as_slice(), 0o644)).collect();
        assert!(matches!(inspect(&build_zip(&entries), LIMITS), Err(PackageError::TooManyEntries { .. })));
    }
}
