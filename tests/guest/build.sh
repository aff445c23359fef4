#!/usr/bin/env bash
# Build the kvmd test guest: a Debian cloud kernel plus a small busybox initramfs.
#
# Outputs (default build/guest/ under the repo root; override with $GUEST_DIR):
#   vmlinuz         Debian linux-image-cloud-amd64 kernel (newest installed)
#   initramfs.img   gzip'd newc cpio: static busybox, virtio/scsi/button/evdev modules,
#                   qemu-ga with its libraries, and /init (see below)
#   cmdline         the kernel command line to boot with:
#                     console=ttyS0 quiet panic=-1 rdinit=/init
#
# Boot it (TCG; nested /dev/kvm hangs Linux guests on our machines):
#   qemu-system-x86_64 -machine q35 -accel tcg -m 256 -nographic -no-reboot \
#     -kernel build/guest/vmlinuz -initrd build/guest/initramfs.img \
#     -append "$(cat build/guest/cmdline)" ...
#
# /init: mounts proc/sys/devtmpfs/tmpfs, loads the modules in modules.dep order, arms
# the ACPI power button (event -> poweroff -f), starts qemu-ga on the virtio-serial
# port named org.qemu.guest_agent.0 if present, runs udhcpc on eth0 in the background,
# prints "KVMD-GUEST-READY" on the serial console, then "KVMD-COUNTER <n>" every
# second in the background, and runs an interactive shell on the serial console.
#
# Idempotent: does nothing if the inputs (this script, kernel, modules, busybox,
# qemu-ga and its libraries) have not changed since the last build.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
OUT="${GUEST_DIR:-$ROOT/build/guest}"
CMDLINE="console=ttyS0 quiet panic=-1 rdinit=/init"

# Modules wanted in the guest; their dependencies come from modules.dep.
WANT_MODULES=(
    virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
    virtio_blk virtio_net virtio_console virtio_scsi scsi_mod sd_mod
    virtio_balloon virtio_rng button evdev
)
# Debian packages that provide what we copy.
PACKAGES=(linux-image-cloud-amd64 busybox-static qemu-guest-agent cpio xz-utils zstd)

log() { echo "guest: $*" >&2; }
die() { echo "guest: error: $*" >&2; exit 1; }

# --- 1. make sure the Debian packages are installed -------------------------------
ensure_packages() {
    local missing=() p status
    for p in "${PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
        [[ "$status" == installed ]] || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing missing packages: ${missing[*]}"
        [[ $(id -u) -eq 0 ]] || die "need root to install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >&2
        apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    fi
}
ensure_packages

# --- 2. locate inputs -------------------------------------------------------------
KIMG="$(ls -1 /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n 1 || true)"
[[ -n "$KIMG" ]] || die "no /boot/vmlinuz-*-cloud-amd64 found"
KVER="${KIMG#/boot/vmlinuz-}"
MODDIR="/lib/modules/$KVER"
[[ -f "$MODDIR/modules.dep" ]] || die "$MODDIR/modules.dep missing"
BUSYBOX=/bin/busybox
QGA=/usr/sbin/qemu-ga
[[ -x "$BUSYBOX" ]] || die "$BUSYBOX missing"
[[ -x "$QGA" ]] || die "$QGA missing"

