"""The precision policy: which of fp32, bf16 and int8 encoding and training run on this hardware."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

from textcl import int8
from textcl.errors import ConfigError

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU has AMX bf16 tiles, the units that make bf16 encoding faster than fp32.

    AVX-512-BF16 alone is not enough: on a CPU with it but without AMX a bf16 4096x384 @ 384x1536 matmul
    ran at 84 GFLOP/s against 149 for fp32, so "auto" stays fp32 there.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if "amx_bf16" in flags:
        return True
    return "AMX" in str(torch.backends.cpu.get_cpu_capability())


def resolve_precision(precision: str, device: str | torch.device | None) -> str:
    """Map auto|fp32|bf16 to the precision encoding will use on `device` ("fp32" or "bf16")."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    kind = torch.device(device).type if device is not None else "cpu"
    if precision == "fp32":
        return "fp32"
    if kind == "cuda":
        supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    elif kind == "cpu":
        supported = cpu_has_bf16()
    else:
        supported = False
    if precision == "bf16":
        if not supported:
            log.warning("bf16 requested on %s without AMX or CUDA bf16 units: it runs, possibly slower than fp32", kind)
        return "bf16"
    return "bf16" if supported else "fp32"


def encoder_precision(precision: str, device: str | torch.device | None, allow_int8: bool = False) -> str:
    """Map auto|fp32|bf16|int8 to what an Encoder runs; auto picks int8 only when `allow_int8` (CPU only).

    The int8 quality guard can still turn an auto choice back to fp32/bf16 on the first encode.
    """
    if precision not in ("auto", "fp32", "bf16", "int8"):
        raise ConfigError(f"precision must be auto, fp32, bf16 or int8, got {precision!r}")
    kind = torch.device(device).type if device is not None else "cpu"
    if precision == "int8":
        if kind != "cpu":
            raise ConfigError(f"precision int8 runs on the CPU (OpenVINO) but the model is on {kind}: "
                              "load it with device='cpu', or use bf16 on the GPU")
        int8.require()
        return "int8"
    if precision == "auto" and allow_int8 and kind == "cpu":
        if int8.available():
            return "int8"
        log.info("precision auto: int8 is allowed but not installed (pip install 'textcl[int8]'); not using it")
    return resolve_precision(precision, device)


def scoring_precision(precision: str) -> str:
    """The precision evaluation uses for a model section's `precision`: int8 becomes fp32, so that reported
    numbers reproduce (ask for int8 explicitly, e.g. `textcl eval --precision int8`, to score int8)."""
    if precision == "int8":
        log.info("evaluation encodes in fp32, not int8, so that its numbers reproduce (--precision int8 to override)")
        return "fp32"
    return precision
