//! Fetching the Linux comparison guest: Debian's stock arm64 kernel and busybox, with apt,
//! into `target/linux/`, without touching the host's package configuration.
//!
//! apt runs as an ordinary client with a private configuration and state ([`Apt`]): its own
//! `sources.list` (the mirror, suites `bookworm` and `bookworm-backports`, `arch=arm64`,
//! `signed-by` the host's Debian archive keyring), an empty `sources.list.d`, its own state
//! (package lists, an empty dpkg status) and cache, all under `target/linux/apt/`, and
//! `APT::Architecture=arm64`, so `apt-get update` reads arm64 package lists without
//! `dpkg --add-architecture` and without root. [`fetch`] then:
//! 1. `apt-get update` (every index must download, `--error-on=any`);
//! 2. `apt-cache show linux-image-arm64/bookworm-backports`: the metapackage's dependency names
//!    the newest backports kernel (`linux-image-<abi>-arm64`); its `-unsigned` twin (same build,
//!    no signed EFI stub) is taken when the lists have it;
//! 3. `apt-get download` of that package and `busybox-static` into `target/linux/debs/`
//!    (no install, no dpkg database);
//! 4. `dpkg-deb --fsys-tarfile` piped into `tar -x` takes `boot/vmlinuz-*` (already an
//!    uncompressed arm64 `Image`) and `virtio_mem.ko.xz` out of the kernel package,
//!    `dpkg-deb -x` unpacks busybox; `xz -dc` decompresses the module (busybox's `insmod`
//!    cannot read `.ko.xz`);
//! 5. writes [`STAMP`] naming the mirror, the package and the three files.
//!
//! A later run whose stamp names the same mirror and whose files are still there uses them
//! without any network access. Any failure is a [`FetchError`] with a one-line reason, and the
//! bench then prints hotmem's column alone ([`Plan::decide`]). `$HOTMEM_LINUX_MIRROR` replaces
//! the mirror URL (an unreachable one tests that path).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The mirror when `$HOTMEM_LINUX_MIRROR` is not set (the host's Debian sources use it).
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Environment variable that replaces the mirror URL.
pub const MIRROR_ENV: &str = "HOTMEM_LINUX_MIRROR";
/// The keyring apt checks the mirror's signatures with.
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Suites in the private `sources.list`.
pub const SUITES: [&str; 2] = ["bookworm", "bookworm-backports"];
/// The kernel metapackage, and the suite it is taken from.
pub const KERNEL_META: &str = "linux-image-arm64";
/// Suite of the kernel.
pub const KERNEL_SUITE: &str = "bookworm-backports";
/// The userland package.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Name of the stamp file in the fetch directory.
pub const STAMP: &str = "fetched.txt";

/// Why the Linux guest could not be fetched: one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError(pub String);

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the Linux guest boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxFiles {
    /// `package=version` of the kernel.
    pub package: String,
    /// The kernel `Image`.
    pub kernel: PathBuf,
    /// The decompressed `virtio_mem.ko`.
    pub module: PathBuf,
    /// The static busybox binary.
    pub busybox: PathBuf,
}

impl LinuxFiles {
    /// The stamp file's text for files fetched from `mirror`.
    pub fn stamp(&self, mirror: &str) -> String {
        format!(
            "mirror={mirror}\npackage={}\nkernel={}\nmodule={}\nbusybox={}\n",
            self.package,
            self.kernel.display(),
            self.module.display(),
            self.busybox.display()
        )
    }

    /// Reads a stamp; `None` when it names another mirror or lacks a line.
    pub fn from_stamp(text: &str, mirror: &str) -> Option<LinuxFiles> {
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
        };
        if get("mirror")? != mirror {
            return None;
        }
        Some(LinuxFiles {
            package: get("package")?,
            kernel: get("kernel")?.into(),
            module: get("module")?.into(),
            busybox: get("busybox")?.into(),
        })
    }

    fn all_exist(&self) -> bool {
        [&self.kernel, &self.module, &self.busybox]
            .iter()
            .all(|p| p.is_file())
    }
}

