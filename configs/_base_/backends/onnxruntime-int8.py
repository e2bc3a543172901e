# INT8 on ONNX Runtime: a Q/DQ graph (end2end_int8.onnx) that the CPU provider fuses into integer kernels.
backend_config = dict(type='onnxruntime', common_config=dict(int8_mode=True))

calib_config = dict(create_calib=True, calib_file='calib_data.h5')
