use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

use crate::manifest::config_media_type;
use crate::{Digest, Layer, Manifest, Name};

/// Largest manifest we read; real ones are a few kilobytes.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Interrupted downloads older than this are removed at start-up.
const DOWNLOAD_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("model '{0}' not found")]
    NotFound(String),
    #[error("blob {0} not found")]
    BlobNotFound(Digest),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("invalid manifest {path}: {reason}")]
    InvalidManifest { path: PathBuf, reason: String },
    /// Ollama's words, when a name differs from an existing model's only in case.
    #[error("a model with that name already exists: '{0}'")]
    NameTaken(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// A model found in the store.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub name: Name,
    pub manifest: Manifest,
    /// sha256 of the manifest file: the model's ID.
    pub digest: Digest,
    pub modified: DateTime<Utc>,
}

/// Manifest changes (write, delete, prune) one at a time: a delete removes the folders a
/// concurrent write is about to create its file in, and decides which blobs no manifest uses
/// while another manifest may be naming them. Within this process a mutex orders them; across
/// processes (two servers on one store) an exclusive lock on `manifests.lock` beside the
/// `manifests` folder (inside it, a walker of manifests would read it as one), released when
/// the guard drops.
static MANIFEST_CHANGES: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct ManifestLock {
    _file: Option<fs::File>,
    _guard: std::sync::MutexGuard<'static, ()>,
}

impl Store {
    fn manifest_lock(&self) -> ManifestLock {
        let guard = MANIFEST_CHANGES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A store on a file system without locks still works, ordered within this process.
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("manifests.lock"))
            .ok()
            .filter(|f| f.lock().is_ok());
        ManifestLock {
            _file: file,
            _guard: guard,
        }
    }
}

/// The store at one root folder.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// Keep the blobs of a manifest that another replaces (`OLLAMA_NOPRUNE`); by default
    /// those no other manifest uses go with it, as in Ollama.
    keep_replaced: bool,
}