/// apt with a private configuration and state under `dir` (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apt {
    /// Root of apt's private files (`target/linux/apt`).
    pub dir: PathBuf,
    /// Mirror URL.
    pub mirror: String,
    /// Keyring for `signed-by`.
    pub keyring: PathBuf,
}

impl Apt {
    /// apt under `dir` against `mirror`, checked with [`KEYRING`].
    pub fn new(dir: &Path, mirror: &str) -> Apt {
        Apt {
            dir: dir.to_path_buf(),
            mirror: mirror.trim_end_matches('/').to_string(),
            keyring: KEYRING.into(),
        }
    }

    /// The private `sources.list`: one arm64 line per suite of [`SUITES`].
    pub fn sources_list(&self) -> String {
        SUITES
            .iter()
            .map(|suite| {
                format!(
                    "deb [arch=arm64 signed-by={}] {} {suite} main\n",
                    self.keyring.display(),
                    self.mirror
                )
            })
            .collect()
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }

    /// The `-o` options every apt command gets: private sources, state, status and cache, arm64
    /// as the only architecture, no translations, and no drop to the `_apt` user (it could not
    /// write into the work tree).
    pub fn options(&self) -> Vec<String> {
        [
            format!("Dir::Etc::SourceList={}", self.path("sources.list")),
            format!("Dir::Etc::SourceParts={}", self.path("sources.list.d")),
            format!("Dir::State={}", self.path("state")),
            format!("Dir::State::status={}", self.path("state/status")),
            format!("Dir::Cache={}", self.path("cache")),
            "APT::Architecture=arm64".into(),
            "APT::Architectures=arm64".into(),
            "Acquire::Languages=none".into(),
            "APT::Sandbox::User=root".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    fn command(&self, program: &str, tail: &[&str]) -> Vec<String> {
        let mut c = vec![program.to_string()];
        c.extend(self.options());
        c.extend(tail.iter().map(|s| s.to_string()));
        c
    }

    /// `apt-get ... update`, failing when any index fails to download.
    pub fn update_command(&self) -> Vec<String> {
        self.command("apt-get", &["-q", "--error-on=any", "update"])
    }

    /// `apt-cache ... show PACKAGE`.
    pub fn show_command(&self, package: &str) -> Vec<String> {
        self.command("apt-cache", &["show", package])
    }

    /// `apt-get ... download PACKAGES` (into the current directory).
    pub fn download_command(&self, packages: &[&str]) -> Vec<String> {
        let mut tail = vec!["-q", "download"];
        tail.extend_from_slice(packages);
        self.command("apt-get", &tail)
    }

    /// Creates the private directories and writes `sources.list` and an empty dpkg status.
    fn prepare(&self) -> Result<(), FetchError> {
        for d in [
            "sources.list.d",
            "state/lists/partial",
            "cache/archives/partial",
        ] {
            std::fs::create_dir_all(self.dir.join(d)).map_err(io_error("creating", d))?;
        }
        std::fs::write(self.dir.join("sources.list"), self.sources_list())
            .map_err(io_error("writing", "sources.list"))?;
        let status = self.dir.join("state/status");
        if !status.exists() {
            std::fs::write(&status, "").map_err(io_error("writing", "state/status"))?;
        }
        Ok(())
    }
}

fn io_error<'a>(
    verb: &'static str,
    what: &'a str,
) -> impl FnOnce(std::io::Error) -> FetchError + 'a {
    move |e| FetchError(format!("{verb} {what}: {e}"))
}

/// From `apt-cache show` of the metapackage: the first package of its `Depends:` line that is a
/// kernel image (`linux-image-...`), without its version constraint.
pub fn parse_kernel_dependency(show: &str) -> Option<String> {
    let depends = show.lines().find_map(|l| l.strip_prefix("Depends:"))?;
    depends
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|name| name.starts_with("linux-image-"))
        .map(str::to_string)
}

/// The `Version:` of the first stanza of `apt-cache show`.
pub fn parse_version(show: &str) -> Option<String> {
    show.lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
}

