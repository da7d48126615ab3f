#!/usr/bin/env bash
# Prepare an aarch64 Linux sysroot in which qemu-aarch64 runs ember's runtime on aarch64 artifacts:
#   Debian bookworm arm64 packages (python3.11, libc6, libstdc++6, libgomp1, ...) via apt-get download
#   (a private apt state dir: the host's dpkg architectures are not touched), unpacked with dpkg -x;
#   + the PyPI aarch64 wheels of apache-tvm / apache-tvm-ffi / numpy / ml-dtypes /
#   typing-extensions (+ cloudpickle, psutil for `python -m tvm.exec.rpc_server`) (same versions as the host venv),
#   unpacked into <sysroot>/opt/ember/site-packages.
# Then:  qemu-aarch64 -L <sysroot> <sysroot>/usr/bin/python3.11 ...  with
#        PYTHONPATH=<sysroot>/opt/ember/site-packages:<dir holding ember's runtime files>
#        TVM_USE_RUNTIME_LIB=1
#
# Usage: scripts/edge-sysroot.sh [SYSROOT]        (default .cache/edge-sysroot/aarch64, git-ignored)
# Env:   EMBER_PYTHON  python whose pip downloads the wheels and whose versions are matched
#                      (default .venv/bin/python)
# Idempotent: a finished sysroot (marker file .ready) is left as it is. Needs network access to
# Debian's package mirror and PyPI (the ones apt and pip are configured for), and qemu-user
# (scripts/install-cross.sh) only to run, not to prepare.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
sysroot=${1:-$here/.cache/edge-sysroot/aarch64}
python=${EMBER_PYTHON:-$here/.venv/bin/python}
[[ -x $python ]] || python=$(command -v python3)

if [[ -f $sysroot/.ready ]]; then
  echo "edge-sysroot: $sysroot is ready"; exit 0
fi

work=$sysroot.work
rm -rf "$work" "$sysroot"
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$work/wheels" "$sysroot"

# Debian arm64 packages: everything python3.11 + numpy + TVM's runtime dlopen at run time.
debs=(libc6 libgcc-s1 libstdc++6 libgomp1 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5
      python3.11-minimal libpython3.11-minimal libpython3.11-stdlib)
apt_opts=(-o APT::Architecture=arm64 -o APT::Architectures=arm64
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
          -o APT::Sandbox::User=root -qq)
echo "edge-sysroot: downloading Debian arm64 packages: ${debs[*]}"
apt-get "${apt_opts[@]}" update
(cd "$work/debs" && apt-get "${apt_opts[@]}" download "${debs[@]}")
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$sysroot"; done

# PyPI aarch64 wheels (+ TVM's pure-python and ml_dtypes dependencies), pinned to the versions the host compiles with (artifacts embed the TVM
# version and the runtime refuses another minor version).
pins=$("$python" - <<'EOF'
import importlib.metadata as m
pins = {"apache-tvm": "0.27.0.post1", "apache-tvm-ffi": "0.1.14.post1", "numpy": None,
        "ml-dtypes": None, "typing-extensions": None,
        "cloudpickle": None, "psutil": None}  # the last two: tvm.exec.rpc_server's workers
out = []
for name, default in pins.items():
    try:
        out.append(f"{name}=={m.version(name)}")
    except m.PackageNotFoundError:
        out.append(f"{name}=={default}" if default else name)
print(" ".join(out))
EOF
)
echo "edge-sysroot: downloading aarch64 wheels: $pins"
# shellcheck disable=SC2086
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
  --implementation cp --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
  --platform manylinux_2_17_aarch64 --abi cp311 --abi abi3 --abi none \
  -d "$work/wheels" $pins
site=$sysroot/opt/ember/site-packages
mkdir -p "$site"
"$python" - "$site" "$work"/wheels/*.whl <<'EOF'
import sys, zipfile
site, wheels = sys.argv[1], sys.argv[2:]
for w in wheels:
    with zipfile.ZipFile(w) as z:
        for info in z.infolist():
            z.extract(info, site)
            mode = info.external_attr >> 16
            if mode:
                import os
                os.chmod(os.path.join(site, info.filename), mode & 0o7777)
EOF

# The TVM wheel's compiler (libtvm.so) is not needed on a device: TVM_USE_RUNTIME_LIB=1 loads
# libtvm_runtime.so only. Drop it to keep the sysroot (and the measured footprint) honest.
rm -f "$site"/tvm/lib/libtvm_compiler.so

rm -rf "$work"
touch "$sysroot/.ready"
echo "edge-sysroot: ready at $sysroot ($(du -sh "$sysroot" | cut -f1))"
