//! A libvirt domain of the hotmem kernel: the filled template, the domain's lifecycle, and the
//! `virsh` operations on its virtio-mem devices.
//!
//! [`DomainSpec::render`] fills `qemu/libvirt/hotmem.xml`. [`Domain::define`] copies the image
//! where QEMU (user `libvirt-qemu`) can read it and defines the domain under a unique name;
//! [`Domain::start`] starts it paused, connects the [`Console`] to its serial socket and only
//! then resumes it (QEMU drops serial output while nobody is connected). `Drop` destroys and
//! undefines the domain and removes the image copy and the socket. [`parse_memory_devices`]
//! reads `virsh dumpxml`'s `<memory model='virtio-mem'>` elements (libvirt writes every size in
//! KiB; another unit is an error rather than a guess).

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{virsh, Transcript, DEFINE, IMAGES, REPORT_TAIL_LINES, SOCKETS, TEMPLATE, VIRSH};
use crate::console::Console;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::machine::{KIB, MIB};

/// Where the virtio-mem device of the domain sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// No `<address>`: libvirt puts it behind a `pcie-root-port` (and adds a spare one).
    Default,
    /// `<address type='pci' domain='0' bus='0' slot='N'/>`: directly on `pcie.0`.
    Bus0Slot(u8),
}

impl Placement {
    fn xml(self) -> String {
        match self {
            Placement::Default => String::new(),
            Placement::Bus0Slot(slot) => {
                format!("<address type='pci' domain='0' bus='0' slot='{slot}'/>")
            }
        }
    }
}

/// How the guest's serial console is wired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleKind {
    /// A unix socket that QEMU listens on (the harness connects a [`Console`]).
    Socket(PathBuf),
    /// A pty, for `virsh console`.
    Pty,
}

/// What fills the template's placeholders (see `qemu/libvirt/hotmem.xml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    /// Domain name.
    pub name: String,
    /// The image QEMU boots (already where it can read it).
    pub image: PathBuf,
    /// Boot RAM.
    pub ram_bytes: u64,
    /// The virtio-mem device's region.
    pub vmem_bytes: u64,
    /// Room in `maxMemory` for devices attached at run time.
    pub attach_bytes: u64,
    /// Where the device sits.
    pub placement: Placement,
    /// The serial console.
    pub console: ConsoleKind,
}

impl DomainSpec {
    /// The domain XML: [`TEMPLATE`] from `<domain` on (the comment that names the placeholders
    /// is left out) with every placeholder filled.
    pub fn render(&self) -> String {
        let body = TEMPLATE
            .find("<domain")
            .map_or(TEMPLATE, |at| &TEMPLATE[at..]);
        let console = match &self.console {
            ConsoleKind::Pty => "<serial type='pty'><target port='0'/></serial>".to_string(),
            ConsoleKind::Socket(path) => format!(
                "<serial type='unix'><source mode='bind' path='{}'/><target port='0'/></serial>",
                path.display()
            ),
        };
        let mib = |b: u64| (b / MIB).to_string();
        body.replace("@NAME@", &self.name)
            .replace("@IMAGE@", &self.image.display().to_string())
            .replace("@RAM_MIB@", &mib(self.ram_bytes))
            .replace(
                "@MAXMEM_MIB@",
                &mib(self.ram_bytes + self.vmem_bytes + self.attach_bytes),
            )
            .replace("@VMEM_MIB@", &mib(self.vmem_bytes))
            .replace("@ADDRESS@", &self.placement.xml())
            .replace("@CONSOLE@", &console)
    }
}

/// The XML of a virtio-mem device to attach: `size_bytes` on NUMA node 0, 2 MiB blocks,
/// `requested_bytes` requested, placed by libvirt.
pub fn virtio_mem_xml(size_bytes: u64, requested_bytes: u64) -> String {
    format!(
        "<memory model='virtio-mem'>\n  <target>\n    <size unit='KiB'>{}</size>\n    \
         <node>0</node>\n    <block unit='KiB'>2048</block>\n    \
         <requested unit='KiB'>{}</requested>\n  </target>\n</memory>\n",
        size_bytes / KIB,
        requested_bytes / KIB
    )
}

/// A virtio-mem device as `virsh dumpxml` shows it (sizes in KiB, as libvirt writes them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryDevice {
    /// `<alias name=…>` (`virtiomem0`, …); empty when the domain is not running.
    pub alias: String,
    /// `<size>`.
    pub size_kib: u64,
    /// `<requested>`.
    pub requested_kib: u64,
    /// `<current>`: what the guest plugged (only while running).
    pub current_kib: Option<u64>,
    /// The PCI address's bus (`0x01`: behind the first root port).
    pub pci_bus: Option<u64>,
    /// `<address base=…>` in the target: the guest physical start of the region (QMP's
    /// `memaddr`, `vmem`'s `addr`), once libvirt has placed it.
    pub base: Option<u64>,
}

