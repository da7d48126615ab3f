"""Backends: lower ember graphs to executable forms (TVM, ONNX, torch)."""
