_base_ = ['../detection/detection_static.py']
onnx_config = dict(output_names=['dets', 'labels', 'masks'])
codebase_config = dict(task='InstanceSegmentation', export_postprocess_mask=False)
