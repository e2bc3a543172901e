_base_ = ['../detection/detection_onnxruntime_dynamic.py']
onnx_config = dict(
    output_names=['dets', 'labels', 'keypoints'],
    dynamic_axes={
        'input': {0: 'batch', 2: 'height', 3: 'width'},
        'dets': {0: 'batch'},
        'labels': {0: 'batch'},
        'keypoints': {0: 'batch'},
    })
codebase_config = dict(task='KeypointDetection')  # served with each detection's keypoints