/// Runs `argv` in `cwd`; its stdout, or a [`FetchError`] with the first `E:` line of its stderr
/// (apt's first error names the cause), else its last line.
fn run(argv: &[String], cwd: &Path) -> Result<String, FetchError> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| FetchError(format!("{} could not run: {e}", argv[0])))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .find(|l| l.starts_with("E:"))
            .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
            .unwrap_or("no message");
        return Err(FetchError(format!(
            "`{} {}` failed ({}): {}",
            argv[0],
            argv.last().map_or("", String::as_str),
            out.status,
            last.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The mirror: `$HOTMEM_LINUX_MIRROR` or [`DEFAULT_MIRROR`].
pub fn mirror() -> String {
    std::env::var(MIRROR_ENV)
        .ok()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_MIRROR.into())
}

/// Fetches (or finds in the cache) the kernel, the module and busybox under `dir` (see the
/// module docs).
pub fn fetch(dir: &Path, mirror: &str) -> Result<LinuxFiles, FetchError> {
    let stamp = dir.join(STAMP);
    if let Some(files) = std::fs::read_to_string(&stamp)
        .ok()
        .and_then(|t| LinuxFiles::from_stamp(&t, mirror))
        .filter(LinuxFiles::all_exist)
    {
        return Ok(files);
    }
    let apt = Apt::new(&dir.join("apt"), mirror);
    apt.prepare()?;
    run(&apt.update_command(), dir)?;
    let meta = format!("{KERNEL_META}/{KERNEL_SUITE}");
    let show = run(&apt.show_command(&meta), dir)?;
    let image = parse_kernel_dependency(&show)
        .ok_or_else(|| FetchError(format!("{meta} names no linux-image dependency")))?;
    let unsigned = format!("{image}-unsigned");
    let (package, show) = match run(&apt.show_command(&unsigned), dir) {
        Ok(show) => (unsigned, show),
        Err(_) => {
            let show = run(&apt.show_command(&image), dir)?;
            (image, show)
        }
    };
    let version = parse_version(&show).unwrap_or_default();

    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).map_err(io_error("creating", "debs"))?;
    run(&apt.download_command(&[&package, BUSYBOX_PACKAGE]), &debs)?;
    let find_deb = |prefix: &str| -> Result<PathBuf, FetchError> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&debs)
            .map_err(io_error("reading", "debs"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{prefix}_")) && n.ends_with(".deb"))
            })
            .collect();
        found.sort();
        found
            .pop()
            .ok_or_else(|| FetchError(format!("no {prefix}_*.deb after apt-get download")))
    };
    let kernel_deb = find_deb(&package)?;
    let busybox_deb = find_deb(BUSYBOX_PACKAGE)?;

    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).map_err(io_error("creating", "root"))?;
    extract_kernel(&kernel_deb, &root)?;
    let tool = |argv: &[&str]| run(&argv.iter().map(|s| s.to_string()).collect::<Vec<_>>(), dir);
    tool(&[
        "dpkg-deb",
        "-x",
        &busybox_deb.display().to_string(),
        &root.display().to_string(),
    ])?;

    let kernel = find_file(&root.join("boot"), |n| n.starts_with("vmlinuz-"))?;
    let module_xz = find_file(&root, |n| n == "virtio_mem.ko.xz")?;
    let module = dir.join("virtio_mem.ko");
    let ko = Command::new("xz")
        .args(["-dc"])
        .arg(&module_xz)
        .output()
        .map_err(|e| FetchError(format!("xz could not run: {e}")))?;
    if !ko.status.success() || ko.stdout.is_empty() {
        return Err(FetchError(format!(
            "xz -dc {} failed: {}",
            module_xz.display(),
            String::from_utf8_lossy(&ko.stderr).trim()
        )));
    }
    std::fs::write(&module, &ko.stdout).map_err(io_error("writing", "virtio_mem.ko"))?;
    let busybox = root.join("bin").join("busybox");
    let files = LinuxFiles {
        package: format!("{package}={version}"),
        kernel,
        module,
        busybox,
    };
    if !files.all_exist() {
        return Err(FetchError(format!("the packages lack a file: {files:?}")));
    }
    std::fs::write(&stamp, files.stamp(mirror)).map_err(io_error("writing", STAMP))?;
    Ok(files)
}