impl Store {
    /// Open (and create, if needed) a store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for sub in ["blobs", "manifests"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        }
        Ok(Store {
            root,
            keep_replaced: false,
        })
    }

    /// Keep the blobs of replaced manifests (`OLLAMA_NOPRUNE`).
    pub fn keep_replaced(mut self, keep: bool) -> Self {
        self.keep_replaced = keep;
        self
    }

    /// The store root named by the environment: `CORRAL_MODELS`, else `OLLAMA_MODELS`, else
    /// `~/.corral/models`.
    pub fn root_from_env() -> PathBuf {
        for var in ["CORRAL_MODELS", "OLLAMA_MODELS"] {
            if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
                return PathBuf::from(v);
            }
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        home.join(".corral").join("models")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.file_name())
    }

    /// Whether a complete blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Start writing a blob that must hash to `expected`.
    pub fn blob_writer(&self, expected: Digest) -> Result<BlobWriter, StoreError> {
        let dir = self.root.join("blobs");
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}-partial-", expected.file_name()))
            .tempfile_in(&dir)
            .map_err(io_err(format!("create temp file in {}", dir.display())))?;
        Ok(BlobWriter {
            tmp,
            hasher: Sha256::new(),
            size: 0,
            expected,
            dest: dir,
        })
    }

    /// Store a small blob from memory; returns its layer with the given media type.
    pub fn put_blob_bytes(&self, media_type: String, bytes: &[u8]) -> Result<Layer, StoreError> {
        let digest = Digest::from_bytes(&Sha256::digest(bytes));
        if !self.has_blob(&digest) {
            let mut w = self.blob_writer(digest.clone())?;
            w.write_all(bytes).map_err(io_err("write blob"))?;
            w.commit()?;
        }
        Ok(Layer {
            media_type,
            digest,
            size: bytes.len() as u64,
            from: None,
        })
    }

    /// A temp file in the blob folder for a blob whose digest is known only once it is
    /// written (a model another process makes, such as a quantized one). It is removed when
    /// dropped, unless [`Store::put_blob_file`] takes it in.
    pub fn blob_temp(&self) -> Result<tempfile::TempPath, StoreError> {
        let dir = self.root.join("blobs");
        tempfile::Builder::new()
            .prefix("new-")
            .tempfile_in(&dir)
            .map(NamedTempFile::into_temp_path)
            .map_err(io_err(format!("create temp file in {}", dir.display())))
    }

    /// Hash a complete file from [`Store::blob_temp`] and move it into place as a blob; the
    /// same blob already present is kept and the file removed.
    pub fn put_blob_file(
        &self,
        media_type: String,
        file: tempfile::TempPath,
    ) -> Result<Layer, StoreError> {
        let mut f = File::open(&file).map_err(io_err(format!("open {}", file.display())))?;
        let mut hasher = Sha256::new();
        let size =
            io::copy(&mut f, &mut hasher).map_err(io_err(format!("read {}", file.display())))?;
        f.sync_all().map_err(io_err("sync blob"))?;
        let digest = Digest::from_bytes(&hasher.finalize());
        if !self.has_blob(&digest) {
            let path = self.blob_path(&digest);
            file.persist(&path).map_err(|e| StoreError::Io {
                context: format!("rename to {}", path.display()),
                source: e.error,
            })?;
            sync_dir(&self.root.join("blobs"));
        }
        Ok(Layer {
            media_type,
            digest,
            size,
            from: None,
        })
    }

    /// The config blob as a layer.
    pub fn put_config(&self, config: &crate::ConfigBlob) -> Result<Layer, StoreError> {
        let bytes = serde_json::to_vec(config).expect("config serializes");
        self.put_blob_bytes(config_media_type(), &bytes)
    }

    /// Read a whole (small) blob.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        fs::read(self.blob_path(digest)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound(digest.clone()),
            _ => StoreError::Io {
                context: format!("read blob {digest}"),
                source: e,
            },
        })
    }

    /// The size of a blob, if present.
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(digest)).ok().map(|m| m.len())
    }

    /// The manifest file of a name as stored, matching case-insensitively.
    fn find_manifest(&self, name: &Name) -> Option<(Name, PathBuf)> {
        let exact = self.root.join("manifests").join(name.manifest_path());
        if exact.is_file() {
            return Some((name.clone(), exact));
        }
        self.walk_manifests()
            .into_iter()
            .find(|(n, _)| n.eq_fold(name))
    }

    /// Every (name, path) under `manifests/`, skipping entries that are not valid names.
    fn walk_manifests(&self) -> Vec<(Name, PathBuf)> {
        fn dirs(p: &Path) -> Vec<(String, PathBuf)> {
            fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
                .collect()
        }
        let mut out = Vec::new();
        for (host, hp) in dirs(&self.root.join("manifests")) {
            for (ns, np) in dirs(&hp) {
                for (model, mp) in dirs(&np) {
                    for (tag, tp) in dirs(&mp) {
                        if !tp.is_file() || tag.contains("partial") || tag.starts_with('.') {
                            continue;
                        }
                        let s = format!("{host}/{ns}/{model}:{tag}");
                        if let Ok(n) = s.parse::<Name>() {
                            out.push((n, tp));
                        }
                    }
                }
            }
        }
        out
    }

    /// Load a model's manifest.
    pub fn get(&self, name: &Name) -> Result<ModelEntry, StoreError> {
        let (name, path) = self
            .find_manifest(name)
            .ok_or_else(|| StoreError::NotFound(name.display_short()))?;
        Self::read_entry(name, &path)
    }

    fn read_entry(name: Name, path: &Path) -> Result<ModelEntry, StoreError> {
        let (bytes, manifest, modified) = Self::read_manifest_file(path)?;
        Ok(ModelEntry {
            name,
            manifest,
            digest: Digest::from_bytes(&Sha256::digest(&bytes)),
            modified,
        })
    }

    /// A manifest file's bytes (size-limited), parsed, and its modification time.
    fn read_manifest_file(path: &Path) -> Result<(Vec<u8>, Manifest, DateTime<Utc>), StoreError> {
        let invalid = |reason: String| StoreError::InvalidManifest {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(io_err(format!("open {}", path.display())))?;
        let meta = file
            .metadata()
            .map_err(io_err(format!("stat {}", path.display())))?;
        let mut bytes = Vec::new();
        file.take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err(format!("read {}", path.display())))?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(invalid(format!("larger than {MAX_MANIFEST_BYTES} bytes")));
        }
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        let modified: DateTime<Utc> = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH).into();
        Ok((bytes, manifest, modified))
    }

    /// Every model in the store, newest first. Unreadable manifests are skipped with a warning.
    pub fn list(&self) -> Vec<ModelEntry> {
        let mut out: Vec<ModelEntry> = self
            .walk_manifests()
            .into_iter()
            .filter_map(|(n, p)| match Self::read_entry(n, &p) {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::warn!("skipping {}: {e}", p.display());
                    None
                }
            })
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.modified));
        out
    }

    /// Write a manifest atomically. Every blob it names must already be present. A name that
    /// differs from an existing model's only in case is refused, as Ollama refuses it (on a
    /// case-insensitive lookup the two would be one model).
    pub fn put_manifest(&self, name: &Name, manifest: &Manifest) -> Result<Digest, StoreError> {
        let bytes = serde_json::to_vec(manifest).expect("manifest serializes");
        self.put_manifest_raw(name, &bytes)
    }

    /// Write a manifest exactly as received (a pull keeps the registry's bytes, so the model's
    /// ID is the registry's manifest digest). It must parse, stay under the size limit, and
    /// name only blobs that are present.
    pub fn put_manifest_raw(&self, name: &Name, bytes: &[u8]) -> Result<Digest, StoreError> {
        let path = self.root.join("manifests").join(name.manifest_path());
        let invalid = |reason: String| StoreError::InvalidManifest {
            path: path.clone(),
            reason,
        };
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(invalid(format!("larger than {MAX_MANIFEST_BYTES} bytes")));
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        let _changing = self.manifest_lock();
        for d in manifest.digests() {
            if !self.has_blob(d) {
                return Err(StoreError::BlobNotFound(d.clone()));
            }
        }
        if let Some((other, _)) = self.find_manifest(name).filter(|(_, p)| *p != path) {
            return Err(StoreError::NameTaken(other.display_short()));
        }
        let replaced = (!self.keep_replaced)
            .then(|| Self::read_entry(name.clone(), &path).ok())
            .flatten();
        write_atomic(&path, bytes)?;
        // A model created or pulled again under its name: the blobs only the old manifest
        // used go, as in Ollama (whose create and pull remove the replaced layers).
        if let Some(old) = replaced {
            self.remove_unused(old.manifest.digests());
        }
        Ok(Digest::from_bytes(&Sha256::digest(bytes)))
    }

    /// Remove those of `digests` that no manifest references (call with the manifest lock).
    fn remove_unused<'a>(&self, digests: impl Iterator<Item = &'a Digest>) -> Vec<Digest> {
        let used = self.referenced();
        let mut removed = Vec::new();
        for d in digests {
            if !used.contains(d) && fs::remove_file(self.blob_path(d)).is_ok() {
                removed.push(d.clone());
            }
        }
        removed
    }

    /// A model's manifest bytes as stored (what a push sends), with the stored name.
    pub fn read_manifest_raw(&self, name: &Name) -> Result<(Name, Vec<u8>), StoreError> {
        let (found, path) = self
            .find_manifest(name)
            .ok_or_else(|| StoreError::NotFound(name.display_short()))?;
        let (bytes, _, _) = Self::read_manifest_file(&path)?;
        Ok((found, bytes))
    }

    /// Where a download of a blob collects its bytes until it is verified. The name is not a
    /// digest, so nothing reads it as a blob; it survives restarts so a pull can resume.
    pub fn download_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(format!("{}-partial", digest.file_name()))
    }

    /// The download's progress record beside [`Store::download_path`].
    pub fn download_state_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(format!("{}-partial.json", digest.file_name()))
    }

    /// Hash a finished download. If it does not match its digest, the download and its
    /// record are removed (a resumed download must not keep bad bytes). Returns its size.
    pub fn verify_download(&self, digest: &Digest) -> Result<u64, StoreError> {
        let partial = self.download_path(digest);
        let mut file =
            File::open(&partial).map_err(io_err(format!("open {}", partial.display())))?;
        let mut hasher = Sha256::new();
        let size = io::copy(&mut file, &mut hasher)
            .map_err(io_err(format!("read {}", partial.display())))?;
        let actual = Digest::from_bytes(&hasher.finalize());
        if actual != *digest {
            let _ = fs::remove_file(&partial);
            let _ = fs::remove_file(self.download_state_path(digest));
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        file.sync_all().map_err(io_err("sync blob"))?;
        Ok(size)
    }

    /// Move a verified download into place as the blob.
    pub fn commit_download(&self, digest: &Digest) -> Result<(), StoreError> {
        let partial = self.download_path(digest);
        let path = self.blob_path(digest);
        fs::rename(&partial, &path).map_err(io_err(format!("rename to {}", path.display())))?;
        let _ = fs::remove_file(self.download_state_path(digest));
        sync_dir(&self.root.join("blobs"));
        Ok(())
    }
}

