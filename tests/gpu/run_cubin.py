"""Loads cubins that the image's CUDA 12.8 NVRTC built and runs them on a real GPU (no PyTorch).

Run on a GPU host: python tests/gpu/run_cubin.py tests/gpu/cubins/axpy-sm_90a.cubin [...]
For each cubin: the driver either loads it and the kernel computes y = a*x + y exactly, or
refuses it (a cubin built for another architecture). Prints one JSON object per cubin.
Not collected by pytest: the machines that run the test suite have no GPU.
"""

from __future__ import annotations

import ctypes
import json
import sys
from array import array

N = 4096


def check(lib: ctypes.CDLL, status: int, what: str) -> None:
    if status != 0:
        name = ctypes.c_char_p()
        lib.cuGetErrorName(status, ctypes.byref(name))
        raise RuntimeError(f"{what}: {status} {name.value.decode() if name.value else ''}")


def run(lib: ctypes.CDLL, path: str) -> dict[str, object]:
    with open(path, "rb") as stream:
        image = stream.read()
    module = ctypes.c_void_p()
    status = lib.cuModuleLoadData(ctypes.byref(module), image)
    if status != 0:
        name = ctypes.c_char_p()
        lib.cuGetErrorName(status, ctypes.byref(name))
        return {
            "cubin": path,
            "loaded": False,
            "error": name.value.decode() if name.value else status,
        }
    function = ctypes.c_void_p()
    check(lib, lib.cuModuleGetFunction(ctypes.byref(function), module, b"axpy"), "get function")
    x = array("f", (float(i) for i in range(N)))
    y = array("f", (1.0 for _ in range(N)))
    nbytes = N * 4
    dx, dy = ctypes.c_uint64(), ctypes.c_uint64()
    check(lib, lib.cuMemAlloc_v2(ctypes.byref(dx), nbytes), "alloc x")
    check(lib, lib.cuMemAlloc_v2(ctypes.byref(dy), nbytes), "alloc y")
    x_buffer = (ctypes.c_float * N).from_buffer(x)
    y_buffer = (ctypes.c_float * N).from_buffer(y)
    check(lib, lib.cuMemcpyHtoD_v2(dx, x_buffer, nbytes), "copy x")
    check(lib, lib.cuMemcpyHtoD_v2(dy, y_buffer, nbytes), "copy y")
    a = ctypes.c_float(2.0)
    n = ctypes.c_int(N)
    args = (ctypes.c_void_p * 4)(
        ctypes.addressof(a), ctypes.addressof(dx), ctypes.addressof(dy), ctypes.addressof(n)
    )
    check(
        lib, lib.cuLaunchKernel(function, N // 256, 1, 1, 256, 1, 1, 0, None, args, None), "launch"
    )
    check(lib, lib.cuCtxSynchronize(), "synchronize")
    result = (ctypes.c_float * N)()
    check(lib, lib.cuMemcpyDtoH_v2(result, dy, nbytes), "copy back")
    wrong = sum(1 for i in range(N) if result[i] != 2.0 * i + 1.0)
    lib.cuMemFree_v2(dx)
    lib.cuMemFree_v2(dy)
    return {"cubin": path, "loaded": True, "elements": N, "wrong": wrong, "ok": wrong == 0}


def main() -> int:
    lib = ctypes.CDLL("libcuda.so.1")
    check(lib, lib.cuInit(0), "init")
    device = ctypes.c_int()
    check(lib, lib.cuDeviceGet(ctypes.byref(device), 0), "device")
    name = ctypes.create_string_buffer(128)
    lib.cuDeviceGetName(name, 128, device)
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # COMPUTE_CAPABILITY_MAJOR
    lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)  # COMPUTE_CAPABILITY_MINOR
    driver = ctypes.c_int()
    lib.cuDriverGetVersion(ctypes.byref(driver))
    context = ctypes.c_void_p()
    check(lib, lib.cuCtxCreate_v2(ctypes.byref(context), 0, device), "context")
    print(
        json.dumps(
            {
                "gpu": name.value.decode(),
                "cc": f"{major.value}.{minor.value}",
                "driver_api": driver.value,
            }
        )
    )
    for path in sys.argv[1:]:
        print(json.dumps(run(lib, path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
