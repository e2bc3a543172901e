_base_ = ['./instance-seg_static.py', '../_base_/backends/onnxruntime.py']
onnx_config = dict(input_shape=[1344, 800])