/// Every `<memory model='virtio-mem'>` of a domain XML, in order. Sizes must be in KiB (libvirt
/// writes them so); anything else is an error.
pub fn parse_memory_devices(xml: &str) -> Result<Vec<MemoryDevice>> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find("<memory model='virtio-mem'") {
        let block = &rest[at..];
        let end = block
            .find("</memory>")
            .ok_or_else(|| Error::Protocol("dumpxml: unterminated <memory>".into()))?;
        let block = &block[..end];
        rest = &rest[at + end..];
        let kib = |tag: &str| -> Result<Option<u64>> {
            let Some(open) = block.find(&format!("<{tag} ")) else {
                return Ok(None);
            };
            let elem = &block[open..];
            let bad = || Error::Protocol(format!("dumpxml: cannot read <{tag}> in {block}"));
            let close = elem.find('>').ok_or_else(bad)?;
            if !elem[..close].contains("unit='KiB'") {
                return Err(bad());
            }
            let text = &elem[close + 1..];
            let n = text.find('<').ok_or_else(bad)?;
            text[..n].trim().parse().map(Some).map_err(|_| bad())
        };
        let attr = |elem: &str, name: &str| -> Option<String> {
            let e = &block[block.find(elem)?..];
            let e = &e[..e.find('>')?];
            let v = &e[e.find(&format!("{name}='"))? + name.len() + 2..];
            Some(v[..v.find('\'')?].to_string())
        };
        let need = |tag: &str| {
            kib(tag)?.ok_or_else(|| Error::Protocol(format!("dumpxml: no <{tag}> in {block}")))
        };
        out.push(MemoryDevice {
            alias: attr("<alias ", "name").unwrap_or_default(),
            size_kib: need("size")?,
            requested_kib: need("requested")?,
            current_kib: kib("current")?,
            pci_bus: attr("<address type='pci'", "bus").and_then(|b| hex(&b)),
            base: attr("<address base=", "base").and_then(|b| hex(&b)),
        });
    }
    Ok(out)
}

/// The whole `<memory model='virtio-mem'>…</memory>` element of the device aliased `alias` in
/// a domain XML: what `virsh detach-device` is given, so libvirt matches exactly the live
/// device (its target address and PCI address included).
pub fn memory_device_element(xml: &str, alias: &str) -> Option<String> {
    let mut rest = xml;
    while let Some(at) = rest.find("<memory model='virtio-mem'") {
        let block = &rest[at..];
        let end = block.find("</memory>")? + "</memory>".len();
        if block[..end].contains(&format!("<alias name='{alias}'/>")) {
            return Some(block[..end].to_string());
        }
        rest = &rest[at + end..];
    }
    None
}

fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

static NEXT_DOMAIN: AtomicU32 = AtomicU32::new(0);

/// A defined libvirt domain. See the module docs.
pub struct Domain {
    name: String,
    spec: DomainSpec,
    console: Option<Console>,
    log: Transcript,
    dir: tempfile::TempDir,
}

impl Domain {
    /// A fresh domain name: `hotmem-<pid>-<n>`.
    pub fn unique_name() -> String {
        let n = NEXT_DOMAIN.fetch_add(1, Ordering::Relaxed);
        format!("hotmem-{}-{n}", std::process::id())
    }

    /// The serial socket a domain called `name` listens on with [`ConsoleKind::Socket`].
    pub fn socket_path(name: &str) -> PathBuf {
        Path::new(SOCKETS).join(format!("{name}.console.sock"))
    }

