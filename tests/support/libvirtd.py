"""A private libvirtd (plus virtlogd) for tests and benchmarks.

Nothing here touches or depends on a system libvirt. As root, libvirt's QEMU driver uses
fixed paths (/etc/libvirt/qemu.conf, /run/libvirt, /var/lib/libvirt, ...) and takes a
lock in /run/libvirt/qemu, so a second root libvirtd cannot simply be pointed elsewhere
by configuration. `PrivateLibvirtd` therefore starts virtlogd and libvirtd inside their
own mount namespace (`unshare --mount --propagation private`) in which

    /run                 is a fresh tmpfs (hides a host dbus / systemd: nothing uses them)
    /run/libvirt         <- <base>/run      virtlogd socket, QEMU driver state, pidfiles
    /etc/libvirt         <- <base>/etc      our libvirtd.conf / qemu.conf / virtlogd.conf
    /var/lib/libvirt     <- <base>/lib
    /var/log/libvirt     <- <base>/log      per-domain QEMU logs (<base>/log/qemu/NAME.log)
    /var/cache/libvirt   <- <base>/cache    QEMU capabilities cache

are bind mounts of a short private directory under /tmp. The client socket lives at
`<base>/sock/libvirt-sock` (libvirtd.conf `unix_sock_dir`), visible from the host, so
the connection URI is `qemu:///system?socket=<base>/sock/libvirt-sock`.

The private qemu.conf runs QEMU as root (no `libvirt-qemu` image permission trouble),
with no security driver, no per-domain mount namespace and no cgroups (there is no
systemd/machined here); there are no network definitions, so no default network.

    with PrivateLibvirtd() as lv:
        conn = lv.connect()
        dom = conn.createXML(xml, 0)

`stop()` destroys every domain it can list, kills libvirtd and virtlogd, then kills every
process left in the private mount namespace and every QEMU whose pid is in the private
QEMU driver state dir, and removes the directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

from tests.support.procs import alive, kill_all, pids_mentioning

LIBVIRTD = shutil.which("libvirtd", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
VIRTLOGD = shutil.which("virtlogd", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
UNSHARE = shutil.which("unshare", path=os.environ.get("PATH", "") + ":/usr/bin:/bin")

# qemu.conf for the private daemon. Values are written verbatim (already in conf syntax).
QEMU_CONF: dict[str, str] = {
    "user": '"root"',
    "group": '"root"',
    "dynamic_ownership": "0",
    "remember_owner": "0",
    "security_driver": '"none"',
    "namespaces": "[ ]",
    "cgroup_controllers": "[ ]",
    "stdio_handler": '"logd"',
}

_BINDS = (  # (private subdir, path inside the namespace)
    ("run", "/run/libvirt"),
    ("etc", "/etc/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("log", "/var/log/libvirt"),
    ("cache", "/var/cache/libvirt"),
)


def firmware_domain_xml(name: str, memory_mib: int = 256, emulator: str | None = None) -> str:
    """A transient firmware-only q35 TCG domain: no disks, no NICs, no display."""
    emulator = emulator or shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{emulator}</emulator>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
"""


class LibvirtdUnavailable(RuntimeError):
    """libvirt-python, libvirtd/virtlogd, root or mount namespaces are missing."""


def unavailable_reason() -> str | None:
    """Why a private libvirtd cannot be started here, or None if it can."""
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt-python is not installed"
    if not LIBVIRTD or not VIRTLOGD:
        return "libvirtd/virtlogd are not installed"
    if not UNSHARE:
        return "unshare (util-linux) is not installed"
    if os.geteuid() != 0:
        return "a private system libvirtd needs root"
    probe = subprocess.run([UNSHARE, "--mount", "--propagation", "private", "--", "true"],
                           stdin=subprocess.DEVNULL, capture_output=True)
    if probe.returncode != 0:
        return f"cannot create a mount namespace: {probe.stderr.decode(errors='replace').strip()}"
    return None


