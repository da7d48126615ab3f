"""Torch implementations: core ops."""

from __future__ import annotations

import torch

from . import torch_op

_DTYPES = {"f64": torch.float64, "f32": torch.float32, "f16": torch.float16,
           "bf16": torch.bfloat16, "i64": torch.int64, "i32": torch.int32, "i16": torch.int16,
           "i8": torch.int8, "u8": torch.uint8, "bool": torch.bool, "i4": torch.int8,
           "u4": torch.uint8, "u32": torch.uint32}


def torch_dtype(dtype) -> torch.dtype:
    return _DTYPES[str(dtype)]


@torch_op("cast")
def _(x, dtype):
    return x.to(torch_dtype(dtype))
