_base_ = ['../_base_/onnx_config.py']
onnx_config = dict(output_names=['output'], input_shape=None)
codebase_config = dict(type='torchvision', task='Segmentation', with_argmax=True)
