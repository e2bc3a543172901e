# Calibration images for a classifier: a folder of images (sub-folders per class are fine).
# Without a pipeline, trtdeploy pre-processes them exactly as `trtdeploy run` does for the
# classification task (resize, centre crop to the model's input size, ImageNet mean/std).
data_root = 'calibration/images/'
data = dict(
    samples_per_gpu=8,
    workers_per_gpu=2,
    val=dict(type='ImageFolder', data_prefix=data_root))
