#!/usr/bin/env bash
# Build, on a machine that has nvcc and the Debian -dev packages, the binaries
# the GPU stages of bench/gpu/run.sh need, plus every shared library they use
# that is not glibc, the NVIDIA driver or cuBLAS, into build-gpu-bundle/ (a few
# MB): pass it to the device with carry=["build-gpu-bundle"] when the device
# cannot build the project itself (no -dev packages, no network).
#
#   bash bench/gpu/bundle.sh            (JOBS=2, scratch build in /tmp/thaw-gpu-build)
#
#   build-gpu-bundle/bin/NAME       sh wrappers: LD_LIBRARY_PATH=../lib, exec ../libexec/NAME
#   build-gpu-bundle/libexec/NAME   thaw test_engine test_loader test_tokenizer
#   build-gpu-bundle/lib/           the bundled libraries (libcudart.so.13 included);
#                                   on the device `run.sh build` adds symlinks to the
#                                   device's libcublas.so.13 / libcublasLt.so.13
#   build-gpu-bundle/BUNDLE.txt     what was built with what, glibc needed, the libraries
#
# cuBLAS (libcublas ~50 MB + libcublasLt ~500 MB) is too big to carry: it must
# be on the device, with the same major version as the nvcc used here (13).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SCRATCH=${BUNDLE_BUILD:-/tmp/thaw-gpu-build}
DEST=$ROOT/build-gpu-bundle
JOBS=${JOBS:-2}
BINS="thaw test_engine test_loader test_tokenizer"
export PATH="$PATH:/usr/local/cuda/bin"

command -v nvcc >/dev/null || { echo "bundle: no nvcc" >&2; exit 1; }
cmake -S . -B "$SCRATCH" -DCMAKE_BUILD_TYPE=Release -DTHAW_WITH_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=90 > "$SCRATCH.configure.log" 2>&1 ||
    { tail -20 "$SCRATCH.configure.log"; exit 1; }
grep -q 'thaw: cuda=1' "$SCRATCH.configure.log" || { echo "bundle: configured without CUDA" >&2; exit 1; }
# shellcheck disable=SC2086
cmake --build "$SCRATCH" -j"$JOBS" --target $BINS

rm -rf "$DEST"
mkdir -p "$DEST/bin" "$DEST/libexec" "$DEST/lib"
# Left to the device: glibc (its loader must match), libstdc++ / libgcc_s
# (every machine with PyTorch has them; ours would raise the glibc needed to
# 2.36), the driver (libcuda), cuBLAS (too big). Everything else ldd resolves
# is copied.
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|libresolv\.so|libutil\.so|libstdc\+\+\.so|libgcc_s\.so|libcuda\.so|libcublas\.so|libcublasLt\.so)'
for b in $BINS; do
    cp "$SCRATCH/bin/$b" "$DEST/libexec/$b"
    strip --strip-unneeded "$DEST/libexec/$b" 2>/dev/null || true
    cat > "$DEST/bin/$b" <<EOF
#!/bin/sh
# build-gpu-bundle wrapper (bench/gpu/bundle.sh): the bundled libraries first.
d=\$(CDPATH= cd -- "\$(dirname -- "\$0")/.." && pwd)
LD_LIBRARY_PATH="\$d/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$d/libexec/$b" "\$@"
EOF
    chmod +x "$DEST/bin/$b"
    ldd "$SCRATCH/bin/$b" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' |
        while read -r name path; do
            if ! echo "$name" | grep -Eq "$skip" && [ ! -e "$DEST/lib/$name" ]; then
                cp -L "$path" "$DEST/lib/$name"
            fi
        done
done
strip --strip-unneeded "$DEST"/lib/* 2>/dev/null || true

glibc_need=$(for f in "$DEST"/libexec/* "$DEST"/lib/*; do objdump -T "$f" 2>/dev/null; done |
             { grep -o 'GLIBC_[0-9.]*' || true; } | sort -uV | tail -1)
glibcxx_need=$(for f in "$DEST"/libexec/* "$DEST"/lib/*; do objdump -T "$f" 2>/dev/null; done |
               { grep -o 'GLIBCXX_[0-9.]*' || true; } | sort -uV | tail -1)
{
    echo "built:      $(date -u +%FT%TZ) on $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "git:        $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "nvcc:       $(nvcc --version | tail -1)"
    echo "cuda_major: $(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')"
    echo "arch:       sm_90 (CMAKE_CUDA_ARCHITECTURES=90)"
    echo "glibc_need: $glibc_need (the device's glibc must be at least this)"
    echo "glibcxx_need: ${glibcxx_need:-none} (libstdc++ is the device's)"
    echo "needs from the device: libcuda.so.1 (driver supporting CUDA $(nvcc --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')), libcublas.so.13, libcublasLt.so.13"
    echo "libraries:"
    for f in "$DEST"/lib/*; do printf '  %-28s %9d\n' "${f##*/}" "$(stat -c %s "$f")"; done
} > "$DEST/BUNDLE.txt"
cat "$DEST/BUNDLE.txt"
du -sh "$DEST"
