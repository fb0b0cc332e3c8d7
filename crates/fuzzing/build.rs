//! Embeds the committed seed corpora (`fuzz/corpus/<target>/*` at the repository root) so the
//! fuzz tests read no files: a test binary replays exactly the corpus it was built with.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest).join("../../fuzz/corpus");
    // Cargo scans a directory given here recursively, so a file added to any target's corpus
    // rebuilds the tests.
    println!("cargo::rerun-if-changed={}", root.display());
    let mut out = String::from("static CORPUS: &[(&str, &str, &[u8])] = &[\n");
    for target in sorted(&root) {
        let Some(target_name) = name(&target) else {
            continue;
        };
        for file in sorted(&target).into_iter().filter(|f| f.is_file()) {
            let Some(file_name) = name(&file) else {
                continue;
            };
            let path = file.canonicalize().expect("corpus file path");
            let path = path.to_str().expect("corpus paths are UTF-8");
            writeln!(
                out,
                "    ({target_name:?}, {file_name:?}, include_bytes!({path:?})),"
            )
            .expect("writing to a String");
        }
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("corpus.rs");
    std::fs::write(dest, out).expect("write corpus.rs");
}

/// The entries of `dir`, by name, so the order (and so every run) is the same everywhere.
fn sorted(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    entries
}

fn name(path: &Path) -> Option<String> {
    path.file_name()?.to_str().map(str::to_string)
}
