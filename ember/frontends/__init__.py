"""Frontends: import a model from another framework into an `ember.ir.Graph`.

`frontends.torch.trace` (torch.export) and `frontends.onnx.load`. Each frontend is a table from
the external op set to ember op kinds plus a few converter functions for the irregular ops;
importing this package pulls in neither torch nor onnx.
"""

from __future__ import annotations
