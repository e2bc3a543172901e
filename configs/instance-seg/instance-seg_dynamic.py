_base_ = ['./instance-seg_static.py']
onnx_config = dict(
    dynamic_axes={
        'input': {0: 'batch', 2: 'height', 3: 'width'},
        'dets': {0: 'batch'},
        'labels': {0: 'batch'},
        'masks': {0: 'batch'},
    })
