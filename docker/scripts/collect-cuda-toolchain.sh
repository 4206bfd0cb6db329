#!/usr/bin/env bash
# Copies the parts of a CUDA toolkit that JIT compilation needs (nvcc and its helpers,
# NVVM, headers, the static runtime) from SRC into DEST. When SRC has no nvcc (an offline
# build whose toolchain image is the plain base), DEST gets only a note saying so.
# Usage: collect-cuda-toolchain.sh SRC DEST
set -euo pipefail
src="$1"
dest="$2"
mkdir -p "$dest"
if [ ! -x "$src/bin/nvcc" ]; then
    printf 'nvcc absent: this image was built without a CUDA toolchain image (offline base).\n' \
        >"$dest/NVCC-ABSENT"
    echo "collect-cuda-toolchain: no nvcc under $src; the image will have no nvcc" >&2
    exit 0
fi
mkdir -p "$dest/bin" "$dest/lib64" "$dest/nvvm"
for tool in nvcc nvcc.profile ptxas fatbinary nvlink cudafe++ bin2c cuobjdump nvdisasm nvprune; do
    if [ -e "$src/bin/$tool" ]; then cp -a "$src/bin/$tool" "$dest/bin/"; fi
done
cp -a "$src/bin/crt" "$dest/bin/"
# NVVM (cicc, libnvvm, libdevice): whatever this toolkit's layout has, without the samples.
cp -a "$src/nvvm/." "$dest/nvvm/"
rm -rf "$dest/nvvm/libnvvm-samples"
# Headers: CUDA runtime, CCCL (CUB/Thrust/libcu++), and the math/fp8 headers kernels include.
cp -aL "$src/include" "$dest/include"
for lib in libcudart_static.a libcudadevrt.a stubs "$src"/lib64/libcudart.so*; do
    lib="${lib##*/}"
    if [ -e "$src/lib64/$lib" ]; then cp -a "$src/lib64/$lib" "$dest/lib64/"; fi
done
"$dest/bin/nvcc" --version | tail -n 2 >"$dest/NVCC-VERSION"
echo "collect-cuda-toolchain: copied nvcc $(tail -n 1 "$dest/NVCC-VERSION")" >&2
