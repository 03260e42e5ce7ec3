#!/usr/bin/env bash
# Install everything the tests and the quickstart need on a Debian 12 host, then
# install this checkout (editable, with the `test` extra).
#
# Run as root (CI runs it as root; developers run `sudo tests/run.sh`). Safe to
# re-run: apt is skipped when every package is already installed, and
# /etc/fuse.conf is only appended to when `user_allow_other` is missing.
#
# Environment:
#   PYTHON  interpreter to install into (default: python3 on PATH). Note that
#           sudo's secure_path may hide a pyenv python3; pass PYTHON=... then.
#
# Why each package is here:
#   fuse3                  fusermount3 and /etc/fuse.conf: the mount itself
#   libfuse3-dev, pkg-config, gcc
#                          pyfuse3 ships only an sdist on PyPI; its build asks
#                          pkg-config for fuse3 and compiles a C extension
#   python3-dev            only when the chosen interpreter has no Python.h
#                          (pyenv builds ship their own headers)
#   python3-pip            only when the chosen interpreter has no pip
#   qemu-utils, fio        qemu-img and I/O load for the image tests
#   iproute2               ip netns / veth for multi-host system tests
#   procps, util-linux, e2fsprogs
#                          pgrep/kill, losetup/mount and mkfs.ext4 for small
#                          loop-mounted filesystems (chunkserver disk-full tests)
#   kmod                   modprobe fuse when /dev/fuse is missing
#   systemd                systemd-analyze verify for the units in deploy/systemd
#   openssl                `vmstore tls` makes the CA and host certificates with it
#   qemu-system-x86, libvirt-daemon-system, libvirt-clients
#                          real guests and live migrations (one libvirtd per
#                          simulated host; the tests start them, not systemd)
#   libvirt-dev            libvirt-python (the coordinator) builds against it
#   etcd-server            metadata HA: the masters' election and journal (the
#                          tests and `vmstore local up --masters 3` start their
#                          own etcd processes on free ports)
#   busybox-static, libc6-dev
#                          the tiny test guest: busybox in its initramfs and a
#                          static disk-writer program compiled by the tests
#                          (its kernel comes from `apt-get download`)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

step() { printf '==> install-deps: %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

# Run a noisy command with its output kept in a log, shown only if it fails.
quietly() {
    local log rc
    log="$(mktemp)"
    if "$@" >"$log" 2>&1; then
        rm -f "$log"
        return 0
    else
        rc=$?
        cat "$log" >&2
        rm -f "$log"
        printf 'install-deps: command failed (exit %d): %s\n' "$rc" "$*" >&2
        return "$rc"
    fi
}

command -v "$PYTHON" >/dev/null 2>&1 || die "no interpreter '$PYTHON' on PATH (set PYTHON=...)"

packages=(fuse3 libfuse3-dev pkg-config gcc qemu-utils fio iproute2 procps util-linux e2fsprogs kmod systemd openssl
          qemu-system-x86 libvirt-daemon-system libvirt-clients libvirt-dev busybox-static libc6-dev
          etcd-server)
if ! "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    packages+=(python3-dev)
fi
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    packages+=(python3-pip)
fi

missing=()
for pkg in "${packages[@]}"; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
    if [[ "$status" != installed ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    step "apt: all ${#packages[@]} packages already installed, skipping apt-get"
else
    [[ $EUID -eq 0 ]] || die "must run as root to install: ${missing[*]}"
    step "apt-get update (missing: ${missing[*]})"
    quietly apt-get update
    step "apt-get install ${missing[*]}"
    quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

# allow_other is how libvirt-qemu and other users reach the mount; as a
# non-root mounter, fusermount3 refuses it unless fuse.conf says so.
if grep -Eq '^[[:space:]]*user_allow_other[[:space:]]*$' /etc/fuse.conf 2>/dev/null; then
    step "/etc/fuse.conf: user_allow_other already set"
else
    [[ $EUID -eq 0 ]] || die "must run as root to edit /etc/fuse.conf"
    # Keep the file ending in a newline before appending our line.
    if [[ -s /etc/fuse.conf && -n "$(tail -c1 /etc/fuse.conf)" ]]; then
        echo >>/etc/fuse.conf
    fi
    echo user_allow_other >>/etc/fuse.conf
    step "/etc/fuse.conf: appended user_allow_other"
fi

if [[ -e /dev/fuse ]]; then
    step "/dev/fuse present"
elif modprobe fuse >/dev/null 2>&1 && [[ -e /dev/fuse ]]; then
    step "/dev/fuse: loaded the fuse module"
else
    # Not fatal: unit and simulation tests run without it; mount tests skip.
    step "/dev/fuse missing and modprobe fuse failed: FUSE mount tests will not run"
fi

step "pip install -e $REPO[test] with $("$PYTHON" -c 'import sys; print(sys.executable)')"
quietly "$PYTHON" -m pip install --root-user-action=ignore --disable-pip-version-check \
    -q -e "$REPO[test]"

# mount(8) runs /usr/sbin/mount.fuse.vmstore for `mount -t fuse.vmstore` and
# fstab lines; it must find this installation's vmstore without a PATH.
vmstore_bin="$("$PYTHON" -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "vmstore"))')"
if [[ $EUID -eq 0 ]]; then
    sed "s|^VMSTORE=\${VMSTORE:-vmstore}|VMSTORE=\${VMSTORE:-$vmstore_bin}|" \
        "$REPO/deploy/mount.fuse.vmstore" >/usr/sbin/mount.fuse.vmstore
    chmod 0755 /usr/sbin/mount.fuse.vmstore
    step "installed /usr/sbin/mount.fuse.vmstore (runs $vmstore_bin)"
fi

step "done"
