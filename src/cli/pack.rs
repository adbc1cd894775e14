//! The code zip of `nubis deploy`: a folder's files, minus what `.nubisignore` excludes.
//!
//! `.nubisignore` takes a subset of gitignore: one pattern per line, `#` comments, `!` to
//! re-include, a trailing `/` for directories only, a `/` at the start or inside to anchor the
//! pattern at the folder's root (otherwise it matches a name at any depth), `*` and `?` within
//! a name, `**` across directories. The last matching line wins; an excluded directory is not
//! entered. `.git/`, `.nubisignore` and the manifest `nubis.toml` at the root are never packed.
//!
//! The zip is deterministic (sorted entries, fixed timestamps), so redeploying an unchanged
//! folder gives the same code checksum. Unix permission bits are kept (a custom runtime's
//! `bootstrap` must stay executable).

use std::path::{Path, PathBuf};

use super::error::CliError;

pub const IGNORE_FILE: &str = ".nubisignore";
pub const MANIFEST_FILE: &str = "nubis.toml";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    pattern: Vec<char>,
    negate: bool,
    dir_only: bool,
    /// Matched against the whole relative path rather than the last name.
    anchored: bool,
}

#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    rules: Vec<Rule>,
}

impl IgnoreRules {
    pub fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .filter_map(|line| {
                let line = line.trim_end();
                if line.trim_start().is_empty() || line.starts_with('#') {
                    return None;
                }
                let (negate, p) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, line),
                };
                let (dir_only, p) = match p.strip_suffix('/') {
                    Some(rest) => (true, rest),
                    None => (false, p),
                };
                let anchored = p.contains('/');
                let p = p.strip_prefix('/').unwrap_or(p);
                (!p.is_empty()).then(|| Rule { pattern: p.chars().collect(), negate, dir_only, anchored })
            })
            .collect();
        Self { rules }
    }

    /// Whether `rel` (a `/`-separated path below the folder) is excluded.
    pub fn is_ignored(&self, rel: &str, is_dir: bool) -> bool {
        if is_builtin_ignored(rel, is_dir) {
            return true;
        }
        let path: Vec<char> = rel.chars().collect();
        let name: Vec<char> = rel.rsplit('/').next().unwrap_or(rel).chars().collect();
        let mut ignored = false;
        for r in &self.rules {
            if r.dir_only && !is_dir {
                continue;
            }
            let subject = if r.anchored { &path } else { &name };
            if glob(&r.pattern, subject) {
                ignored = !r.negate;
            }
        }
        ignored
    }
}

fn is_builtin_ignored(rel: &str, is_dir: bool) -> bool {
    (is_dir && rel.rsplit('/').next() == Some(".git")) || (!is_dir && (rel == IGNORE_FILE || rel == MANIFEST_FILE))
}

