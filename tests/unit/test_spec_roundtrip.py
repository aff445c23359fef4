"""Property: any valid spec document survives parse -> to_dict -> parse and dumps -> loads."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmd.spec import dumps, from_dict, loads, to_dict
from kvmd.spec import model as m

UNITS = ["", "B", "K", "KB", "KiB", "k", "M", "MB", "MiB", "mib", "G", "GB", "GiB", "T", "TiB"]
MULT = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
        "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40}
MIN_MEM = 16 << 20

names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}\Z")
devnames = st.from_regex(r"\A[a-z][a-z0-9_-]{0,19}\Z")
ifnames = st.from_regex(r"\A[A-Za-z0-9_.:-]{1,15}\Z")
serials = st.from_regex(r"\A[A-Za-z0-9_.-]{1,20}\Z")
# any text YAML and JSON can carry (no NUL, no lone surrogates)
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30)
paths = st.builds(lambda parts: "/" + "/".join(parts),
                  st.lists(st.text(st.characters(blacklist_categories=("Cs",),
                                                 blacklist_characters="\0/"), min_size=1, max_size=8),
                           min_size=1, max_size=3))


@st.composite
def sizes(draw, minimum: int = MIN_MEM):
    """A size >= minimum, spelled with a random unit (or as a bare integer)."""
    unit = draw(st.sampled_from(UNITS))
    mult = MULT[unit.lower()]
    n = draw(st.integers(min_value=-(-minimum // mult), max_value=max(-(-minimum // mult), (64 << 30) // mult)))
    if unit == "" and draw(st.booleans()):
        return n  # a bare int, not a string
    return f"{n}{unit}"


def size_bytes(value) -> int:
    if isinstance(value, int):
        return value
    digits = value.rstrip(string.ascii_letters)
    return int(digits) * MULT[value[len(digits):].lower()]


@st.composite
def cpus(draw):
    cpu: dict = {}
    if draw(st.booleans()):
        cpu["count"] = draw(st.integers(1, 64))
    if draw(st.booleans()):
        cpu["model"] = draw(st.sampled_from(["host", "qemu64", "max", "Skylake-Server,+vmx"]))
    if draw(st.booleans()):
        count = cpu.get("count", 1)
        sockets, cores, threads = (draw(st.integers(1, 4)) for _ in range(3))
        while sockets * cores * threads < count:
            sockets += 1
        cpu.update(sockets=sockets, cores=cores, threads=threads)
    elif draw(st.booleans()):
        cpu[draw(st.sampled_from(["sockets", "cores", "threads"]))] = draw(st.integers(1, 8))
    return cpu


@st.composite
def memories(draw):
    mem: dict = {}
    if draw(st.booleans()):
        mem["size"] = draw(sizes())
    if draw(st.booleans()):
        mem["max"] = draw(sizes(minimum=max(MIN_MEM, size_bytes(mem.get("size", 256 << 20)))))
    if draw(st.booleans()):
        mem["balloon"] = draw(st.booleans())
    return mem


@st.composite
def boots(draw):
    boot: dict = {}
    firmware = draw(st.sampled_from([None, *m.FIRMWARES]))
    if firmware:
        boot["firmware"] = firmware
    if draw(st.booleans()):
        boot["kernel"] = draw(paths)
        if draw(st.booleans()):
            boot["initrd"] = draw(paths)
        if draw(st.booleans()):
            boot["cmdline"] = draw(text)
    if firmware == "uefi" and draw(st.booleans()):
        boot["nvram"] = draw(paths)
    if draw(st.booleans()):
        boot["order"] = draw(st.permutations(m.BOOT_DEVICES).flatmap(
            lambda p: st.integers(0, len(p)).map(lambda n: list(p[:n]))))
    return boot


@st.composite
def disks(draw, name: str | None, serial: str | None, slot: int | None):
    media = draw(st.sampled_from(m.DISK_MEDIA))
    disk: dict = {"media": media} if draw(st.booleans()) or media == "cdrom" else {}
    if name is not None:
        disk["name"] = name
    if media == "disk" or draw(st.booleans()):
        disk["path"] = draw(paths)
    if draw(st.booleans()):
        disk["format"] = draw(st.sampled_from(m.DISK_FORMATS))
    buses = ("sata", "scsi") if media == "cdrom" else m.DISK_BUSES
    if draw(st.booleans()):
        disk["bus"] = draw(st.sampled_from(buses))
    if media == "cdrom":
        if draw(st.booleans()):
            disk["readonly"] = True
    elif draw(st.booleans()):
        disk["readonly"] = draw(st.booleans())
    cache = draw(st.sampled_from([None, *m.CACHE_MODES]))
    if cache:
        disk["cache"] = cache
    aios = m.AIO_MODES if cache in ("none", "directsync") else ("threads", "io_uring")
    if draw(st.booleans()):
        disk["aio"] = draw(st.sampled_from(aios))
    if serial is not None:
        disk["serial"] = serial
    if draw(st.booleans()):
        disk["bootIndex"] = draw(st.integers(0, 20))
    if slot is not None:
        disk["slot"] = slot
    return disk


@st.composite
def nics(draw, name: str | None, mac: str | None, slot: int | None):
    nic: dict = {}
    if name is not None:
        nic["name"] = name
    if mac is not None:
        nic["mac"] = mac
    if draw(st.booleans()):
        nic["model"] = draw(st.sampled_from(m.NIC_MODELS))
    backend = draw(st.sampled_from([None, *m.NIC_BACKENDS]))
    if backend:
        nic["backend"] = backend
    if backend == "tap":
        which = draw(st.sampled_from([("bridge",), ("tap",), ("bridge", "tap")]))
        for key in which:
            nic[key] = draw(ifnames)
    if draw(st.booleans()):
        nic["bootIndex"] = draw(st.integers(0, 20))
    if slot is not None:
        nic["slot"] = slot
    return nic


unicast_macs = st.tuples(st.integers(0, 127).map(lambda b: b * 2),
                         *[st.integers(0, 255)] * 5).map(
    lambda octets: ":".join(f"{o:02x}" for o in octets)).flatmap(
    lambda mac: st.sampled_from([mac, mac.upper()]))


@st.composite
def device_lists(draw):
    """Disks and NICs whose names, serials, MACs and slots are unique where given."""
    n_disks, n_nics = draw(st.integers(0, 4)), draw(st.integers(0, 3))
    dnames = draw(st.lists(devnames, min_size=n_disks, max_size=n_disks, unique=True))
    nnames = draw(st.lists(devnames, min_size=n_nics, max_size=n_nics, unique=True))
    dserials = draw(st.lists(serials, min_size=n_disks, max_size=n_disks, unique=True))
    macs = draw(st.lists(unicast_macs, min_size=n_nics, max_size=n_nics, unique_by=str.lower))
    slots = draw(st.lists(st.integers(0, 255), min_size=n_disks + n_nics, max_size=n_disks + n_nics,
                          unique=True))
    out_disks, out_nics = [], []
    for i in range(n_disks):
        out_disks.append(draw(disks(
            dnames[i] if draw(st.booleans()) else None,
            dserials[i] if draw(st.booleans()) else None,
            slots[i] if draw(st.booleans()) else None)))
    for i in range(n_nics):
        out_nics.append(draw(nics(
            nnames[i] if draw(st.booleans()) else None,
            macs[i] if draw(st.booleans()) else None,
            slots[n_disks + i] if draw(st.booleans()) else None)))
    # default names (disk<i>, net<i>) must not clash with given ones
    for prefix, items in (("disk", out_disks), ("net", out_nics)):
        given_names = {d["name"] for d in items if "name" in d}
        for i, d in enumerate(items):
            if "name" not in d and f"{prefix}{i}" in given_names:
                d["name"] = f"{prefix}{i}x"[:20] if f"{prefix}{i}x" not in given_names else f"z{prefix}{i}"
    return out_disks, out_nics


@st.composite
def graphics(draw):
    out = []
    for kind in draw(st.lists(st.sampled_from(m.GRAPHICS_TYPES), unique=True, max_size=2)):
        g: dict = {"type": kind} if kind == "spice" or draw(st.booleans()) else {}
        if draw(st.booleans()):
            g["listen"] = draw(st.sampled_from(["127.0.0.1", "0.0.0.0", "::1", "::"]))
        if draw(st.booleans()):
            g["port"] = draw(st.sampled_from([0]) | st.integers(5900, 65535)) if kind == "vnc" \
                else draw(st.integers(0, 65535))
        if draw(st.booleans()):
            g["password"] = draw(text)
        out.append(g)
    return out


json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | \
    st.floats(allow_nan=False) | text
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(text, children, max_size=4), max_leaves=12)
metadata = st.dictionaries(text, json_values, max_size=5)


@st.composite
def spec_documents(draw):
    doc: dict = {"name": draw(names)}
    if draw(st.booleans()):
        doc["apiVersion"] = m.API_VERSION
    if draw(st.booleans()):
        u = draw(st.uuids())
        doc["uuid"] = draw(st.sampled_from([str(u), u.hex, str(u).upper()]))
    if draw(st.booleans()):
        doc["machine"] = draw(st.sampled_from(["q35", "pc", "pc-q35-7.2", "pc-i440fx-7.2"]))
    for key, strategy in (("cpu", cpus()), ("memory", memories()), ("boot", boots()),
                          ("graphics", graphics()), ("metadata", metadata)):
        if draw(st.booleans()):
            doc[key] = draw(strategy)
    d, n = draw(device_lists())
    if d or draw(st.booleans()):
        doc["disks"] = d
    if n or draw(st.booleans()):
        doc["nics"] = n
    if draw(st.booleans()):
        stype = draw(st.sampled_from(m.SERIAL_TYPES))
        doc["serial"] = {"type": stype, "path": draw(paths)} if stype == "file" else {"type": stype}
    for key in ("guestAgent", "rng"):
        if draw(st.booleans()):
            doc[key] = draw(st.booleans())
    if draw(st.booleans()):
        doc["hotplugSlots"] = draw(st.integers(0, 32))
    if draw(st.booleans()):
        doc["lifecycle"] = {"onReboot": draw(st.sampled_from(m.LIFECYCLE_ACTIONS))}
    if draw(st.booleans()):
        doc["qemuArgs"] = draw(st.lists(text, max_size=4))
    return doc


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(spec_documents())
def test_parse_to_dict_parse_is_identity(doc):
    spec = from_dict(doc)
    assert from_dict(to_dict(spec)) == spec
    assert to_dict(from_dict(to_dict(spec))) == to_dict(spec)
    # sizes in any unit (or bare bytes) parse to the same number of bytes
    mem = doc.get("memory", {})
    assert spec.memory.size == size_bytes(mem.get("size", 256 << 20))
    if "max" in mem:
        assert spec.memory.max == size_bytes(mem["max"])


@SETTINGS
@given(spec_documents())
def test_dumps_loads_is_identity(doc):
    spec = from_dict(doc)
    text_ = dumps(spec)
    assert loads(text_) == spec
    assert dumps(loads(text_)) == text_

