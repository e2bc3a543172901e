_base_ = ['./instance-seg_dynamic.py', '../_base_/backends/onnxruntime.py']
