"""kt-kernel 0.7.2's AMX-INT4 quantizer and writer, driven through its extension's API.

This is what `AMXMoEWrapper.load_weights_from_tensors` does (MOEConfig with `save`, the layer's
bf16 experts, `AMXInt4_MOE`, `load_weights_task`), minus the wrapper: the wrapper allocates
pinned memory, which needs a CUDA device, and the conversion must also run without one. The
quantization itself (`BufferBInt4Impl::from_mat`) is AVX-512 code, so every AVX-512 variant of
kt-kernel builds `AMXInt4_MOE` and can write these files; only serving them needs AMX.

kt-kernel prints progress with printf on file descriptor 1; that goes to a log file here (and
its last lines into the error when a layer fails), so the progress display stays readable.
"""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kthybrid_serve.ktkernel import KtKernel

AVX512_FLAGS = ("avx512f", "avx512bw")


@contextmanager
def native_stdout_to(log: Path) -> Iterator[None]:
    """Send what C/C++ writes to fd 1 into `log` (appended) for the duration."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    with log.open("ab") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)


def log_tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class Quantizer:
    """One kt-kernel worker pool, reused for every layer: `pools` subpools of threads."""

    def __init__(self, kt: KtKernel, threads: int, numa_nodes: list[int], log: Path) -> None:
        self.kt = kt
        self.log = log
        pools = len(numa_nodes)
        config = kt.ext.WorkerPoolConfig()
        config.subpool_count = pools
        config.subpool_numa_map = list(numa_nodes)
        config.subpool_thread_count = [
            threads // pools + (1 if i < threads % pools else 0) for i in range(pools)
        ]
        with native_stdout_to(log):
            self.cpu_infer = kt.ext.CPUInfer(config)

    def quantize_layer(
        self,
        *,
        root: Path,
        layer: int,
        experts_per_token: int,
        gate: Any,
        up: Any,
        down: Any,
    ) -> None:
        """Quantize one layer's bf16 experts ([E, I, H], [E, I, H], [E, H, I]) and write them
        to `root/_layer_{layer}/_numa_*/`."""
        import torch

        experts, intermediate, hidden = gate.shape
        mask = torch.zeros(experts, dtype=torch.bool)  # every expert on the CPU side
        identity = torch.arange(experts, dtype=torch.int64)
        config = self.kt.ext.moe.MOEConfig(
            experts, experts_per_token, hidden, intermediate, mask.data_ptr()
        )
        config.layer_idx = layer
        config.pool = self.cpu_infer.backend_
        config.max_len = 32  # one M_STEP: buffers for forward, unused here
        config.save = True
        config.load = False
        config.gate_proj = gate.data_ptr()
        config.up_proj = up.data_ptr()
        config.down_proj = down.data_ptr()
        config.path = str(root)
        with native_stdout_to(self.log):
            moe = self.kt.moe_class(config)
            self.cpu_infer.submit(moe.load_weights_task(identity.data_ptr()))
            self.cpu_infer.sync()
            del moe


def scratch_log(directory: Path) -> Path:
    handle, name = tempfile.mkstemp(prefix=".kthybrid-convert-", suffix=".log", dir=directory)
    os.close(handle)
    return Path(name)