impl Store {
    /// Give a model a second name: a new manifest with the same content (blobs are shared).
    pub fn copy(&self, from: &Name, to: &Name) -> Result<(), StoreError> {
        let src = self.get(from)?;
        self.put_manifest(to, &src.manifest)?;
        Ok(())
    }

    /// Remove a model's manifest, then every blob no other manifest uses.
    /// Returns the digests of the blobs removed.
    pub fn delete(&self, name: &Name) -> Result<Vec<Digest>, StoreError> {
        let _changing = self.manifest_lock();
        let (_, path) = self
            .find_manifest(name)
            .ok_or_else(|| StoreError::NotFound(name.display_short()))?;
        let entry = Self::read_entry(name.clone(), &path).ok();
        fs::remove_file(&path).map_err(|e| match e.kind() {
            // Another process's delete won.
            io::ErrorKind::NotFound => StoreError::NotFound(name.display_short()),
            _ => io_err(format!("remove {}", path.display()))(e),
        })?;
        // Empty folders up to (not including) manifests/ go too, as Ollama leaves none behind.
        let stop = self.root.join("manifests");
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir.filter(|d| *d != stop) {
            if fs::remove_dir(&d).is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        let Some(entry) = entry else {
            return Ok(Vec::new());
        };
        Ok(self.remove_unused(entry.manifest.digests()))
    }

    /// Every blob some manifest references.
    fn referenced(&self) -> std::collections::HashSet<Digest> {
        self.list()
            .iter()
            .flat_map(|e| e.manifest.digests().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Remove blobs (and leftover partial files) that no manifest references and that are
    /// older than `min_age`, so an upload that a `create` is about to use is left alone.
    pub fn prune(&self, min_age: std::time::Duration) -> Vec<PathBuf> {
        let _changing = self.manifest_lock();
        let used = self.referenced();
        let now = SystemTime::now();
        let mut removed = Vec::new();
        for e in fs::read_dir(self.root.join("blobs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let keep = name
                .parse::<Digest>()
                .is_ok_and(|d| used.contains(&d) && name == d.file_name());
            // An interrupted pull resumes from its download; keep those for a week.
            let resumable = name.ends_with("-partial") || name.ends_with("-partial.json");
            let age = if resumable {
                min_age.max(DOWNLOAD_MAX_AGE)
            } else {
                min_age
            };
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() >= age)
                .unwrap_or(false);
            if !keep && old && fs::remove_file(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
        removed
    }
}

/// Write `bytes` to `path` so that readers see either the old file or the complete new one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().expect("store paths have a parent");
    fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    let mut tmp = NamedTempFile::new_in(dir)
        .map_err(io_err(format!("create temp file in {}", dir.display())))?;
    tmp.write_all(bytes)
        .map_err(io_err(format!("write {}", path.display())))?;
    tmp.as_file()
        .sync_all()
        .map_err(io_err(format!("sync {}", path.display())))?;
    tmp.persist(path).map_err(|e| StoreError::Io {
        context: format!("rename to {}", path.display()),
        source: e.error,
    })?;
    sync_dir(dir);
    Ok(())
}

fn sync_dir(dir: &Path) {
    // Makes the rename durable; failure only weakens durability, not correctness.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A blob being written: hashed as bytes arrive, visible under its digest only after
/// [`BlobWriter::commit`] checks the hash. Dropping it uncommitted removes the temp file.
pub struct BlobWriter {
    tmp: NamedTempFile,
    hasher: Sha256,
    size: u64,
    expected: Digest,
    dest: PathBuf,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.tmp.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Check the digest, fsync and move the blob into place. Returns its size.
    pub fn commit(self) -> Result<u64, StoreError> {
        let actual = Digest::from_bytes(&self.hasher.finalize());
        if actual != self.expected {
            return Err(StoreError::DigestMismatch {
                expected: self.expected,
                actual,
            });
        }
        self.tmp.as_file().sync_all().map_err(io_err("sync blob"))?;
        let path = self.dest.join(self.expected.file_name());
        self.tmp.persist(&path).map_err(|e| StoreError::Io {
            context: format!("rename to {}", path.display()),
            source: e.error,
        })?;
        sync_dir(&self.dest);
        Ok(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn blob_with_wrong_content_is_never_visible() {
        let (_d, s) = store();
        let want: Digest = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
        let mut w = s.blob_writer(want.clone()).unwrap();
        w.write_all(b"hello").unwrap();
        assert!(matches!(w.commit(), Err(StoreError::DigestMismatch { .. })));
        assert!(!s.has_blob(&want));
        assert_eq!(
            fs::read_dir(s.root().join("blobs")).unwrap().count(),
            0,
            "temp file left behind"
        );
    }

    #[test]
    fn a_file_made_elsewhere_becomes_a_blob_and_an_unused_one_leaves_nothing() {
        let (_d, s) = store();
        let t = s.blob_temp().unwrap();
        fs::write(&t, b"weights").unwrap();
        let layer = s.put_blob_file(Layer::media_type_for("model"), t).unwrap();
        assert_eq!(s.read_blob(&layer.digest).unwrap(), b"weights");
        assert_eq!(layer.size, 7);
        // The same bytes again: the blob stays, the new file goes.
        let t = s.blob_temp().unwrap();
        fs::write(&t, b"weights").unwrap();
        assert_eq!(
            s.put_blob_file(Layer::media_type_for("model"), t).unwrap(),
            layer
        );
        drop(s.blob_temp().unwrap());
        assert_eq!(fs::read_dir(s.root().join("blobs")).unwrap().count(), 1);
    }

    #[test]
    fn manifests_round_trip_and_match_case_insensitively() {
        let (_d, s) = store();
        let layer = s
            .put_blob_bytes(Layer::media_type_for("system"), b"be brief")
            .unwrap();
        let config = s.put_config(&Default::default()).unwrap();
        let m = Manifest::new(config, vec![layer]);
        let name: Name = "Smol:Latest".parse().unwrap();
        s.put_manifest(&name, &m).unwrap();
        let got = s.get(&"smol".parse().unwrap()).unwrap();
        assert_eq!(got.manifest, m);
        assert_eq!(got.name.model, "Smol");
        // A name that differs only in case is refused (as Ollama): it would be the same model.
        assert!(matches!(
            s.put_manifest(&"smol".parse().unwrap(), &m),
            Err(StoreError::NameTaken(n)) if n == "Smol:Latest"
        ));
        // The same name, in its own case, is rewritten.
        s.put_manifest(&name, &m).unwrap();
        let names: Vec<String> = s.list().iter().map(|e| e.name.display_short()).collect();
        assert_eq!(names, vec!["Smol:Latest"]);
        assert!(
            matches!(s.get(&"other".parse().unwrap()), Err(StoreError::NotFound(n)) if n == "other:latest")
        );
    }

    #[test]
    fn a_replaced_manifest_takes_the_blobs_only_it_used() {
        for keep in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let s = Store::open(dir.path()).unwrap().keep_replaced(keep);
            let put = |bytes: &[u8]| {
                s.put_blob_bytes(Layer::media_type_for("model"), bytes)
                    .unwrap()
            };
            let (old, shared, new) = (put(b"old weights"), put(b"a license"), put(b"new"));
            let config = s.put_config(&Default::default()).unwrap();
            let x: Name = "x".parse().unwrap();
            let manifest = |layers: Vec<Layer>| Manifest::new(config.clone(), layers);
            s.put_manifest(&x, &manifest(vec![old.clone(), shared.clone()]))
                .unwrap();
            // Another model uses the license too; then x is made again from new weights.
            s.put_manifest(&"y".parse().unwrap(), &manifest(vec![shared.clone()]))
                .unwrap();
            s.put_manifest(&x, &manifest(vec![new.clone()])).unwrap();
            assert_eq!(s.has_blob(&old.digest), keep, "keep_replaced {keep}");
            assert!(s.has_blob(&shared.digest) && s.has_blob(&new.digest));
            assert!(s.has_blob(&config.digest));
        }
    }

    #[test]
    fn shared_blobs_survive_until_their_last_model_goes() {
        let (_d, s) = store();
        let weights = s
            .put_blob_bytes(Layer::media_type_for("model"), b"weights")
            .unwrap();
        let config = s.put_config(&Default::default()).unwrap();
        let a: Name = "a".parse().unwrap();
        let b: Name = "me/b:v1".parse().unwrap();
        s.put_manifest(&a, &Manifest::new(config.clone(), vec![weights.clone()]))
            .unwrap();
        s.copy(&a, &b).unwrap();
        assert_eq!(s.list().len(), 2);
        assert!(s.delete(&a).unwrap().is_empty(), "b still uses every blob");
        assert!(s.has_blob(&weights.digest));
        let removed = s.delete(&b).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(!s.has_blob(&weights.digest) && !s.has_blob(&config.digest));
        assert!(s.list().is_empty());
        assert!(
            !s.root().join("manifests/registry.ollama.ai/me").exists(),
            "empty folders removed"
        );
        assert!(matches!(s.delete(&a), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn prune_removes_only_old_unreferenced_blobs() {
        let (_d, s) = store();
        let used = s
            .put_blob_bytes(Layer::media_type_for("model"), b"used")
            .unwrap();
        let config = s.put_config(&Default::default()).unwrap();
        s.put_manifest(
            &"a".parse().unwrap(),
            &Manifest::new(config, vec![used.clone()]),
        )
        .unwrap();
        let stray = s
            .put_blob_bytes(Layer::media_type_for("model"), b"stray")
            .unwrap();
        assert!(
            s.prune(std::time::Duration::from_secs(3600)).is_empty(),
            "a fresh upload is kept"
        );
        // An interrupted pull's download and record stay, so the pull can resume.
        std::fs::write(s.download_path(&stray.digest), b"str").unwrap();
        std::fs::write(s.download_state_path(&stray.digest), b"{}").unwrap();
        let removed = s.prune(std::time::Duration::ZERO);
        assert_eq!(removed, vec![s.blob_path(&stray.digest)]);
        assert!(s.has_blob(&used.digest));
        assert!(s.download_path(&stray.digest).is_file());
        assert!(s.download_state_path(&stray.digest).is_file());
    }

    #[test]
    fn downloads_become_blobs_only_when_verified() {
        let (_d, s) = store();
        let good: Digest = Digest::from_bytes(&Sha256::digest(b"good"));
        std::fs::write(s.download_path(&good), b"evil").unwrap();
        std::fs::write(s.download_state_path(&good), b"{}").unwrap();
        assert!(matches!(
            s.verify_download(&good),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert!(!s.download_path(&good).exists() && !s.download_state_path(&good).exists());
        assert!(!s.has_blob(&good));
        std::fs::write(s.download_path(&good), b"good").unwrap();
        assert_eq!(s.verify_download(&good).unwrap(), 4);
        s.commit_download(&good).unwrap();
        assert_eq!(s.read_blob(&good).unwrap(), b"good");
        assert!(!s.download_path(&good).exists());
    }

    #[test]
    fn manifest_naming_a_missing_blob_is_refused() {
        let (_d, s) = store();
        let config = s.put_config(&Default::default()).unwrap();
        let missing = Layer {
            media_type: Layer::media_type_for("model"),
            digest: format!("sha256:{}", "1".repeat(64)).parse().unwrap(),
            size: 1,
            from: None,
        };
        let r = s.put_manifest(&"x".parse().unwrap(), &Manifest::new(config, vec![missing]));
        assert!(matches!(r, Err(StoreError::BlobNotFound(_))));
        assert!(s.list().is_empty());
    }
}