# Module closure in load order (dependencies first), as paths relative to $MODDIR.
# modules.dep lines are "path: dep1 dep2 ..." where the dependency list is already the
# transitive closure, ordered so that modprobe loads it back to front.
module_order() {
    awk -v want="${WANT_MODULES[*]}" '
        function modname(p,   n) {
            n = p; sub(/.*\//, "", n); sub(/\.ko(\.(xz|zst|gz))?$/, "", n)
            gsub(/-/, "_", n); return n
        }
        function add(p) { if (!(p in seen)) { seen[p] = 1; order[++cnt] = p } }
        {
            path = $1; sub(/:$/, "", path)
            name = modname(path)
            file[name] = path
            deps[name] = ""
            for (i = NF; i >= 2; i--) deps[name] = deps[name] " " $i
        }
        END {
            n = split(want, w, " ")
            for (i = 1; i <= n; i++) {
                m = w[i]; gsub(/-/, "_", m)
                if (!(m in file)) { missing = missing " " m; continue }
                k = split(deps[m], d, " ")
                for (j = 1; j <= k; j++) add(d[j])
                add(file[m])
            }
            for (i = 1; i <= cnt; i++) print order[i]
            if (missing != "") print "missing:" missing
        }' "$MODDIR/modules.dep"
}
MODULES="$(module_order)"
for m in $(sed -n 's/^missing://p' <<<"$MODULES"); do
    # Not in modules.dep: either built into the kernel (fine) or absent (an error).
    grep -qE "/${m//_/[-_]}\.ko\$" "$MODDIR/modules.builtin" \
        || die "module $m not found in $MODDIR"
done
MODULES="$(grep -v '^missing:' <<<"$MODULES" || true)"

# Shared libraries of qemu-ga (absolute paths as ldd reports them, plus the loader).
QGA_LIBS="$(ldd "$QGA" | awk '
    $2 == "=>" && $3 ~ /^\// { print $3; next }
    $1 ~ /^\// { print $1 }' | sort -u)"
[[ -n "$QGA_LIBS" ]] || die "ldd found no libraries for $QGA"

# --- 3. up-to-date check ----------------------------------------------------------
INPUTS=("$KIMG" "$BUSYBOX" "$QGA" "$MODDIR/modules.dep")
while read -r m; do INPUTS+=("$MODDIR/$m"); done <<<"$MODULES"
while read -r l; do INPUTS+=("$l"); done <<<"$QGA_LIBS"
STAMP="$({
    sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
    echo "$KVER $CMDLINE"
    stat -L -c '%n %s %Y' "${INPUTS[@]}"
} | sha256sum | cut -d' ' -f1)"
if [[ -f "$OUT/vmlinuz" && -f "$OUT/initramfs.img" && -f "$OUT/cmdline" \
      && "$(cat "$OUT/.stamp" 2>/dev/null || true)" == "$STAMP" ]]; then
    log "up to date ($OUT)"
    exit 0
fi

# --- 4. assemble the root ---------------------------------------------------------
mkdir -p "$OUT"
STAGE="$(mktemp -d "$OUT/.stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
R="$STAGE/root"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,var,mnt}
mkdir -p "$R"/usr/share/udhcpc
ln -s ../run "$R/var/run"
chmod 1777 "$R/tmp"

# busybox + applet links
cp "$BUSYBOX" "$R/bin/busybox"
while read -r applet; do
    [[ -e "$R/$applet" || -L "$R/$applet" ]] && continue
    mkdir -p "$R/$(dirname "$applet")"
    ln -s /bin/busybox "$R/$applet"
done < <("$BUSYBOX" --list-full)

# kernel modules (decompressed, so busybox insmod can load them)
: >"$R/etc/modules.order"
while read -r m; do
    [[ -n "$m" ]] || continue
    src="$MODDIR/$m"
    dst="$R/lib/modules/$KVER/${m%.xz}"
    dst="${dst%.zst}"
    dst="${dst%.gz}"
    mkdir -p "$(dirname "$dst")"
    case "$m" in
        *.ko.xz) xz -dc "$src" >"$dst" ;;
        *.ko.zst) zstd -q -dc "$src" >"$dst" ;;
        *.ko.gz) gzip -dc "$src" >"$dst" ;;
        *) cp "$src" "$dst" ;;
    esac
    echo "/lib/modules/$KVER/${dst#"$R/lib/modules/$KVER/"}" >>"$R/etc/modules.order"
done <<<"$MODULES"

# qemu-ga and its libraries (at the paths ldd reports)
cp "$QGA" "$R/usr/sbin/qemu-ga"
while read -r l; do
    mkdir -p "$R/$(dirname "$l")"
    cp -L "$l" "$R/$l"
done <<<"$QGA_LIBS"

cat >"$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
cat >"$R/etc/group" <<'EOF'
root:x:0:
EOF
cat >"$R/etc/os-release" <<'EOF'
NAME="kvmd test guest"
ID=kvmd-guest
VERSION_ID=1
PRETTY_NAME="kvmd test guest (busybox initramfs)"
EOF
echo kvmd-guest >"$R/etc/hostname"

# /sbin/shutdown for qemu-ga's guest-shutdown, which runs
# "shutdown -P|-H|-r -h +0 <message>" (busybox has no shutdown applet)
cat >"$R/sbin/shutdown" <<'EOF'
#!/bin/sh
case " $* " in
    *" -r "*) sync; reboot -f ;;
    *" -H "*) sync; halt -f ;;
    *) echo "kvmd-guest: shutdown $*, powering off" >/dev/console; sync; poweroff -f ;;
