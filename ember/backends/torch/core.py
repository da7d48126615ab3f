"""Torch implementations: core ops."""

from __future__ import annotations

import torch

from . import torch_op

_DTYPES = {"f64": torch.float64, "f32": torch.float32, "f16": torch.float16,
           "bf16": torch.bfloat16, "i64": torch.int64, "i32": torch.int32, "i16": torch.int16,
           "i8": torch.int8, "u8": torch.uint8, "bool": torch.bool, "i4": torch.int8,
           "u4": torch.uint8, "u32": torch.uint32, "u16": torch.uint16, "u64": torch.uint64,
           "i2": torch.int8, "u2": torch.uint8, "f8e4m3fn": torch.float8_e4m3fn,
           "f8e4m3fnuz": torch.float8_e4m3fnuz, "f8e5m2": torch.float8_e5m2,
           "f8e5m2fnuz": torch.float8_e5m2fnuz, "f8e8m0": torch.float8_e8m0fnu}


def torch_dtype(dtype) -> torch.dtype:
    return _DTYPES[str(dtype)]


@torch_op("cast")
def _(x, dtype):
    return x.to(torch_dtype(dtype))
