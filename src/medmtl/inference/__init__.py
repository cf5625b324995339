"""Prediction on new images (PyTorch or ONNX Runtime), explanations and export.

``medmtl.inference.core`` and ``medmtl.inference.onnx_backend`` import neither torch,
Lightning nor Hydra, so ONNX deployment needs only numpy, OpenCV, Pillow and onnxruntime.
"""