/// `*` and `?` stay within one path segment; `**/` spans zero or more whole segments and a
/// trailing `**` anything.
fn glob(p: &[char], s: &[char]) -> bool {
    match p {
        [] => s.is_empty(),
        ['*', '*', '/', rest @ ..] => (0..=s.len()).any(|i| (i == 0 || s[i - 1] == '/') && glob(rest, &s[i..])),
        ['*', '*', rest @ ..] => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        ['*', rest @ ..] => {
            let seg = s.iter().position(|&c| c == '/').unwrap_or(s.len());
            (0..=seg).any(|i| glob(rest, &s[i..]))
        }
        ['?', rest @ ..] => s.first().is_some_and(|&c| c != '/') && glob(rest, &s[1..]),
        [c, rest @ ..] => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

/// One file to pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Name in the zip: `/`-separated, relative to the folder.
    pub name: String,
    pub path: PathBuf,
    pub mode: u32,
}

/// The folder's files to pack, sorted by name, after `.nubisignore` (read from the folder).
pub fn collect(root: &Path) -> Result<Vec<Entry>, CliError> {
    let meta = std::fs::metadata(root).map_err(|e| CliError::io(root, e))?;
    if !meta.is_dir() {
        return Err(CliError::Usage(format!("{} is not a folder", root.display())));
    }
    let rules = match std::fs::read_to_string(root.join(IGNORE_FILE)) {
        Ok(t) => IgnoreRules::parse(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => IgnoreRules::default(),
        Err(e) => return Err(CliError::io(root.join(IGNORE_FILE), e)),
    };
    let mut out = Vec::new();
    walk(root, "", &rules, &mut out)?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, rules: &IgnoreRules, out: &mut Vec<Entry>) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    let rd = std::fs::read_dir(dir).map_err(|e| CliError::io(dir, e))?;
    for item in rd {
        let item = item.map_err(|e| CliError::io(dir, e))?;
        let path = item.path();
        let Some(name) = item.file_name().to_str().map(str::to_string) else {
            return Err(CliError::Usage(format!("{}: file names in a code zip must be UTF-8", path.display())));
        };
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        // Symlinks are followed to files only: a linked directory could loop or pull in
        // half the disk, so it is left out.
        let link = item.file_type().map_err(|e| CliError::io(&path, e))?.is_symlink();
        let meta = std::fs::metadata(&path).map_err(|e| CliError::io(&path, e))?;
        if meta.is_dir() {
            if !link && !rules.is_ignored(&rel, true) {
                walk(&path, &rel, rules, out)?;
            }
        } else if meta.is_file() && !rules.is_ignored(&rel, false) {
            out.push(Entry { name: rel, path, mode: meta.permissions().mode() & 0o777 });
        }
    }
    Ok(())
}

/// Zips the entries in order (deflated, fixed timestamps); `progress` is called after each.
pub fn zip_entries(entries: &[Entry], mut progress: impl FnMut(&Entry)) -> Result<Vec<u8>, CliError> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut buf);
    for e in entries {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(zip::DateTime::default())
            .unix_permissions(e.mode)
            .large_file(std::fs::metadata(&e.path).map(|m| m.len() >= u32::MAX as u64).unwrap_or(false));
        w.start_file(e.name.as_str(), opts)?;
        let mut f = std::fs::File::open(&e.path).map_err(|err| CliError::io(&e.path, err))?;
        std::io::copy(&mut f, &mut w).map_err(|err| CliError::io(&e.path, err))?;
        progress(e);
    }
    w.finish()?;
    Ok(buf.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn glob_subset() {
        let g = |p: &str, s: &str| glob(&p.chars().collect::<Vec<_>>(), &s.chars().collect::<Vec<_>>());
        assert!(g("*.pyc", "a.pyc") && !g("*.pyc", "d/a.pyc") && g("a?c", "abc") && !g("a?c", "a/c"));
        assert!(g("**/x", "x") && g("**/x", "a/b/x") && !g("**/x", "ax"));
        assert!(g("a/**", "a/b/c") && g("a/**/z", "a/z") && g("a/**/z", "a/b/c/z"));
    }

    #[test]
    fn rules_follow_gitignore_for_the_common_cases() {
        let r = IgnoreRules::parse("# comment\n\nnode_modules/\n*.pyc\n!keep.pyc\n/build\ndocs/*.md\n");
        assert!(r.is_ignored("node_modules", true) && !r.is_ignored("node_modules", false));
        assert!(r.is_ignored("lib/x.pyc", false) && !r.is_ignored("lib/keep.pyc", false));
        assert!(r.is_ignored("build", true) && !r.is_ignored("src/build", true));
        assert!(r.is_ignored("docs/a.md", false) && !r.is_ignored("docs/sub/a.md", false));
        assert!(r.is_ignored(".git", true) && r.is_ignored("sub/.git", true) && !r.is_ignored(".gitignore", false));
        assert!(r.is_ignored(".nubisignore", false) && r.is_ignored("nubis.toml", false) && !r.is_ignored("sub/nubis.toml", false));
    }

    #[test]
    fn folder_zip_respects_ignore_rules_modes_and_is_deterministic() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for (p, c) in [
            ("index.py", "print(1)\n"),
            (".git/config", "x"),
            ("node_modules/m.js", "x"),
            ("lib/a.pyc", "x"),
            ("lib/keep.pyc", "k"),
            ("lib/util.py", "u"),
            ("bootstrap", "#!/bin/sh\n"),
            (".nubisignore", "node_modules/\n*.pyc\n!keep.pyc\n"),
            ("nubis.toml", "name = 'x'\n"),
        ] {
            let f = root.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, c).unwrap();
        }
        std::fs::set_permissions(root.join("bootstrap"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(root.join("lib"), root.join("linked-dir")).unwrap();
        std::os::unix::fs::symlink(root.join("index.py"), root.join("linked.py")).unwrap();

        let entries = collect(root).unwrap();
        assert_eq!(names(&entries), ["bootstrap", "index.py", "lib/keep.pyc", "lib/util.py", "linked.py"]);
        let mut seen = 0;
        let zip = zip_entries(&entries, |_| seen += 1).unwrap();
        assert_eq!(seen, 5);
        assert_eq!(zip, zip_entries(&entries, |_| {}).unwrap(), "same folder, same bytes");

        let mut a = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        assert_eq!(a.by_name("bootstrap").unwrap().unix_mode().map(|m| m & 0o777), Some(0o755));
        let mut s = String::new();
        std::io::Read::read_to_string(&mut a.by_name("linked.py").unwrap(), &mut s).unwrap();
        assert_eq!(s, "print(1)\n");
        assert!(matches!(collect(&root.join("index.py")), Err(CliError::Usage(_))));
        assert!(matches!(collect(&root.join("absent")), Err(CliError::Io { .. })));
    }
}
