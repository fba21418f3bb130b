//! The dead-letter report: keys that still failed after retries, with the reason and size.
//! The run goes on; the `failed-keys` gate counts them.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

/// One failed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The key (binary-safe; written lossily as UTF-8 with escapes).
    pub key: Vec<u8>,
    /// Why it failed.
    pub reason: String,
    /// Its size in bytes, when known.
    pub size: Option<u64>,
}

/// Appends `letters` to the CSV at `path` (header written when the file is new) and fsyncs.
pub fn append(path: &Path, letters: &[DeadLetter]) -> io::Result<()> {
    if letters.is_empty() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let new = !path.exists();
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let mut writer = csv::Writer::from_writer(&file);
    if new {
        writer.write_record(["key", "reason", "size"])?;
    }
    for l in letters {
        let size = l.size.map_or(String::new(), |s| s.to_string());
        writer.write_record([escape_key(&l.key).as_str(), l.reason.as_str(), size.as_str()])?;
    }
    writer.flush()?;
    drop(writer);
    file.sync_all()
}

/// A key as printable text: UTF-8 as is, other bytes as `\xNN` (and `\` as `\\`).
pub fn escape_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for chunk in key.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_keys_are_escaped() {
        assert_eq!(escape_key(b"a\xffb\\"), "a\\xffb\\\\");
    }

    #[test]
    fn csv_has_a_header_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.csv");
        let l = DeadLetter {
            key: b"k,1".to_vec(),
            reason: "WRONGTYPE".into(),
            size: Some(3),
        };
        append(&path, std::slice::from_ref(&l)).unwrap();
        append(&path, &[l]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "key,reason,size\n\"k,1\",WRONGTYPE,3\n\"k,1\",WRONGTYPE,3\n"
        );
    }
}