    /// Copies `image` to [`IMAGES`] as `<name>.img` (mode 644), sets `spec.image` to it and
    /// defines the domain.
    pub fn define(mut spec: DomainSpec, image: &Path) -> Result<Domain> {
        if !image.is_file() {
            return Err(Error::ImageMissing {
                path: image.to_path_buf(),
            });
        }
        let copy = Path::new(IMAGES).join(format!("{}.img", spec.name));
        std::fs::copy(image, &copy)
            .and_then(|_| std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)))
            .map_err(|e| {
                Error::io(
                    format!("copying {} to {}", image.display(), copy.display()),
                    e,
                )
            })?;
        spec.image = copy;
        let dir = tempfile::Builder::new()
            .prefix("hotmem-libvirt-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary directory", e))?;
        let xml = dir.path().join("domain.xml");
        std::fs::write(&xml, spec.render())
            .map_err(|e| Error::io(format!("writing {}", xml.display()), e))?;
        let domain = Domain {
            name: spec.name.clone(),
            spec,
            console: None,
            log: Transcript::new(),
            dir,
        };
        domain.virsh(&["define", &xml.display().to_string()], DEFINE)?;
        Ok(domain)
    }

    /// The domain's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `virsh args...` and records it in the transcript.
    pub fn virsh(&self, args: &[&str], deadline: impl Into<Deadline>) -> Result<String> {
        virsh(args, deadline, &self.log)
    }

    /// `virsh start --paused`, then, with [`ConsoleKind::Socket`], connects the console.
    pub fn start_paused(&mut self) -> Result<()> {
        self.virsh(&["start", &self.name, "--paused"], VIRSH)?;
        if let ConsoleKind::Socket(path) = &self.spec.console {
            let stream = UnixStream::connect(path)
                .map_err(|e| Error::io(format!("connecting to {}", path.display()), e))?;
            let reader = stream
                .try_clone()
                .map_err(|e| Error::io("cloning the console socket", e))?;
            self.console = Some(Console::new(reader, stream));
        }
        Ok(())
    }

    /// Starts the domain paused, connects the console (with [`ConsoleKind::Socket`]), resumes it.
    pub fn start(&mut self) -> Result<()> {
        self.start_paused()?;
        self.virsh(&["resume", &self.name], VIRSH).map(drop)
    }

    /// The guest console (after [`Domain::start`] with a socket console).
    pub fn console(&mut self) -> Result<&mut Console> {
        self.console
            .as_mut()
            .ok_or_else(|| Error::Protocol(format!("{}: no console socket", self.name)))
    }

    /// `virsh update-memory-device DOM [--alias A] --requested-size <KiB>KiB`.
    pub fn update_memory_device(&self, alias: Option<&str>, requested_bytes: u64) -> Result<()> {
        let size = format!("{}KiB", requested_bytes / KIB);
        let mut args = vec!["update-memory-device", &self.name];
        if let Some(a) = alias {
            args.extend(["--alias", a]);
        }
        args.extend(["--requested-size", &size]);
        self.virsh(&args, VIRSH).map(drop)
    }

    /// The virtio-mem devices of the live XML (`virsh dumpxml`).
    pub fn memory_devices(&self) -> Result<Vec<MemoryDevice>> {
        parse_memory_devices(&self.virsh(&["dumpxml", &self.name], VIRSH)?)
    }

    /// The live XML element of the virtio-mem device aliased `alias` (`virsh dumpxml`).
    pub fn memory_device_xml(&self, alias: &str) -> Result<String> {
        let xml = self.virsh(&["dumpxml", &self.name], VIRSH)?;
        memory_device_element(&xml, alias)
            .ok_or_else(|| Error::Protocol(format!("dumpxml: no virtio-mem device {alias}")))
    }

    /// `virsh attach-device DOM FILE --live` with `xml` written to a file.
    pub fn attach(&self, xml: &str) -> Result<()> {
        let file = self.device_file(xml)?;
        self.virsh(&["attach-device", &self.name, &file, "--live"], VIRSH)
            .map(drop)
    }

    /// `virsh detach-device DOM FILE --live`: libvirt finds the device matching `xml` and asks
    /// for its removal; it is gone at the `device-removed` event.
    pub fn detach(&self, xml: &str) -> Result<()> {
        let file = self.device_file(xml)?;
        self.virsh(&["detach-device", &self.name, &file, "--live"], VIRSH)
            .map(drop)
    }

    fn device_file(&self, xml: &str) -> Result<String> {
        let n = NEXT_DOMAIN.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("device-{n}.xml"));
        std::fs::write(&path, xml)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(path.display().to_string())
    }

    /// What a failing test prints: the XML, the virsh transcript, the end of libvirt's QEMU log
    /// and the console tail.
    pub fn report(&self) -> String {
        let mut r = String::new();
        let _ = writeln!(
            r,
            "==== libvirt domain {}:\n{}",
            self.name,
            self.spec.render()
        );
        let _ = writeln!(r, "==== virsh transcript:\n{}", self.log.render());
        let qemu_log = std::fs::read_to_string(format!("/var/log/libvirt/qemu/{}.log", self.name))
            .unwrap_or_default();
        let tail: Vec<&str> = qemu_log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let _ = writeln!(r, "==== QEMU log (libvirt):\n{}", tail.join("\n"));
        if let Some(c) = &self.console {
            let _ = writeln!(
                r,
                "==== console (last {REPORT_TAIL_LINES} lines):\n{}",
                c.tail(REPORT_TAIL_LINES)
            );
        }
        let _ = writeln!(r, "==== end of report");
        r
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        let _ = self.virsh(&["destroy", &self.name], VIRSH);
        let _ = self.virsh(&["undefine", &self.name], VIRSH);
        let _ = std::fs::remove_file(&self.spec.image);
        if let ConsoleKind::Socket(path) = &self.spec.console {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::GIB;

    fn spec(placement: Placement, console: ConsoleKind) -> DomainSpec {
        DomainSpec {
            name: "hotmem-t".into(),
            image: "/var/lib/libvirt/images/hotmem-t.img".into(),
            ram_bytes: GIB,
            vmem_bytes: 4 * GIB,
            attach_bytes: GIB,
            placement,
            console,
        }
    }

    #[test]
    fn template_placeholders_are_all_filled() {
        let socket = ConsoleKind::Socket("/s/c.sock".into());
        let xml = spec(Placement::Bus0Slot(2), socket).render();
        assert!(
            !xml.contains("@NAME@") && !xml.contains("@CONSOLE@"),
            "{xml}"
        );
        for want in [
            "<name>hotmem-t</name>",
            "<kernel>/var/lib/libvirt/images/hotmem-t.img</kernel>",
            "<maxMemory slots='4' unit='MiB'>6144</maxMemory>",
            "<cell id='0' cpus='0-1' memory='1024' unit='MiB'/>",
            "<size unit='MiB'>4096</size>",
            "<address type='pci' domain='0' bus='0' slot='2'/>",
            "<serial type='unix'><source mode='bind' path='/s/c.sock'/>",
        ] {
            assert!(xml.contains(want), "{want} missing:\n{xml}");
        }
        assert!(!xml.contains('@'), "a placeholder is left:\n{xml}");
        let default = spec(Placement::Default, ConsoleKind::Pty).render();
        assert!(!default.contains("<address"), "{default}");
        assert!(default.contains("<serial type='pty'>"), "{default}");
    }

    #[test]
    fn dumpxml_memory_devices() {
        let xml = "<domain><devices>
    <memory model='virtio-mem'>
      <target>
        <size unit='KiB'>4194304</size>
        <node>0</node>
        <block unit='KiB'>2048</block>
        <requested unit='KiB'>1048576</requested>
        <current unit='KiB'>1048576</current>
        <address base='0x80000000'/>
      </target>
      <alias name='virtiomem0'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </memory>
    <memory model='virtio-mem'>
      <target>
        <size unit='KiB'>1048576</size>
        <requested unit='KiB'>0</requested>
      </target>
    </memory>
  </devices></domain>";
        let devs = parse_memory_devices(xml).unwrap();
        assert_eq!(
            devs,
            [
                MemoryDevice {
                    alias: "virtiomem0".into(),
                    size_kib: 4194304,
                    requested_kib: 1048576,
                    current_kib: Some(1048576),
                    pci_bus: Some(1),
                    base: Some(0x8000_0000),
                },
                MemoryDevice {
                    size_kib: 1048576,
                    ..MemoryDevice::default()
                }
            ]
        );
        let mib = xml.replace("<size unit='KiB'>4194304", "<size unit='MiB'>4096");
        assert!(parse_memory_devices(&mib).is_err(), "a unit other than KiB");
        assert!(parse_memory_devices("<memory model='virtio-mem'><target>").is_err());
    }

    #[test]
    fn the_element_of_one_alias() {
        let xml = "<devices><memory model='virtio-mem'><target/><alias name='virtiomem0'/>\
                   </memory><memory model='virtio-mem'><target><address base='0x1'/></target>\
                   <alias name='virtiomem1'/></memory></devices>";
        assert_eq!(
            memory_device_element(xml, "virtiomem1").as_deref(),
            Some(
                "<memory model='virtio-mem'><target><address base='0x1'/></target>\
                 <alias name='virtiomem1'/></memory>"
            )
        );
        assert!(memory_device_element(xml, "virtiomem0")
            .unwrap()
            .contains("virtiomem0"));
        assert_eq!(memory_device_element(xml, "virtiomem2"), None);
    }

    #[test]
    fn attach_xml_is_kib() {
        let xml = virtio_mem_xml(GIB, 0);
        assert_eq!(
            parse_memory_devices(&xml).unwrap(),
            [MemoryDevice {
                size_kib: 1048576,
                ..MemoryDevice::default()
            }]
        );
    }
}