/// `dpkg-deb --fsys-tarfile DEB | tar -x -C ROOT` of the kernel image and `virtio_mem.ko.xz`
/// only (the modules tree is hundreds of MiB).
fn extract_kernel(deb: &Path, root: &Path) -> Result<(), FetchError> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| FetchError(format!("dpkg-deb could not run: {e}")))?;
    let Some(stdout) = dpkg.stdout.take() else {
        let _ = dpkg.kill();
        let _ = dpkg.wait();
        return Err(FetchError("dpkg-deb started without a pipe".into()));
    };
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(root)
        .args(["--wildcards", "./boot/vmlinuz-*", "*/virtio_mem.ko.xz"])
        .stdin(stdout)
        .status();
    let dpkg = dpkg.wait();
    match (dpkg, tar) {
        (Ok(d), Ok(t)) if d.success() && t.success() => Ok(()),
        (d, t) => Err(FetchError(format!(
            "extracting {}: dpkg-deb {d:?}, tar {t:?}",
            deb.display()
        ))),
    }
}

/// The first file under `dir` (recursively, in name order) whose name satisfies `want`.
fn find_file(dir: &Path, want: impl Fn(&str) -> bool + Copy) -> Result<PathBuf, FetchError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| FetchError(format!("reading {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in &entries {
        if p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(want) {
            return Ok(p.clone());
        }
    }
    for p in entries.iter().filter(|p| p.is_dir()) {
        if let Ok(found) = find_file(p, want) {
            return Ok(found);
        }
    }
    Err(FetchError(format!("no such file under {}", dir.display())))
}

/// What the bench does about Linux after the fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Boot Linux from these files and print both columns.
    Measure(LinuxFiles),
    /// Print hotmem's column alone; the line says why.
    OursAlone(String),
}

