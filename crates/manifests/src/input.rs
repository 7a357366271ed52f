//! Command-line inputs: files, directories and stdin, read into text.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::Error;

/// The name stdin is shown by in locations and errors.
pub(crate) const STDIN_NAME: &str = "<stdin>";

/// Extensions read from a directory, as `kubectl apply -f DIR` does. A file
/// named explicitly is read whatever its extension.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Where an input comes from, as given on the command line.
///
/// Kept separate from the path itself because `-` means stdin, as for
/// `kubectl -f -`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A file (read whatever its extension) or a directory (its `.yaml`,
    /// `.yml` and `.json` files, not recursive, sorted by name).
    Path(PathBuf),
    /// All of standard input.
    Stdin,
}

impl Input {
    /// Parses a command-line argument: `-` is stdin, anything else a path.
    pub fn parse(arg: &str) -> Input {
        if arg == "-" {
            Input::Stdin
        } else {
            Input::Path(PathBuf::from(arg))
        }
    }
}

/// The files to read for a path: the directory's manifest files sorted by
/// name, or the path itself. Errors listing a directory go to `errors`; a
/// path that cannot be read at all is returned as is, so that reading it
/// reports the problem.
pub(crate) fn files(path: &Path, errors: &mut Vec<Error>) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    let io_error = |file: &Path, source| Error::Io {
        file: file.display().to_string(),
        source,
    };
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(source) => {
            errors.push(io_error(path, source));
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let file = entry.path();
                // is_file follows symlinks, so linked manifests are read too.
                if has_manifest_extension(&file) && file.is_file() {
                    files.push(file);
                }
            }
            Err(source) => errors.push(io_error(path, source)),
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    files
}

fn has_manifest_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| EXTENSIONS.contains(&extension))
}

/// Reads a whole file as UTF-8; `name` is how it is shown in errors.
pub(crate) fn read_file(path: &Path, name: &str) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        file: name.to_owned(),
        source,
    })
}

/// Reads all of stdin as UTF-8.
pub(crate) fn read_stdin() -> Result<String, Error> {
    let mut text = String::new();
    std::io::stdin()
        .lock()
        .read_to_string(&mut text)
        .map_err(|source| Error::Io {
            file: STDIN_NAME.to_owned(),
            source,
        })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_is_stdin() {
        assert_eq!(Input::parse("-"), Input::Stdin);
    }

    #[test]
    fn anything_else_is_a_path() {
        assert_eq!(Input::parse("svc.yaml"), Input::Path("svc.yaml".into()));
        assert_eq!(Input::parse("./-"), Input::Path("./-".into()));
        assert_eq!(Input::parse("--"), Input::Path("--".into()));
    }

    #[test]
    fn manifest_extensions() {
        assert!(has_manifest_extension(Path::new("a/b.yaml")));
        assert!(has_manifest_extension(Path::new("b.yml")));
        assert!(has_manifest_extension(Path::new("b.json")));
        assert!(!has_manifest_extension(Path::new("b.txt")));
        assert!(!has_manifest_extension(Path::new("yaml")));
        assert!(!has_manifest_extension(Path::new("b.yaml.bak")));
    }
}