def _quiet_libvirt_errors() -> None:
    import libvirt

    # libvirt-python prints every error to stderr by default; we raise instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class PrivateLibvirtd:
    def __init__(self, base: str | None = None, qemu_conf: dict[str, str] | None = None,
                 host_uuid: str | None = None):
        """`host_uuid` sets libvirtd.conf's host_uuid: libvirt refuses to migrate a domain to a
        daemon with its own host UUID ("same host"), so a second daemon for migration tests
        needs one of its own (the default is read from the machine's SMBIOS)."""
        self.base = base or tempfile.mkdtemp(prefix="lvt", dir="/tmp")
        self.host_uuid = host_uuid
        self._own_base = base is None
        self.sock_dir = os.path.join(self.base, "sock")
        self.socket = os.path.join(self.sock_dir, "libvirt-sock")
        self.uri = f"qemu:///system?socket={self.socket}"
        self.log_path = os.path.join(self.base, "libvirtd.log")
        self.out_path = os.path.join(self.base, "out.log")
        self.libvirtd_pidfile = os.path.join(self.base, "libvirtd.pid")
        self.virtlogd_pidfile = os.path.join(self.base, "virtlogd.pid")
        self.qemu_conf = dict(QEMU_CONF, **(qemu_conf or {}))
        self.proc: subprocess.Popen | None = None
        self.mntns: str | None = None
        self._conns: list[Any] = []

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> PrivateLibvirtd:
        reason = unavailable_reason()
        if reason:
            raise LibvirtdUnavailable(reason)
        import libvirt

        _quiet_libvirt_errors()
        self._write_config()
        out = open(self.out_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [UNSHARE, "--mount", "--propagation", "private", "--", "/bin/sh", "-ec", self._script()],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
            )
        finally:
            out.close()
        # unshare and sh exec: self.proc.pid ends up being libvirtd itself.
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise LibvirtdUnavailable(
                        f"private libvirtd exited with {self.proc.returncode}:\n{self.log()}")
                if self.mntns is None:
                    self.mntns = self._private_mntns()
                if os.path.exists(self.socket):
                    try:
                        conn = libvirt.open(self.uri)
                    except libvirt.libvirtError:
                        pass
                    else:
                        conn.close()
                        return self
                if time.monotonic() > deadline:
                    raise LibvirtdUnavailable(f"private libvirtd did not answer in {timeout}s:\n{self.log()}")
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise

    def connect(self) -> Any:
        """A new `libvirt.virConnect` to the private daemon (closed by `stop()`)."""
        import libvirt

        conn = libvirt.open(self.uri)
        self._conns.append(conn)
        return conn

    def qemu_pids(self) -> list[int]:
        """Pids of QEMU processes the private daemon started (from its driver pidfiles)."""
        out = []
        state = os.path.join(self.base, "run", "qemu")
        try:
            names = os.listdir(state)
        except OSError:
            return []
        for name in names:
            if not name.endswith(".pid") or name == "driver.pid":
                continue
            try:
                with open(os.path.join(state, name)) as f:
                    pid = int(f.read().strip() or 0)
            except (OSError, ValueError):
                continue
            if pid > 0 and alive(pid) and b"qemu" in _cmdline(pid):
                out.append(pid)
        return out

    def pids(self) -> list[int]:
        """Every live process belonging to this private libvirt (daemons and QEMUs)."""
        found = set(self.qemu_pids())
        if self.mntns:
            found.update(_pids_in_mntns(self.mntns))
        found.update(pids_mentioning(self.base))
        for pidfile in (self.libvirtd_pidfile, self.virtlogd_pidfile):
            pid = _read_pid(pidfile)
            if pid and alive(pid):
                found.add(pid)
        if self.proc is not None and self.proc.poll() is None:
            found.add(self.proc.pid)
        found.discard(os.getpid())
        return sorted(found)

    def stop(self) -> None:
        # 1. destroy domains politely (libvirt cleans its state and QEMU exits)
        try:
            self._destroy_domains()
        except Exception:
            pass
        for conn in self._conns:
            try:
                conn.close()
            except Exception:
                pass
        self._conns = []
        # 2. the daemons
        qemus = self.qemu_pids()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        vl = _read_pid(self.virtlogd_pidfile)
        if vl and alive(vl) and b"virtlogd" in _cmdline(vl):
            kill_all([vl])
        # 3. anything left: QEMUs from pidfiles, whatever lives in our namespace
        kill_all(sorted(set(qemus) | set(self.pids())))
        if self.proc is not None:
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PrivateLibvirtd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        text = []
        for path in (self.out_path, self.log_path):
            try:
                with open(path, errors="replace") as f:
                    text.append(f.read()[-4000:])
            except OSError:
                pass
        return "\n".join(text)

    # -- internals ---------------------------------------------------------------------

    def _destroy_domains(self) -> None:
        if self.proc is None or self.proc.poll() is not None or not os.path.exists(self.socket):
            return
        import libvirt

        conn = libvirt.open(self.uri)
        try:
            for dom in conn.listAllDomains(0):
                try:
                    if dom.isActive():
                        dom.destroy()
                except libvirt.libvirtError:
                    pass
                try:
                    if dom.isPersistent():
                        dom.undefine()
                except libvirt.libvirtError:
                    pass
        finally:
            conn.close()

    def _write_config(self) -> None:
        for sub in ("sock", *(s for s, _ in _BINDS)):
            os.makedirs(os.path.join(self.base, sub), exist_ok=True)
        os.chmod(self.base, 0o700)
        etc = os.path.join(self.base, "etc")
        _write(os.path.join(etc, "libvirtd.conf"), {
            "unix_sock_dir": f'"{self.sock_dir}"',
            "unix_sock_rw_perms": '"0700"',
            "unix_sock_ro_perms": '"0700"',
            "unix_sock_admin_perms": '"0700"',
            "auth_unix_rw": '"none"',
            "auth_unix_ro": '"none"',
            "listen_tls": "0",
            "listen_tcp": "0",
            "log_outputs": f'"3:file:{self.log_path}"',
            **({"host_uuid": f'"{self.host_uuid}"'} if self.host_uuid else {}),
        })
        _write(os.path.join(etc, "virtlogd.conf"), {
            "log_outputs": f'"3:file:{os.path.join(self.base, "virtlogd.log")}"',
        })
        _write(os.path.join(etc, "qemu.conf"), self.qemu_conf)
        # libvirt.conf / other drivers' configs: absent means defaults. No networks,
        # storage pools or nwfilters are defined, so nothing is autostarted.

    def _script(self) -> str:
        q = _shquote
        lines = ["mount -t tmpfs -o mode=0755 kvmd-lvt /run", "mkdir -p /run/libvirt"]
        for sub, target in _BINDS:
            lines.append(f"mount --bind {q(os.path.join(self.base, sub))} {q(target)}")
        lines.append(f"virtlogd -d -f {q(os.path.join(self.base, 'etc', 'virtlogd.conf'))} "
                     f"-p {q(self.virtlogd_pidfile)}")
        lines.append(f"exec libvirtd -f {q(os.path.join(self.base, 'etc', 'libvirtd.conf'))} "
                     f"-p {q(self.libvirtd_pidfile)}")
        return "\n".join(lines) + "\n"

    def _private_mntns(self) -> str | None:
        assert self.proc is not None
        try:
            ns = os.readlink(f"/proc/{self.proc.pid}/ns/mnt")
        except OSError:
            return None
        return ns if ns != os.readlink("/proc/self/ns/mnt") else None


def _write(path: str, settings: dict[str, str]) -> None:
    with open(path, "w") as f:
        f.write("# written by tests/support/libvirtd.py\n")
        for key, value in settings.items():
            f.write(f"{key} = {value}\n")


def _shquote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _pids_in_mntns(ns: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/mnt") == ns:
                out.append(int(entry))
        except OSError:
            continue
    return out