impl Plan {
    /// The plan for a fetch result: measure Linux when it was fetched, else our column alone
    /// with one line that names the mirror and the reason.
    pub fn decide(fetched: Result<LinuxFiles, FetchError>, mirror: &str) -> Plan {
        match fetched {
            Ok(files) => Plan::Measure(files),
            Err(e) => Plan::OursAlone(format!(
                "bench: Linux guest unavailable (apt via {mirror}: {e}); printing hotmem's \
                 column alone"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apt() -> Apt {
        Apt::new(
            Path::new("/w/target/linux/apt"),
            "http://mirror.example/debian/",
        )
    }

    #[test]
    fn sources_list_is_private_and_arm64() {
        assert_eq!(
            apt().sources_list(),
            "deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://mirror.example/debian bookworm main\n\
             deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://mirror.example/debian bookworm-backports main\n"
        );
    }

    #[test]
    fn apt_commands_use_only_private_paths() {
        let update = apt().update_command();
        assert_eq!(update[0], "apt-get");
        assert_eq!(
            &update[update.len() - 3..],
            ["-q", "--error-on=any", "update"]
        );
        let opts: Vec<&str> = update[1..update.len() - 3]
            .chunks(2)
            .map(|pair| {
                assert_eq!(pair[0], "-o");
                pair[1].as_str()
            })
            .collect();
        for want in [
            "Dir::Etc::SourceList=/w/target/linux/apt/sources.list",
            "Dir::Etc::SourceParts=/w/target/linux/apt/sources.list.d",
            "Dir::State=/w/target/linux/apt/state",
            "Dir::State::status=/w/target/linux/apt/state/status",
            "Dir::Cache=/w/target/linux/apt/cache",
            "APT::Architecture=arm64",
            "APT::Architectures=arm64",
        ] {
            assert!(opts.contains(&want), "{want} in {opts:?}");
        }
        // Every directory option points under the private root.
        for o in opts.iter().filter(|o| o.starts_with("Dir::")) {
            assert!(o.contains("=/w/target/linux/apt/"), "{o}");
        }
        let show = apt().show_command("linux-image-arm64/bookworm-backports");
        assert_eq!(show[0], "apt-cache");
        assert_eq!(
            &show[show.len() - 2..],
            ["show", "linux-image-arm64/bookworm-backports"]
        );
        let dl = apt().download_command(&["k", "busybox-static"]);
        assert_eq!(&dl[dl.len() - 3..], ["download", "k", "busybox-static"]);
        assert_eq!(dl[1..dl.len() - 4], update[1..update.len() - 3]);
    }

    #[test]
    fn kernel_dependency_and_version() {
        let show = "Package: linux-image-arm64\nSource: linux-signed-arm64\n\
                    Version: 6.12.95-1~bpo12+1\n\
                    Depends: linux-image-6.12.95+deb12-arm64 (= 6.12.95-1~bpo12+1)\n\
                    Description: Linux for 64-bit ARMv8 machines (meta-package)\n";
        assert_eq!(
            parse_kernel_dependency(show).as_deref(),
            Some("linux-image-6.12.95+deb12-arm64")
        );
        assert_eq!(parse_version(show).as_deref(), Some("6.12.95-1~bpo12+1"));
        let other = "Depends: kmod, initramfs-tools (>= 0.120) | linux-initramfs-tool\n";
        assert_eq!(parse_kernel_dependency(other), None);
        assert_eq!(
            parse_kernel_dependency("Depends: kmod, linux-image-6.1.0-9-arm64 (= 1)\n").as_deref(),
            Some("linux-image-6.1.0-9-arm64")
        );
    }

    #[test]
    fn stamp_round_trip_and_mirror_check() {
        let files = LinuxFiles {
            package: "linux-image-x-unsigned=1".into(),
            kernel: "/t/boot/vmlinuz-x".into(),
            module: "/t/virtio_mem.ko".into(),
            busybox: "/t/root/bin/busybox".into(),
        };
        let text = files.stamp("http://a/debian");
        assert_eq!(
            LinuxFiles::from_stamp(&text, "http://a/debian"),
            Some(files)
        );
        assert_eq!(LinuxFiles::from_stamp(&text, "http://b/debian"), None);
        assert_eq!(
            LinuxFiles::from_stamp("mirror=http://a/debian\n", "http://a/debian"),
            None
        );
    }

    #[test]
    fn unreachable_mirror_means_our_column_alone() {
        let err = FetchError("`apt-get update` failed: E: Could not connect".into());
        match Plan::decide(Err(err), "http://127.0.0.1:9/debian") {
            Plan::OursAlone(line) => {
                assert!(line.starts_with("bench: Linux guest unavailable"), "{line}");
                assert!(line.contains("http://127.0.0.1:9/debian"), "{line}");
                assert!(line.contains("Could not connect"), "{line}");
                assert!(line.ends_with("printing hotmem's column alone"), "{line}");
                assert!(!line.contains('\n'));
            }
            p => panic!("{p:?}"),
        }
        let files = LinuxFiles {
            package: "p=1".into(),
            kernel: "k".into(),
            module: "m".into(),
            busybox: "b".into(),
        };
        assert_eq!(
            Plan::decide(Ok(files.clone()), "http://a"),
            Plan::Measure(files)
        );
    }

    #[test]
    fn a_valid_stamp_needs_no_apt() {
        // The mirror is unreachable: only the cache can answer.
        let dir = tempfile::tempdir().unwrap();
        let mirror = "http://127.0.0.1:9/debian";
        let file = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, name).unwrap();
            p
        };
        let files = LinuxFiles {
            package: "linux-image-x-unsigned=1".into(),
            kernel: file("vmlinuz-x"),
            module: file("virtio_mem.ko"),
            busybox: file("busybox"),
        };
        std::fs::write(dir.path().join(STAMP), files.stamp(mirror)).unwrap();
        assert_eq!(fetch(dir.path(), mirror), Ok(files.clone()));
        assert!(!dir.path().join("apt").exists(), "apt was set up");
        // A file gone: the cache no longer answers and apt's failure is reported.
        std::fs::remove_file(&files.module).unwrap();
        assert!(fetch(dir.path(), mirror).is_err());
    }

    #[test]
    fn unreachable_fetch_fails_with_one_line() {
        // A mirror nobody listens on: apt fails fast with "connection refused". Needs apt-get on
        // the host; without it the failure is "could not run", which is one line as well.
        let dir = tempfile::tempdir().unwrap();
        let err = fetch(dir.path(), "http://127.0.0.1:9/debian").unwrap_err();
        assert!(!err.0.contains('\n'), "{err}");
        assert!(!dir.path().join(STAMP).exists());
    }
}
