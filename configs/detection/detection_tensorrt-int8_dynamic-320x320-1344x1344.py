_base_ = ['./detection_dynamic.py', '../_base_/backends/tensorrt-int8.py']
backend_config = dict(
    common_config=dict(max_workspace_size=1 << 30),
    model_inputs=[
        dict(
            input_shapes=dict(
                input=dict(
                    min_shape=[1, 3, 320, 320],
                    opt_shape=[1, 3, 800, 1344],
                    max_shape=[1, 3, 1344, 1344])))
    ])
# If INT8 costs too much mAP, `trtdeploy sensitivity WORK_DIR` names the layers to keep out of it, e.g.
# calib_config = dict(exclude_nodes=['/head/classification_head/cls_logits/Conv'])
