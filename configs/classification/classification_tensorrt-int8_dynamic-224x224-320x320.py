_base_ = ['./classification_dynamic.py', '../_base_/backends/tensorrt-int8.py']
backend_config = dict(
    common_config=dict(max_workspace_size=1 << 30),
    model_inputs=[
        dict(
            input_shapes=dict(
                input=dict(
                    min_shape=[1, 3, 224, 224],
                    opt_shape=[4, 3, 224, 224],
                    max_shape=[16, 3, 320, 320])))
    ])
