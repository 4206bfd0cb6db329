"""Compiles a small CUDA kernel to a cubin for one GPU architecture with NVRTC, with no GPU.

Proves that the image's CUDA user space (NVRTC from torch's CUDA wheels) can build code for
the image's target. Usage: python nvrtc_compile.py sm_120a [CUBIN_OUT]. Prints one JSON object;
with CUBIN_OUT, also writes the cubin there (tests/gpu/run_cubin.py runs it on a real GPU).
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import sys

KERNEL = b"""
extern "C" __global__ void axpy(float a, const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}
"""


def find_nvrtc() -> str:
    import nvidia.cuda_nvrtc  # the CUDA 12.x NVRTC wheel torch depends on

    roots = list(nvidia.cuda_nvrtc.__path__)
    for root in roots:
        found = sorted(glob.glob(os.path.join(root, "lib", "libnvrtc.so.*")))
        found = [f for f in found if "builtins" not in f]
        if found:
            return found[0]
    raise SystemExit(f"no libnvrtc.so under {roots}")


def check(lib: ctypes.CDLL, status: int, program: ctypes.c_void_p | None = None) -> None:
    if status != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        message = lib.nvrtcGetErrorString(status).decode()
        log = ""
        if program is not None:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
            buffer = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(program, buffer)
            log = buffer.value.decode(errors="replace")
        raise SystemExit(json.dumps({"ok": False, "error": message, "log": log}))


def main() -> int:
    arch = sys.argv[1]
    path = find_nvrtc()
    lib = ctypes.CDLL(path)
    major, minor = ctypes.c_int(), ctypes.c_int()
    check(lib, lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)))
    program = ctypes.c_void_p()
    check(lib, lib.nvrtcCreateProgram(ctypes.byref(program), KERNEL, b"axpy.cu", 0, None, None))
    options = (ctypes.c_char_p * 1)(f"--gpu-architecture={arch}".encode())
    check(lib, lib.nvrtcCompileProgram(program, 1, options), program)
    size = ctypes.c_size_t()
    check(lib, lib.nvrtcGetCUBINSize(program, ctypes.byref(size)))
    cubin = ctypes.create_string_buffer(size.value)
    check(lib, lib.nvrtcGetCUBIN(program, cubin))
    is_elf = cubin.raw[:4] == b"\x7fELF"
    if len(sys.argv) > 2:
        with open(sys.argv[2], "wb") as out:
            out.write(cubin.raw[: size.value])
    result = {
        "ok": is_elf and size.value > 0,
        "nvrtc": f"{major.value}.{minor.value}",
        "library": path,
        "arch": arch,
        "cubin_bytes": size.value,
        "elf": is_elf,
    }
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
