backend_config = dict(
    type='tensorrt',
    common_config=dict(fp16_mode=True, int8_mode=True, max_workspace_size=0))

calib_config = dict(create_calib=True, calib_file='calib_data.h5')