esac
EOF
chmod 755 "$R/sbin/shutdown"

# udhcpc hook: configure the interface from the lease
cat >"$R/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
case "$1" in
    deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        for r in $router; do ip route add default via "$r" dev "$interface"; break; done
        : >/etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
        ;;
esac
exit 0
EOF
chmod 755 "$R/usr/share/udhcpc/default.script"

cat >"$R/init" <<'EOF'
#!/bin/sh
# kvmd test guest init (generated by tests/guest/build.sh)
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
hostname kvmd-guest
exec </dev/console >/dev/console 2>&1
echo "kvmd-guest: init starting"

while read -r m; do
    insmod "$m" || echo "kvmd-guest: insmod $m failed"
done </etc/modules.order

# ACPI power button: the acpi "button" driver exposes it as an input device.
# evdev reads must be at least one struct input_event (24 bytes), hence bs=4096.
pwrbtn=""
i=0
while [ $i -lt 20 ]; do
    for n in /sys/class/input/event*; do
        [ -r "$n/device/name" ] || continue
        if [ "$(cat "$n/device/name")" = "Power Button" ]; then
            pwrbtn="/dev/input/${n##*/}"; break
        fi
    done
    [ -n "$pwrbtn" ] && [ -c "$pwrbtn" ] && break
    pwrbtn=""; i=$((i + 1)); sleep 0.05
done
if [ -n "$pwrbtn" ]; then
    (dd if="$pwrbtn" of=/dev/null bs=4096 count=1 2>/dev/null
     echo "kvmd-guest: power button pressed, powering off"
     sync; poweroff -f) &
    echo "kvmd-guest: power button on $pwrbtn"
else
    echo "kvmd-guest: no power button found"
fi

# Guest agent on the virtio-serial port named org.qemu.guest_agent.0 (no udev here).
if ls -d /sys/bus/virtio/drivers/virtio_console/virtio* >/dev/null 2>&1; then
    qgaport=""
    i=0
    while [ $i -lt 20 ]; do
        for p in /sys/class/virtio-ports/*; do
            [ -r "$p/name" ] || continue
            if [ "$(cat "$p/name")" = "org.qemu.guest_agent.0" ]; then
                qgaport="/dev/${p##*/}"; break
            fi
        done
        [ -n "$qgaport" ] && [ -c "$qgaport" ] && break
        qgaport=""; i=$((i + 1)); sleep 0.05
    done
    if [ -n "$qgaport" ]; then
        qemu-ga -m virtio-serial -p "$qgaport" -f /run/qemu-ga.pid -d \
            && echo "kvmd-guest: qemu-ga on $qgaport" \
            || echo "kvmd-guest: qemu-ga failed to start"
    fi
fi

ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
    udhcpc -i eth0 -t 5 -T 1 -A 5 -b -S -s /usr/share/udhcpc/default.script \
        >/dev/null 2>&1 </dev/null &
fi

echo "kvmd-guest: ready after $(cut -d" " -f1 /proc/uptime)s of kernel uptime"
echo "KVMD-GUEST-READY"

(n=0; while :; do n=$((n + 1)); echo "KVMD-COUNTER $n"; sleep 1; done) &

# Interactive shell on the serial console. Terminal echo is off so that a test that
# types a command reads back only the prompt and the command's output (with echo off,
# busybox sh also skips line editing and its cursor-position queries, ESC[6n).
# Type "stty echo" for a human-friendly console.
export PS1='kvmd-guest# '
stty -echo </dev/console
while :; do
    setsid cttyhack sh -l
    sleep 0.2
done
EOF
chmod 755 "$R/init"

# --- 5. pack ----------------------------------------------------------------------
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort \
    | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9n >"$STAGE/initramfs.img"
cp "$KIMG" "$STAGE/vmlinuz"
echo "$CMDLINE" >"$STAGE/cmdline"
mv -f "$STAGE/vmlinuz" "$OUT/vmlinuz"
mv -f "$STAGE/initramfs.img" "$OUT/initramfs.img"
mv -f "$STAGE/cmdline" "$OUT/cmdline"
echo "$STAMP" >"$OUT/.stamp"
log "built $OUT (kernel $KVER, initramfs $(du -h "$OUT/initramfs.img" | cut -f1), $(wc -l <"$R/etc/modules.order") modules)"
