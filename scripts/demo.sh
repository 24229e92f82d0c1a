#!/usr/bin/env bash
# make demo: the main job on a throwaway root. Build casfs, start a local
# registry, push a small image built from files on this machine, mount casfs,
# pull the image, look at it through the mount, run it with runc, clean up.
set -euo pipefail
cd "$(dirname "$0")/.."
CASFS=${CASFS:-$PWD/bin/casfs}
work=$(mktemp -d /tmp/casfs-demo.XXXXXX)
export CASFS_ROOT=$work/store
# casfs starts a store in an empty directory, never in a missing one (a
# mistyped root must not become a new store).
mkdir -p "$CASFS_ROOT"
mnt=$work/mnt
reg_pid=
cleanup() {
  set +e
  mountpoint -q "$work/overlay" 2>/dev/null && umount "$work/overlay"
  mountpoint -q "$mnt" && umount "$mnt"
  mountpoint -q "$work/lazy-mnt" && umount "$work/lazy-mnt"
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null && wait "$reg_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

step "1. a local registry on 127.0.0.1"
# A free loopback port: one nothing answers on.
for port in $(shuf -i 20000-60000 -n 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
done
mkdir -p "$work/registry"
cat > "$work/registry/config.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry/data}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
echo "registry at 127.0.0.1:$port"

step "2. an image built from files on this machine (busybox, /etc/os-release), pushed with skopeo"
layout=$work/layout bundle=$work/bundle
umoci init --layout "$layout"
umoci new --image "$layout:demo"
umoci unpack --image "$layout:demo" "$bundle" >/dev/null
mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/etc" "$bundle/rootfs/proc" "$bundle/rootfs/dev" "$bundle/rootfs/tmp"
cp "$(command -v busybox)" "$bundle/rootfs/bin/busybox"
for app in sh ls cat uname echo; do ln -s busybox "$bundle/rootfs/bin/$app"; done
cp /etc/os-release "$bundle/rootfs/etc/os-release"
# Data the container never reads: a lazy start (step 8) leaves it in the registry.
mkdir -p "$bundle/rootfs/usr/share" && cp -r /usr/share/i18n "$bundle/rootfs/usr/share/i18n"
echo "hello from an image served by casfs" > "$bundle/rootfs/etc/motd"
umoci repack --image "$layout:demo" "$bundle"
umoci config --image "$layout:demo" --config.cmd /bin/sh --config.env PATH=/bin
rm -rf "$bundle"
ref=127.0.0.1:$port/demo/busybox:1
show skopeo copy --quiet --dest-tls-verify=false "oci:$layout:demo" "docker://$ref"

step "3. mount casfs (the daemon owns the store and serves its API on \$CASFS_ROOT/casfs.sock)"
mkdir -p "$mnt"
show "$CASFS" mount -d "$mnt"
show grep " $mnt " /proc/mounts

step "4. pull the image (through the daemon: it shows up in the mount at once)"
show "$CASFS" image pull --plain-http "$ref"
show "$CASFS" image ls

step "5. the image through the mount"
dir=$mnt/images/127.0.0.1:$port/demo/busybox/1
show ls -l "$dir" "$dir/layers"
show sh -c "cat '$dir/config.json' | head -c 400; echo"
rootfs=$(readlink -f "$dir/rootfs")
show ls -l "$rootfs" "$rootfs/bin"
show cat "$rootfs/etc/motd"
show sh -c "ls $mnt/blobs/sha256 | head"

step "6. run it with runc, its root the read-only rootfs in the mount"
cbundle=$work/container
mkdir -p "$cbundle"
cat > "$cbundle/config.json" <<JSON
{
  "ociVersion": "1.0.2",
  "process": {"user": {"uid": 0, "gid": 0}, "cwd": "/", "env": ["PATH=/bin"],
              "args": ["/bin/sh", "-c", "cat /etc/motd; uname -s; grep PRETTY /etc/os-release; ls /"]},
  "root": {"path": "$rootfs", "readonly": true},
  "hostname": "casfs-demo",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
  ],
  "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}]}
}
JSON
show runc --root "$work/runc" run --bundle "$cbundle" "casfs-demo-$$"

step "7. the same image as a kernel overlay of its snapshots (casfs image mount), run with runc"
ovl=$work/overlay
mkdir -p "$ovl"
show "$CASFS" image mount "$ref" "$ovl"
sed -i "s|\"path\": \"$rootfs\"|\"path\": \"$ovl\"|" "$cbundle/config.json"
show runc --root "$work/runc" run --bundle "$cbundle" "casfs-demo-ovl-$$"
show "$CASFS" image unmount "$ovl"
show "$CASFS" snapshot ls

step "8. lazy start: convert to eStargz, push, pull lazily into a second store, run before the layers are here"
lref=127.0.0.1:$port/demo/busybox:estargz
show "$CASFS" image convert --estargz "$ref" "$lref"
show "$CASFS" image push --plain-http "$lref"
lroot=$work/lazy-store lmnt=$work/lazy-mnt
mkdir -p "$lmnt"
show "$CASFS" --root "$lroot" image pull --plain-http --lazy --lazy-complete=false "$lref"
show "$CASFS" --root "$lroot" mount -d "$lmnt"
lrootfs=$(readlink -f "$lmnt/images/127.0.0.1:$port/demo/busybox/estargz/rootfs")
sed -i "s|\"path\": \"[^\"]*\"|\"path\": \"$lrootfs\"|" "$cbundle/config.json"
show runc --root "$work/runc" run --bundle "$cbundle" "casfs-demo-lazy-$$"
layers=$(ls "$lroot/lazy/sha256")
echo "layer blobs stored: $(for l in $layers; do [ -e "$lroot/blobs/sha256/$l" ] && echo "$l"; done | wc -l) of $(echo "$layers" | wc -w)"
for l in $layers; do
  got=$(du -B1 "$lroot/lazy/sha256/$l/data" | cut -f1) all=$(stat -c %s "$lroot/lazy/sha256/$l/data")
  echo "layer ${l:0:12}: $got of $all bytes fetched ($((100 * got / all))%), kept in $lroot/lazy/sha256/${l:0:12}.../data"
done
show umount "$lmnt"

step "9. unmount (the daemon exits and releases the store)"
show umount "$mnt"
for _ in $(seq 100); do [ -S "$CASFS_ROOT/casfs.sock" ] && pgrep -f "notify-fd 3.*$mnt" >/dev/null || break; sleep 0.1; done
show "$CASFS" content ls
