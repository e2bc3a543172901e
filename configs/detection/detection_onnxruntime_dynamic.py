_base_ = ['./detection_dynamic.py', '../_base_/backends/onnxruntime.py']
